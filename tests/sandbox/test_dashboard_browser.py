"""The dashboard in a real browser: headless Chromium (the system's, driven by Playwright) pays an
order, switches a fault on, advances the clock and sees each attempt of a notification, over a real
loopback server; and the page fits a desktop and a phone screen (screenshots in build/screenshots/)."""

from __future__ import annotations

import httpx2
import pytest

from minipay.protocol import decode_xml
from minipay.sandbox import create_app, running
from tests.browser import accessibility_problems, screenshot
from tests.profiles import LENIENT
from tests.sandbox.conftest import HKD_APP, HKD_SUB, START, Receiver
from tests.sandbox.test_loopback import signed

pytestmark = pytest.mark.browser


def order(
    out_trade_no: str, openid: str, notify_url: str = "http://127.0.0.1:9/n", total_fee: int = 1234
) -> dict[str, str | int]:
    return {
        "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "Browser", "out_trade_no": out_trade_no,
        "fee_type": "HKD", "total_fee": total_fee, "spbill_create_ip": "127.0.0.1", "notify_url": notify_url,
        "trade_type": "JSAPI", "sub_openid": openid,
    }  # fmt: skip


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
        made = http.post("/pay/unifiedorder", content=signed(order("BROWSER1", openid, f"{merchant.base_url}/notify")))
        assert decode_xml(made.content)["result_code"] == "SUCCESS"

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


def test_a_fault_switched_on_from_the_dashboard_fails_the_next_call(page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    with (
        running(create_app(LENIENT, seed=5, start=START)) as sandbox,
        httpx2.Client(base_url=sandbox.base_url) as http,
    ):
        page.goto(f"{sandbox.base_url}/sandbox/")
        expect(page.locator("#faults")).to_contain_text("No fault is switched on")
        page.get_by_label("Endpoint", exact=True).select_option("unifiedorder")
        page.get_by_label("Fault", exact=True).select_option("SYSTEMERROR")
        page.get_by_label("Times", exact=True).fill("1")
        page.get_by_label("Sub-merchant", exact=True).select_option(HKD_SUB)
        page.get_by_role("button", name="Switch fault on").click()

        expect(page.get_by_role("status")).to_contain_text("unifiedorder answers SYSTEMERROR")
        expect(page.get_by_role("table", name="Faults switched on")).to_contain_text("SYSTEMERROR")
        [fault] = http.get("/sandbox/faults").json()["faults"]
        assert (fault["endpoint"], fault["fault"], fault["times"], fault["sub_mch_id"]) == (
            "unifiedorder", "SYSTEMERROR", 1, HKD_SUB
        )  # fmt: skip
        openid = http.post("/sandbox/login", json={"appid": HKD_APP, "user": "erin"}).json()["openid"]
        answer = decode_xml(http.post("/pay/unifiedorder", content=signed(order("FAULTED", openid))).content)
        assert answer["err_code"] == "SYSTEMERROR"
        page.reload()
        expect(page.locator("#faults")).to_contain_text("No fault is switched on")  # used up

        # A fault can be taken back before it is used.
        page.get_by_label("Endpoint", exact=True).select_option("orderquery")
        page.get_by_role("button", name="Switch fault on").click()
        [fault] = http.get("/sandbox/faults").json()["faults"]
        page.get_by_role("button", name=f"Remove fault {fault['id']}").click()
        expect(page.get_by_role("status")).to_contain_text(f"Fault {fault['id']} removed")
        assert http.get("/sandbox/faults").json()["faults"] == []


def test_advancing_the_clock_from_the_page_shows_each_attempt_of_a_notification(page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    receiver = Receiver(replies=[(200, b"<xml><return_code>FAIL</return_code><return_msg>busy</return_msg></xml>")])
    with (
        running(receiver.app()) as merchant,
        running(create_app(LENIENT, seed=5, start=START)) as sandbox,
        httpx2.Client(base_url=sandbox.base_url) as http,
    ):
        openid = http.post("/sandbox/login", json={"appid": HKD_APP, "user": "dora"}).json()["openid"]
        made = http.post("/pay/unifiedorder", content=signed(order("RETRY1", openid, f"{merchant.base_url}/n")))
        assert decode_xml(made.content)["result_code"] == "SUCCESS"
        page.goto(f"{sandbox.base_url}/sandbox/")
        page.locator("tr", has_text="RETRY1").get_by_role("button", name="pay").click()

        note = page.get_by_role("region", name="Notification 1")
        attempts = page.get_by_role("table", name="Attempts of notification 1")
        expect(note).to_contain_text("pending")
        expect(attempts.locator("tbody tr")).to_have_count(1)
        expect(attempts.locator("tbody tr").first).to_contain_text("nack")
        expect(attempts).to_contain_text("busy")  # the merchant's reply, as it came

        # With the keyboard only: type the seconds into the clock's field and press Enter.
        seconds = page.get_by_label("Advance by (seconds)")
        seconds.focus()
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("15")
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_contain_text("Clock advanced by 15 s")
        expect(attempts.locator("tbody tr")).to_have_count(2)
        expect(attempts.locator("tbody tr").nth(1)).to_contain_text("ack")
        expect(note).to_contain_text("delivered")
        assert len(receiver.received) == 2
        assert "12:00:15" in page.locator("#clock").inner_text()  # START + 15 s, China time


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_dashboard_fits_the_screen(width: str, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect

    page = request.getfixturevalue("page" if width == "desktop" else "phone_page")
    receiver = Receiver(replies=[(500, b"down for maintenance")])
    with (
        running(receiver.app()) as merchant,
        running(create_app(LENIENT, seed=5, start=START)) as sandbox,
        httpx2.Client(base_url=sandbox.base_url) as http,
    ):
        openid = http.post("/sandbox/login", json={"appid": HKD_APP, "user": "dora"}).json()["openid"]
        for n, name in enumerate(["SHOT1", "SHOT2", "SHOT3"]):
            body = signed(order(name, openid, f"{merchant.base_url}/n", total_fee=1000 + n))
            made = http.post("/pay/unifiedorder", content=body)
            assert decode_xml(made.content)["result_code"] == "SUCCESS"
        paid = http.post("/sandbox/ui/pay", data={"out_trade_no": "SHOT3", "sub_mch_id": HKD_SUB})
        assert paid.status_code == 303  # SHOT3 paid: one notification, refused once
        http.post("/sandbox/faults", json={"endpoint": "downloadbill", "fault": "bill_missing_trade"})
        problems: list[str] = []  # a CSP refusal (an inline style, say) is a console error
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{sandbox.base_url}/sandbox/")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert problems == []
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the dashboard is {overflow}px wider than the {width} screen"
        screenshot(page, "sandbox-dashboard")
        assert accessibility_problems(page) == []


def test_a_dashboard_form_posted_from_another_site_is_refused(page: object) -> None:
    from playwright.sync_api import Page, expect
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    assert isinstance(page, Page)
    with (
        running(create_app(LENIENT, seed=5, start=START)) as sandbox,
        httpx2.Client(base_url=sandbox.base_url) as http,
    ):
        target = f"{sandbox.base_url}/sandbox/ui/fault"

        async def attack(request: Request) -> HTMLResponse:
            return HTMLResponse(
                f'<!doctype html><form id="f" method="post" action="{target}">'
                '<input name="endpoint" value="unifiedorder"><input name="fault" value="SYSTEMERROR">'
                '<input name="times" value="1000"></form><script>document.getElementById("f").submit()</script>'
            )

        with running(Starlette(routes=[Route("/", attack)])) as evil:
            with page.expect_navigation(url=target):
                page.goto(evil.base_url)
            expect(page.locator("body")).to_contain_text("cross-site request refused")
        assert http.get("/sandbox/faults").json()["faults"] == []
        # The same form from the dashboard itself goes through.
        page.goto(f"{sandbox.base_url}/sandbox/")
        page.get_by_role("button", name="Switch fault on").click()
        expect(page.get_by_role("status")).to_contain_text("Fault 1 on")
        assert len(http.get("/sandbox/faults").json()["faults"]) == 1
