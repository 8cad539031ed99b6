"""The shop backend behind ``/try`` and the sandbox's pay sheet, without a browser: the whole system
over ASGI (sandbox + service on SQLite), the pages driven with plain form posts.

Error paths a person can reach: an unknown product or payer, buying before logging in, a service
that refuses (a wrong key, a refund larger than what is left), a payment of another shop, a
cross-site form, a forged webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from fastapi import FastAPI

from minipay.simulator import Shop, ShopBackend, build_router
from tests.e2e.conftest import open_stack
from tests.e2e.stack import Stack

pytestmark = pytest.mark.anyio

HKD = "1900000110"
JPY = "1900000111"


def _shops(stack: Stack, **wrong_keys: str) -> list[Shop]:
    return [
        Shop(HKD, "wx1234567890abcdef", "HKD", "Harbour Tea House", wrong_keys.get(HKD, stack.keys[HKD])),
        Shop(JPY, "wx2234567890abcdef", "JPY", "Kyoto Sweets", wrong_keys.get(JPY, stack.keys[JPY])),
    ]


async def _shop_client(stack: Stack, backend: ShopBackend) -> httpx2.AsyncClient:
    app = FastAPI()
    app.include_router(build_router(backend))
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://shop")


def _backend(stack: Stack, *, webhook_url: str | None = None, **wrong_keys: str) -> ShopBackend:
    return ShopBackend(
        _shops(stack, **wrong_keys),
        service_url="http://127.0.0.1:8000",  # loopback: the pay sheet links back to it
        sandbox_url="http://sandbox",
        webhook_url=webhook_url,
        service_transport=httpx2.ASGITransport(stack.service_app),
        sandbox_transport=httpx2.ASGITransport(stack.sandbox_app),
    )


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Stack, ShopBackend, httpx2.AsyncClient]]:
    async with open_stack("sqlite", tmp_path) as stack:
        backend = _backend(stack)
        shop = await _shop_client(stack, backend)
        try:
            yield stack, backend, shop
        finally:
            await shop.aclose()
            await backend.aclose()


async def _logged_in(shop: httpx2.AsyncClient, sub_mch_id: str = HKD, user: str = "alice") -> None:
    chosen = await shop.post("/try/choose", data={"shop": sub_mch_id, "user": user})
    assert chosen.status_code == 303
    logged = await shop.post("/try/login")
    assert logged.status_code == 303, logged.text


def _sheet_url(html: str) -> str:
    found = re.search(r'<iframe class="sheet-frame" title="WeChat pay sheet" src="([^"]+)"', html)
    assert found, html
    return unescape(found.group(1))


async def test_log_in_buy_and_pay_on_the_sheet_with_the_exact_pay_params(
    world: tuple[Stack, ShopBackend, httpx2.AsyncClient],
) -> None:
    stack, _, shop = world
    await _logged_in(shop)
    page = await shop.get("/try")
    openid = (await stack.sandbox.post("/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "alice"})).json()
    assert openid["openid"] in page.text
    assert stack.keys[HKD] not in page.text  # the key stays in the backend

    bought = await shop.post("/try/buy", data={"product": "tarts"})
    assert bought.status_code == 303
    payment_id = bought.headers["location"].rsplit("/", 1)[1]
    pay_page = await shop.get(bought.headers["location"])
    url = urlsplit(_sheet_url(pay_page.text))
    assert (url.netloc, url.path) == ("sandbox", "/sandbox/cashier")
    query = dict(parse_qsl(url.query))
    payment = await stack.payment(payment_id)
    # Exactly wx.requestPayment's object (the service signs fresh ones on every read) + the appId.
    assert set(query) == {*payment["pay_params"], "appId", "return_to"}
    assert query["appId"] == "wx1234567890abcdef"
    assert query["return_to"] == f"http://127.0.0.1:8000/try/result/{payment_id}"

    # The sandbox's pay sheet, then the payer's "Pay".
    sheet = await stack.sandbox.get(url.path, params=query)
    assert "Harbour Tea House" in sheet.text
    assert "52.50 HKD" in sheet.text
    assert "48.30 CNY" in sheet.text
    form = {**query, "outcome": "success"}
    paid = await stack.sandbox.post("/sandbox/cashier", data=form)
    assert "requestPayment:ok" in paid.text
    assert f"http://127.0.0.1:8000/try/result/{payment_id}?errMsg=requestPayment%3Aok" in unescape(paid.text)

    result = await shop.get(f"/try/result/{payment_id}", params={"errMsg": "requestPayment:ok"})
    assert "Payment done" in result.text
    status = await shop.get(f"/try/result/{payment_id}/status")
    assert 'data-final="yes"' in status.text
    assert '<span class="badge succeeded" data-testid="backend-status">succeeded</span>' in status.text

    refunded = await shop.post(f"/try/refund/{payment_id}", data={"amount": "10.50"})
    assert refunded.status_code == 303, refunded.text
    [refund] = (await shop.get(f"/try/result/{payment_id}/status")).text.split("Refunds")[1:]
    assert "10.50 HKD" in refund

    wire = await shop.get("/try/wire", params={"out_trade_no": payment["out_trade_no"], "payment": payment_id})
    assert "/pay/unifiedorder" in wire.text
    assert "/secapi/pay/refund" in wire.text
    assert "&lt;transaction_id&gt;" in wire.text  # the signed notification, escaped
    # The login exchange is on the wire too, with the app secret and the session_key redacted.
    login = await shop.get("/try/wire")
    assert "GET /sns/jscode2session?appid=wx1234567890abcdef&amp;secret=&lt;redacted&gt;" in login.text
    assert "&#34;session_key&#34;: &#34;&lt;redacted&gt;&#34;" in login.text
    assert "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c" not in login.text


async def test_unknown_product_payer_and_buying_before_login_are_refused(
    world: tuple[Stack, ShopBackend, httpx2.AsyncClient],
) -> None:
    _, _, shop = world
    unknown_user = await shop.post("/try/choose", data={"shop": HKD, "user": "mallory"})
    assert unknown_user.status_code == 404
    assert "unknown test user" in unknown_user.text
    unknown_shop = await shop.post("/try/choose", data={"shop": "999", "user": "alice"})
    assert unknown_shop.status_code == 404
    no_session = await shop.post("/try/buy", data={"product": "tarts"})
    assert no_session.status_code == 409

    await shop.post("/try/choose", data={"shop": HKD, "user": "bob"})
    too_early = await shop.post("/try/buy", data={"product": "tarts"})
    assert too_early.status_code == 409
    assert "log in first" in too_early.text
    await shop.post("/try/login")
    wrong_product = await shop.post("/try/buy", data={"product": "matcha"})  # the JPY shop's product
    assert wrong_product.status_code == 404
    assert "no product" in wrong_product.text


async def test_the_service_refusing_is_shown_not_hidden(tmp_path: Path) -> None:
    async with open_stack("sqlite", tmp_path) as stack:
        backend = _backend(stack, **{HKD: "sk_" + "0" * 40})
        shop = await _shop_client(stack, backend)
        try:
            await shop.post("/try/choose", data={"shop": HKD, "user": "alice"})
            refused = await shop.post("/try/login")
            assert refused.status_code == 502
            assert "the payment service refused" in refused.text
            assert "sk_000" not in refused.text
        finally:
            await shop.aclose()
            await backend.aclose()


async def test_a_refund_beyond_what_is_left_and_a_foreign_payment_are_refused(
    world: tuple[Stack, ShopBackend, httpx2.AsyncClient],
) -> None:
    stack, _, shop = world
    await _logged_in(shop)
    bought = await shop.post("/try/buy", data={"product": "jasmine"})
    payment_id = bought.headers["location"].rsplit("/", 1)[1]
    await stack.pay(await stack.payment(payment_id))
    too_much = await shop.post(f"/try/refund/{payment_id}", data={"amount": "38.01"})
    assert too_much.status_code == 502
    assert "the payment service refused" in too_much.text
    not_a_number = await shop.post(f"/try/refund/{payment_id}", data={"amount": "lots"})
    assert not_a_number.status_code == 400
    # A payment this shop backend did not make (made with the key directly) is not its to show.
    other = await stack.create_payment(500)
    assert (await shop.get(f"/try/result/{other['id']}")).status_code == 404
    assert (await shop.get(f"/try/pay/{other['id']}")).status_code == 404


async def test_cross_site_posts_are_refused(world: tuple[Stack, ShopBackend, httpx2.AsyncClient]) -> None:
    _, _, shop = world
    for path in ("/try/choose", "/try/login", "/try/buy", "/try/clock"):
        refused = await shop.post(path, data={"seconds": "60"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert refused.status_code == 403, path
    other_origin = await shop.post("/try/clock", data={"seconds": "60"}, headers={"Origin": "http://evil.example"})
    assert other_origin.status_code == 403
    same_origin = await shop.post(
        "/try/clock", data={"seconds": "60", "back": "//evil.example"}, headers={"Origin": "http://shop"}
    )
    assert (same_origin.status_code, same_origin.headers["location"]) == (303, "/try")


async def test_webhooks_are_verified_and_shown_escaped(world: tuple[Stack, ShopBackend, httpx2.AsyncClient]) -> None:
    _, backend, shop = world
    backend.webhook_secrets[HKD] = "whsec_test"
    data = {"object": "payment", "id": "pay_1", "description": "<script>alert(1)</script>"}
    body = json.dumps({"id": "evt_1", "type": "payment.succeeded", "created": 1_780_000_000, "data": data}).encode()
    t = str(int(time.time()))
    good = "t=" + t + ",v1=" + hmac.new(b"whsec_test", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert (await shop.post("/try/webhook", content=body, headers={"Minipay-Signature": good})).status_code == 200
    forged = await shop.post("/try/webhook", content=body, headers={"Minipay-Signature": f"t={t},v1=00"})
    assert forged.status_code == 400
    assert [w["verdict"] for w in backend.webhooks] == ["accepted", "refused: Minipay-Signature does not match"]
    wire = (await shop.get("/try/wire", params={"payment": "pay_1"})).text
    assert "<script>" not in wire
    assert "&lt;script&gt;" in wire


async def test_the_pay_sheet_refuses_unknown_orders_and_foreign_return_links(
    world: tuple[Stack, ShopBackend, httpx2.AsyncClient],
) -> None:
    stack, _, _ = world
    payment = await stack.create_payment(1000, description="<b>bold</b> tea")
    params: dict[str, Any] = {**payment["pay_params"], "return_to": "https://evil.example/steal"}
    sheet = await stack.sandbox.get("/sandbox/cashier", params=params)
    assert "&lt;b&gt;bold&lt;/b&gt; tea" in sheet.text
    assert 'name="return_to" value=""' in sheet.text  # not a loopback URL: dropped
    unknown = await stack.sandbox.get("/sandbox/cashier", params={**params, "package": "prepay_id=nope"})
    assert "Cannot pay" in unknown.text

    short = await stack.sandbox.post(
        "/sandbox/cashier", data={**payment["pay_params"], "outcome": "insufficient_balance"}
    )
    assert "requestPayment:fail 余额不足" in short.text
    assert "evil.example" not in short.text
    state = (await stack.sandbox.get("/sandbox/state")).json()
    [order] = [o for o in state["orders"] if o["out_trade_no"] == payment["out_trade_no"]]
    assert order["trade_state"] == "NOTPAY"
    cross = await stack.sandbox.post(
        "/sandbox/cashier",
        data={**payment["pay_params"], "outcome": "success"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403

    wire = (await stack.sandbox.get("/sandbox/wire", params={"out_trade_no": payment["out_trade_no"]})).json()
    [request] = [e for e in wire["events"] if e["type"] == "request"]
    assert request["request"].startswith("<xml>")
    assert "<prepay_id>" in request["reply"]


@pytest.mark.parametrize(
    ("china_now", "lands"),
    [
        ("2026-12-06T01:00:00+08:00", "2026-12-07T10:05:00+08:00"),  # small hours: a flat +24 h is too early
        ("2026-12-06T15:30:00+08:00", "2026-12-07T10:05:00+08:00"),
        ("2026-12-06T23:59:59+08:00", "2026-12-07T10:05:00+08:00"),
        ("2026-12-06T16:00:00+00:00", "2026-12-08T10:05:00+08:00"),  # 00:00 on the 7th in China
    ],
)
def test_next_day_lands_after_the_worker_fetched_the_china_days_bill(china_now: str, lands: str) -> None:
    from datetime import datetime, timedelta

    from minipay.simulator._routes import seconds_to_next_bill

    now = datetime.fromisoformat(china_now)
    assert now + timedelta(seconds=seconds_to_next_bill(now)) == datetime.fromisoformat(lands)


async def test_the_next_day_step_moves_the_shared_clock_to_1005_china_time_next_day(
    world: tuple[Stack, ShopBackend, httpx2.AsyncClient],
) -> None:
    from datetime import datetime, time, timedelta

    _, backend, shop = world
    # At 01:00 China time, when "+24 h" used to land before the bill was published.
    before = datetime.fromisoformat(
        (await backend.sandbox().post("/sandbox/clock", json={"set": "2026-12-06T01:00:00+08:00"})).json()["now"]
    )
    moved = await shop.post(
        "/try/clock", data={"seconds": "next-bill", "back": "/try"}, headers={"Origin": "http://shop"}
    )
    assert moved.status_code == 303, moved.text
    china = datetime.fromisoformat((await backend.clock())["china_time"])
    assert china.date() == before.astimezone(china.tzinfo).date() + timedelta(days=1)
    assert time(10, 5) <= china.time() < time(10, 6)
    page = (await shop.get("/try")).text
    assert 'value="next-bill"' in page
    assert "Next day, 10:05" in page
