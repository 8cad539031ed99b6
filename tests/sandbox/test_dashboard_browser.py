"""The dashboard in a real browser: headless Chromium (the system's, driven by Playwright) pays an
order, advances the clock and sees the notification schedule, over a real loopback server."""

from __future__ import annotations

import httpx2
import pytest

from minipay.protocol import decode_xml
from minipay.sandbox import create_app, running
from tests.profiles import LENIENT
from tests.sandbox.conftest import HKD_APP, HKD_SUB, START, Receiver
from tests.sandbox.test_loopback import signed

pytestmark = pytest.mark.browser


def test_paying_an_order_from_the_dashboard_delivers_its_notification(page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    receiver = Receiver()
    with (
        running(receiver.app()) as merchant,
        running(create_app(LENIENT, seed=5, start=START)) as sandbox,
        httpx2.Client(base_url=sandbox.base_url) as http,
    ):
        openid = http.post("/sandbox/login", json={"appid": HKD_APP, "user": "dora"}).json()["openid"]
        order = {
            "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "Browser", "out_trade_no": "BROWSER1",
            "fee_type": "HKD", "total_fee": 1234, "spbill_create_ip": "127.0.0.1",
            "notify_url": f"{merchant.base_url}/notify", "trade_type": "JSAPI", "sub_openid": openid,
        }  # fmt: skip
        assert decode_xml(http.post("/pay/unifiedorder", content=signed(order)).content)["result_code"] == "SUCCESS"

        page.goto(f"{sandbox.base_url}/sandbox/")
        row = page.locator("tr", has_text="BROWSER1")
        expect(row).to_contain_text("NOTPAY")
        row.get_by_role("button", name="pay").click()

        expect(page.locator("tr", has_text="BROWSER1").first).to_contain_text("SUCCESS")
        state = http.get("/sandbox/state").json()
        [paid] = [o for o in state["orders"] if o["out_trade_no"] == "BROWSER1"]
        assert paid["trade_state"] == "SUCCESS"
        assert len(receiver.received) == 1  # the notification went to the merchant, once

        page.get_by_role("button", name="+1 h").click()
        expect(page.locator("body")).to_contain_text("delivered")
