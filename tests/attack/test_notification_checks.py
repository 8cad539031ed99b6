"""Validly signed notifications that do not describe the stored payment are refused and alerted."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from minipay.server import db
from tests.server.conftest import World
from tests.server.test_notifications import count, notification, post_notify

pytestmark = pytest.mark.anyio


async def _alerts(world: World, payment_id: str) -> list[dict[str, object]]:
    e = db.outbox_events
    async with world.container.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(e.c.data).where(e.c.payment_id == payment_id, e.c.type == "payment.amount_mismatch")
            )
        ).all()
    return [json.loads(r[0]) if isinstance(r[0], str) else r[0] for r in rows]


@pytest.mark.parametrize(
    ("field", "value"), [("sub_appid", "wx9999999999999999"), ("sub_openid", "oSomeoneElse000000000000000")]
)
async def test_a_notification_for_another_payer_or_mini_program_is_a_mismatch(
    world: World, field: str, value: str
) -> None:
    # Finding 8: a signed notification whose sub_appid or sub_openid differed was applied.
    payment = await world.create_payment()
    _status, reply = await post_notify(world, notification(payment, **{field: value}))
    assert reply["return_code"] == "FAIL"
    assert (await world.get(payment["id"]))["status"] == "pending"
    alerts = await _alerts(world, payment["id"])
    assert len(alerts) == 1
    mismatch = alerts[0]["mismatch"]
    assert isinstance(mismatch, dict)
    assert mismatch["field"] == field
    assert mismatch["received"][field] == value


async def test_a_second_transaction_id_for_a_paid_payment_raises_the_mismatch_alert(world: World) -> None:
    # Finding 8: a second, different transaction_id for a succeeded payment was only an event row.
    payment = await world.create_payment()
    await post_notify(world, notification(payment))
    other = "4200000001202603020000000999"
    for _ in range(2):  # once per distinct message, however often WeChat repeats it
        status, reply = await post_notify(world, notification(payment, transaction_id=other))
        assert reply["return_code"] == "FAIL"
    current = await world.get(payment["id"])
    assert current["status"] == "succeeded"
    assert current["transaction_id"] == "4200000001202603020000000001"
    alerts = await _alerts(world, payment["id"])
    assert len(alerts) == 1
    mismatch = alerts[0]["mismatch"]
    assert isinstance(mismatch, dict)
    assert mismatch["field"] == "transaction_id"
    assert mismatch["expected"]["transaction_id"] == "4200000001202603020000000001"
    assert mismatch["received"]["transaction_id"] == other
    # The original one is still acknowledged as a duplicate.
    status, reply = await post_notify(world, notification(payment))
    assert (status, reply["return_code"]) == (200, "SUCCESS")
    assert await count(world, "payment_events", payment_id=payment["id"], type="succeeded") == 1
