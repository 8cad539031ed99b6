"""The shop backend's webhook receiver: only Minipay's signed, fresh, first-seen events move an order."""

from __future__ import annotations

import ast
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx2
import pytest
from examples.shop_backend import ShopSettings, WebhookSignatureError, create_app, verify_signature

from minipay.server.webhooks import sign_webhook

SECRET = "whsec_test_0123456789"
BACKEND = Path(__file__).parents[2] / "examples" / "shop_backend"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[tuple[httpx2.AsyncClient, Path]]:
    db = tmp_path / "shop.db"
    settings = ShopSettings(
        minipay_url="http://minipay.invalid", api_key="sk_unused", db_path=str(db), webhook_secret=SECRET
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(
                "INSERT INTO orders (id, openid, product_id, description, amount, currency, payment_id, status,"
                " created_at) VALUES ('ord1', 'o-alice', 'latte', 'Latte', 1800, 'HKD', 'pay_1', 'pending', 0)"
            )
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://shop") as http:
            yield http, db


def event(event_id: str, status: str, amount: int = 1800) -> bytes:
    payment = {"id": "pay_1", "object": "payment", "status": status, "amount": amount, "currency": "HKD"}
    return json.dumps({"id": event_id, "type": "payment.succeeded", "created": 0, "data": payment}).encode()


async def post(http: httpx2.AsyncClient, body: bytes, signature: str) -> httpx2.Response:
    headers = {"Minipay-Signature": signature, "Content-Type": "application/json"}
    return await http.post("/webhooks/minipay", content=body, headers=headers)


def status(db: Path) -> Any:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT status FROM orders WHERE id = 'ord1'").fetchone()[0]


@pytest.mark.anyio
async def test_a_signed_event_marks_the_order_paid(shop: tuple[httpx2.AsyncClient, Path]) -> None:
    http, db = shop
    body = event("evt_1", "succeeded")
    answer = await post(http, body, sign_webhook(body, SECRET, int(time.time())))
    assert answer.status_code == 200, answer.text
    assert status(db) == "paid"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "signature",
    [
        "t={now},v1=" + "0" * 64,  # wrong MAC
        "sig_under_another_secret",
        "t={now}",  # no v1
        "garbage",
        "",
    ],
)
async def test_a_bad_signature_is_refused(shop: tuple[httpx2.AsyncClient, Path], signature: str) -> None:
    http, db = shop
    body = event("evt_1", "succeeded")
    now = int(time.time())
    header = sign_webhook(body, "whsec_someone_else", now) if signature == "sig_under_another_secret" else signature
    answer = await post(http, body, header.format(now=now))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_signature"
    assert status(db) == "pending"


@pytest.mark.anyio
async def test_a_tampered_body_is_refused(shop: tuple[httpx2.AsyncClient, Path]) -> None:
    http, db = shop
    signed = event("evt_1", "succeeded", amount=1)
    answer = await post(http, event("evt_1", "succeeded"), sign_webhook(signed, SECRET, int(time.time())))
    assert answer.status_code == 400
    assert status(db) == "pending"


@pytest.mark.anyio
async def test_an_old_timestamp_is_refused(shop: tuple[httpx2.AsyncClient, Path]) -> None:
    http, db = shop
    body = event("evt_1", "succeeded")
    for skew in (-301, 301):  # a captured request replayed later, or a clock far ahead
        answer = await post(http, body, sign_webhook(body, SECRET, int(time.time()) + skew))
        assert answer.status_code == 400
        assert "tolerance" in answer.json()["error"]["message"]
    assert status(db) == "pending"
    answer = await post(http, body, sign_webhook(body, SECRET, int(time.time()) - 200))
    assert answer.status_code == 200
    assert status(db) == "paid"


@pytest.mark.anyio
async def test_a_replayed_event_is_applied_once(shop: tuple[httpx2.AsyncClient, Path]) -> None:
    http, db = shop
    first = event("evt_1", "succeeded")
    assert (await post(http, first, sign_webhook(first, SECRET, int(time.time())))).json()["duplicate"] is False
    # The same event id again (at-least-once delivery, or a replay inside the window) does nothing,
    # whatever it carries: here a body saying the payment was refunded.
    again = event("evt_1", "refunded")
    answer = await post(http, again, sign_webhook(again, SECRET, int(time.time())))
    assert answer.status_code == 200
    assert answer.json()["duplicate"] is True
    assert status(db) == "paid"
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    # A new event moves the order on; an older one delivered late never moves it back.
    refunded = event("evt_2", "refunded")
    assert (await post(http, refunded, sign_webhook(refunded, SECRET, int(time.time())))).status_code == 200
    late = event("evt_0", "succeeded")
    assert (await post(http, late, sign_webhook(late, SECRET, int(time.time())))).status_code == 200
    assert status(db) == "refunded"


@pytest.mark.anyio
async def test_refund_events_mark_the_order_refunded(shop: tuple[httpx2.AsyncClient, Path]) -> None:
    http, db = shop
    paid = event("evt_1", "succeeded")
    assert (await post(http, paid, sign_webhook(paid, SECRET, int(time.time())))).status_code == 200
    for n, (status_of_payment, expected) in enumerate(
        [("partially_refunded", "partially_refunded"), ("refunded", "refunded")], start=2
    ):
        payment = {"id": "pay_1", "object": "payment", "status": status_of_payment, "amount": 1800, "currency": "HKD"}
        refund = {"id": f"re_{n}", "object": "refund", "status": "succeeded", "amount": 900, "payment": payment}
        body = json.dumps({"id": f"evt_{n}", "type": "refund.succeeded", "created": 0, "data": refund}).encode()
        assert (await post(http, body, sign_webhook(body, SECRET, int(time.time())))).status_code == 200
        assert status(db) == expected


@pytest.mark.anyio
async def test_a_payment_that_does_not_match_the_order_does_not_pay_it(shop: tuple[httpx2.AsyncClient, Path]) -> None:
    http, db = shop
    body = event("evt_1", "succeeded", amount=1)
    assert (await post(http, body, sign_webhook(body, SECRET, int(time.time())))).status_code == 200
    assert status(db) == "pending"


def test_verify_signature_agrees_with_the_service() -> None:
    body = b'{"id":"evt_1"}'
    now = int(time.time())
    assert verify_signature(body, sign_webhook(body, SECRET, now), SECRET, now=now) == now
    with pytest.raises(WebhookSignatureError):
        verify_signature(body + b" ", sign_webhook(body, SECRET, now), SECRET, now=now)


def test_the_shop_backend_uses_only_the_json_api() -> None:
    """A merchant's backend in any language would: no import of minipay."""
    for path in BACKEND.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "minipay" or n.startswith("minipay.") for n in names), path
