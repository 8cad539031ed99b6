"""The worker against the sandbox's faults and virtual clock: every loop the service opens gets closed."""

from __future__ import annotations

import pytest

from minipay.server.worker import PAYMENT_FOLLOWUP
from tests.e2e.stack import Stack

pytestmark = pytest.mark.anyio


async def test_a_payment_whose_notifications_never_arrive_succeeds_by_active_query(stack: Stack) -> None:
    payment = await stack.create_payment(1000)
    paid = await stack.pay(payment, notify="never")
    assert paid["errMsg"] == "requestPayment:ok"
    assert (await stack.payment(payment["id"]))["status"] == "pending"

    await stack.worker.run_until_idle()
    assert (await stack.payment(payment["id"]))["status"] == "pending"  # not before the query delay
    assert await stack.journal("orderquery", payment["out_trade_no"]) == []

    await stack.advance(stack.worker.config.query_delay.total_seconds())
    await stack.worker.run_until_idle()
    found = await stack.payment(payment["id"])
    assert found["status"] == "succeeded"
    assert found["transaction_id"] == paid["transaction_id"]
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert job["status"] == "done"
    assert job["result"]["via"] == "query"
    assert len(await stack.outbox("payment.succeeded", payment["id"])) == 1
    assert stack.receiver.types() == ["payment.succeeded"]
    assert stack.receiver.rejected == []
