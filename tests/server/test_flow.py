"""The whole flow against the sandbox, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from minipay.server import db
from minipay.server.webhooks import deliver_webhooks, verify_webhook
from tests.server.conftest import FAKE, World, make_world

pytestmark = pytest.mark.anyio


async def test_login_pay_notify_webhook_refund_reaches_partially_refunded(world: World) -> None:
    endpoint = await world.api.post(
        "/v1/webhook-endpoints", json={"url": "http://merchant.test/hooks"}, headers=world.auth()
    )
    assert endpoint.status_code == 201, endpoint.text
    secret = endpoint.json()["secret"]

    payment = await world.create_payment(amount=1000, currency="HKD", description="Latte", metadata={"order": "42"})
    assert payment["status"] == "pending"
    assert set(payment["pay_params"]) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert payment["out_trade_no"]

    paid = await world.pay(payment)
    assert paid["errMsg"] == "requestPayment:ok"

    current = await world.get(payment["id"])
    assert current["status"] == "succeeded"
    assert current["transaction_id"] == paid["transaction_id"]
    assert current["pay_params"] is None

    sent = await deliver_webhooks(world.container.uow_factory, world.container.webhook_sender, world.clock)
    assert sent == 1
    headers, body = world.receiver.received[0]
    # Signed with real time (the receiver's replay window), whatever the service's clock says.
    verify_webhook(body, headers["minipay-signature"], secret)
    event = json.loads(body)
    assert event["type"] == "payment.succeeded"
    assert event["data"]["id"] == payment["id"]
    assert event["data"]["status"] == "succeeded"

    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds",
        json={"amount": 300, "reason": "one cup less"},
        headers={**world.auth(), "Idempotency-Key": "refund-1"},
    )
    assert refund.status_code == 201, refund.text
    assert refund.json()["status"] in ("processing", "pending")
    out_refund_no = refund.json()["out_refund_no"]

    await world.advance(120)  # the sandbox completes the refund and notifies

    refunded = await world.api.get(f"/v1/refunds/{refund.json()['id']}", headers=world.auth())
    assert refunded.json()["status"] == "succeeded"
    assert refunded.json()["out_refund_no"] == out_refund_no
    current = await world.get(payment["id"])
    assert current["status"] == "partially_refunded"
    assert current["amount_refunded"] == 300

    async with world.container.engine.connect() as conn:
        types = (
            (await conn.execute(select(db.outbox_events.c.type).order_by(db.outbox_events.c.created_at)))
            .scalars()
            .all()
        )
        assert sorted(types) == ["payment.succeeded", "refund.succeeded"]
        transitions = await conn.execute(
            select(func.count()).select_from(db.payment_events).where(db.payment_events.c.type == "succeeded")
        )
        assert transitions.scalar_one() == 1


async def test_the_suite_really_runs_on_the_database_it_names(world: World, database_url: str) -> None:
    engine = world.container.engine
    expected = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert engine.dialect.name == expected
    probe = "SELECT version()" if expected == "postgresql" else "SELECT sqlite_version()"
    async with engine.connect() as conn:
        version = (await conn.exec_driver_sql(probe)).scalar_one()
    assert ("PostgreSQL" in version) if expected == "postgresql" else version[0].isdigit()


async def test_a_world_on_the_fake_keeps_the_services_rows_in_the_fake() -> None:
    async with make_world(FAKE) as world:
        payment = await world.create_payment()
        assert world.fake is not None
        assert [row["id"] for row in world.fake.rows("payments")] == [payment["id"]]
        assert world.container.services.uow_factory == world.fake.unit_of_work
