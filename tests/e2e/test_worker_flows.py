"""The worker against the sandbox's faults and virtual clock: every loop the service opens gets closed."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from minipay.protocol import (
    CHINA_TZ,
    build_refund_notification,
    format_wx_datetime,
)
from minipay.server import db
from minipay.server.worker import PAYMENT_FOLLOWUP, REFUND_FOLLOWUP, Worker
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


async def test_systemerror_twice_on_query_then_success(stack: Stack) -> None:
    payment = await stack.create_payment(1500)
    await stack.pay(payment, notify="never")
    await stack.fault(endpoint="orderquery", fault="SYSTEMERROR", times=2, out_trade_no=payment["out_trade_no"])
    await stack.advance(60)
    for _ in range(3):  # the SDK retries SYSTEMERROR itself; the worker retries whatever is left
        await stack.worker.run_until_idle()
        if (await stack.payment(payment["id"]))["status"] == "succeeded":
            break
        await stack.advance(60)
    assert (await stack.payment(payment["id"]))["status"] == "succeeded"
    answers = [r["err_code"] or r["result_code"] for r in await stack.journal("orderquery", payment["out_trade_no"])]
    assert answers == ["SYSTEMERROR", "SYSTEMERROR", "SUCCESS"]
    assert len(await stack.outbox("payment.succeeded", payment["id"])) == 1


async def test_an_expired_payment_is_closed_at_wechat(stack: Stack) -> None:
    payment = await stack.create_payment(800, expires_in=600)
    await stack.advance(60)
    await stack.worker.run_until_idle()
    assert (await stack.payment(payment["id"]))["status"] == "pending"
    await stack.advance(600)
    await stack.worker.run_until_idle()
    found = await stack.payment(payment["id"])
    assert found["status"] == "closed"
    closes = await stack.journal("closeorder", payment["out_trade_no"])
    assert [c["result_code"] for c in closes] == ["SUCCESS"]
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert (job["status"], job["result"]["via"]) == ("done", "closeorder")
    assert stack.receiver.types() == ["payment.closed"]
    # The user can no longer pay it.
    assert (await stack.pay(payment))["errMsg"] != "requestPayment:ok"


class StaleQueryGateway:
    """The real gateway, except that one order query answers a stale NOTPAY (a replica that has not
    seen the payment yet, research B4): the worker then tries to close an order that is paid."""

    def __init__(self, inner: Any, out_trade_no: str) -> None:
        self._inner = inner
        self._target = out_trade_no
        self.stale_answers = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def query_order(self, sub: Any, out_trade_no: str) -> Any:
        result = await self._inner.query_order(sub, out_trade_no)
        if out_trade_no == self._target and self.stale_answers == 0:
            self.stale_answers += 1
            return dataclasses.replace(result, trade_state="NOTPAY", transaction_id=None, time_end=None)
        return result


async def test_close_answered_orderpaid_means_the_payment_succeeded(stack: Stack) -> None:
    payment = await stack.create_payment(1200, expires_in=600)
    await stack.advance(590)
    await stack.pay(payment, notify="never")  # paid 10 s before expiry, its notification lost
    await stack.advance(10)
    gateway = StaleQueryGateway(stack.container.gateway, payment["out_trade_no"])
    worker = Worker(
        settings=stack.settings,
        engine=stack.engine,
        gateway=gateway,
        clock=stack.container.clock,
        webhook_sender=stack.container.webhook_sender,
        uow_factory=stack.container.uow_factory,
        name="racing-worker",
    )
    try:
        await worker.run_until_idle()
    finally:
        await worker.aclose()
    assert gateway.stale_answers == 1
    closes = await stack.journal("closeorder", payment["out_trade_no"])
    assert [c["err_code"] for c in closes] == ["ORDERPAID"]
    found = await stack.payment(payment["id"])
    assert found["status"] == "succeeded"
    assert found["paid_after_close"] is False
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert job["result"]["via"] == "closeorder ORDERPAID"
    assert stack.receiver.types() == ["payment.succeeded"]


async def test_money_arriving_after_a_close_is_kept_and_flagged(stack: Stack) -> None:
    payment = await stack.create_payment(900, expires_in=600)
    no = payment["out_trade_no"]
    await stack.advance(600)
    await stack.worker.run_until_idle()
    assert (await stack.payment(payment["id"]))["status"] == "closed"
    closes = await stack.journal("closeorder", no)
    assert [c["result_code"] for c in closes] == ["SUCCESS"]  # closed at WeChat by the worker
    queries_before = len(await stack.journal("orderquery", no))

    # The payer's password screen was open when the order closed (research "pay-after-expiry"):
    # WeChat takes the money anyway and notifies it. The sandbox's cashier does the same with force.
    paid = await stack.pay(payment, force=True)
    assert (paid["errMsg"], paid["paid_after_close"]) == ("requestPayment:ok", True)
    (notification,) = await stack.notifications(no)
    assert notification["state"] == "delivered"  # the service acknowledged the sandbox's notification
    assert [a["verdict"] for a in notification["attempts"]] == ["ack"]

    found = await stack.payment(payment["id"])
    assert (found["status"], found["paid_after_close"]) == ("succeeded", True)
    assert found["transaction_id"] == paid["transaction_id"]
    (event,) = await stack.outbox("payment.paid_after_close", payment["id"])
    assert event["data"]["transaction_id"] == paid["transaction_id"]
    assert await stack.outbox("payment.succeeded", payment["id"]) == []
    # WeChat itself now answers SUCCESS for the order the worker closed.
    sub = next(s for s in stack.settings.sub_merchants if s.sub_mch_id == payment["sub_mch_id"])
    order = await stack.container.gateway.query_order(sub, no)
    assert order is not None
    assert (order.trade_state, order.transaction_id) == ("SUCCESS", paid["transaction_id"])

    await stack.advance(3600)
    await stack.worker.run_until_idle()
    assert stack.receiver.types() == ["payment.closed", "payment.paid_after_close"]
    (hook,) = [e for e in stack.receiver.events if e["type"] == "payment.paid_after_close"]
    assert (hook["data"]["id"], hook["data"]["paid_after_close"]) == (payment["id"], True)
    assert stack.receiver.rejected == []
    # The worker leaves it alone: no close and no worker query after the money arrived (the one
    # query above is this test's own).
    assert len(await stack.journal("closeorder", no)) == 1
    assert len(await stack.journal("orderquery", no)) == queries_before + 1
    assert (await stack.payment(payment["id"]))["status"] == "succeeded"


async def test_a_processing_refund_is_followed_until_wechat_says_success(stack: Stack) -> None:
    payment = await stack.create_payment(2000)
    await stack.pay(payment)
    assert (await stack.payment(payment["id"]))["status"] == "succeeded"
    no = payment["out_trade_no"]
    r = await stack.sandbox.post("/sandbox/notify-mode", json={"mode": "never", "out_trade_no": no})
    r.raise_for_status()
    r = await stack.sandbox.post(
        "/sandbox/refunds/outcome", json={"out_trade_no": no, "status": "SUCCESS", "after": 600}
    )
    r.raise_for_status()
    refund = await stack.refund(payment["id"], 500)
    assert refund["status"] == "processing"

    await stack.advance(60)
    await stack.worker.run_until_idle()
    assert (await stack.get_refund(refund["id"]))["status"] == "processing"
    job = await stack.job(REFUND_FOLLOWUP, refund["id"])
    assert (job["status"], job["payload"]["last_state"]) == ("pending", "PROCESSING")

    await stack.advance(600)
    await stack.worker.run_until_idle()
    assert (await stack.get_refund(refund["id"]))["status"] == "succeeded"
    assert (await stack.payment(payment["id"]))["status"] == "partially_refunded"
    assert (await stack.job(REFUND_FOLLOWUP, refund["id"]))["result"]["via"] == "query"
    assert stack.receiver.types() == ["payment.succeeded", "refund.succeeded"]


async def test_a_refund_notification_is_cross_checked_by_query(stack: Stack) -> None:
    payment = await stack.create_payment(2000)
    await stack.pay(payment)
    refund = await stack.refund(payment["id"], 700)
    await stack.advance(60)  # the sandbox completes the refund and notifies it
    assert (await stack.get_refund(refund["id"]))["status"] == "succeeded"
    await stack.worker.run_until_idle()
    job = await stack.job(REFUND_FOLLOWUP, refund["id"])
    assert job["result"] == {"outcome": "confirmed", "refund_status": "SUCCESS"}


async def test_an_order_too_young_to_close_is_closed_once_it_is_five_minutes_old(stack: Stack) -> None:
    payment = await stack.create_payment(600, expires_in=60)
    await stack.advance(60)
    await stack.worker.run_until_idle()
    assert (await stack.payment(payment["id"]))["status"] == "pending"
    refused = await stack.journal("closeorder", payment["out_trade_no"])
    assert [c["err_code"] for c in refused] == ["TRADE_STATE_ERROR"]
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert (job["status"], job["attempts"], job["last_error"]) == ("pending", 0, None)
    await stack.advance(240)  # five minutes after creation
    await stack.worker.run_until_idle()
    assert (await stack.payment(payment["id"]))["status"] == "closed"
    closes = await stack.journal("closeorder", payment["out_trade_no"])
    assert [c["result_code"] for c in closes] == ["FAIL", "SUCCESS"]


async def test_a_refund_notification_that_wechat_contradicts_becomes_a_discrepancy(stack: Stack) -> None:
    payment = await stack.create_payment(2000)
    paid = await stack.pay(payment)
    no = payment["out_trade_no"]
    (await stack.sandbox.post("/sandbox/notify-mode", json={"mode": "never", "out_trade_no": no})).raise_for_status()
    scripted = {"out_trade_no": no, "status": "REFUNDCLOSE", "after": 600}
    (await stack.sandbox.post("/sandbox/refunds/outcome", json=scripted)).raise_for_status()
    refund = await stack.refund(payment["id"], 500)
    # A refund notification saying SUCCESS (correctly encrypted with the institution's key) while
    # WeChat will in fact close the refund: the worker's cross-check must catch it.
    inst = stack.settings.institutions[0]
    outer = {
        "return_code": "SUCCESS",
        "appid": inst.appid,
        "mch_id": inst.mch_id,
        "sub_appid": "wx1234567890abcdef",
        "sub_mch_id": "1900000110",
        "nonce_str": "b" * 32,
    }
    inner = {
        "transaction_id": paid["transaction_id"],
        "out_trade_no": no,
        "refund_id": refund["refund_id"],
        "out_refund_no": refund["out_refund_no"],
        "total_fee": 2000,
        "refund_fee": 500,
        "settlement_refund_fee": 500,
        "refund_status": "SUCCESS",
        "success_time": format_wx_datetime(stack.container.clock.now()),
        "refund_recv_accout": "支付用户零钱",
        "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
        "refund_request_source": "API",
    }
    body = build_refund_notification(outer, inner, inst.key())
    reply = await stack.service.post("/wechatpay/notify/refund", content=body)
    assert b"SUCCESS" in reply.content
    assert (await stack.get_refund(refund["id"]))["status"] == "succeeded"

    await stack.advance(60)
    await stack.worker.run_until_idle()
    job = await stack.job(REFUND_FOLLOWUP, refund["id"])
    assert job["status"] == "pending"  # WeChat still says PROCESSING: asked again later
    await stack.advance(600)
    await stack.worker.run_until_idle()
    job = await stack.job(REFUND_FOLLOWUP, refund["id"])
    assert job["result"] == {"outcome": "conflict", "local": "succeeded", "refund_status": "REFUNDCLOSE"}
    assert (await stack.get_refund(refund["id"]))["status"] == "succeeded"  # nothing edited silently
    day = stack.container.clock.now().astimezone(CHINA_TZ).date().isoformat()
    report = (await stack.service.get(f"/v1/reconciliation/{day}", headers=stack.headers())).json()
    assert [(d["kind"], d["out_refund_no"]) for d in report["discrepancies"]] == [
        ("refund_status_mismatch", refund["out_refund_no"])
    ]


class ForgetfulRefundGateway:
    """The real gateway, except that while ``forgetting`` is set WeChat's refund query for one
    ``out_refund_no`` answers REFUNDNOTEXIST (the sandbox cannot forget a refund it accepted). The real
    query is still made; the gateway's answer for REFUNDNOTEXIST is ``None``."""

    def __init__(self, inner: Any, out_refund_no: str) -> None:
        self._inner = inner
        self._target = out_refund_no
        self.forgetting = True
        self.not_exist_answers = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def query_refund(self, sub: Any, out_refund_no: str) -> Any:
        result = await self._inner.query_refund(sub, out_refund_no)
        if out_refund_no == self._target and self.forgetting:
            self.not_exist_answers += 1
            return None
        return result


async def test_an_accepted_refund_that_wechat_no_longer_knows_is_reported_once_and_still_followed(
    stack: Stack,
) -> None:
    payment = await stack.create_payment(3000)
    await stack.pay(payment)
    no = payment["out_trade_no"]
    (await stack.sandbox.post("/sandbox/notify-mode", json={"mode": "never", "out_trade_no": no})).raise_for_status()
    scripted = {"out_trade_no": no, "status": "SUCCESS", "after": 7200}
    (await stack.sandbox.post("/sandbox/refunds/outcome", json=scripted)).raise_for_status()
    refund = await stack.refund(payment["id"], 700)
    assert refund["status"] == "processing"
    assert refund["refund_id"]
    gateway = ForgetfulRefundGateway(stack.container.gateway, refund["out_refund_no"])
    worker = Worker(
        settings=stack.settings,
        engine=stack.engine,
        gateway=gateway,
        clock=stack.container.clock,
        webhook_sender=stack.container.webhook_sender,
        uow_factory=stack.container.uow_factory,
        name="forgetful-wechat-worker",
    )
    day = stack.container.clock.now().astimezone(CHINA_TZ).date().isoformat()
    payment_status = (await stack.payment(payment["id"]))["status"]

    async def missing() -> list[dict[str, Any]]:
        report = (await stack.service.get(f"/v1/reconciliation/{day}", headers=stack.headers())).json()
        return [d for d in report["discrepancies"] if d["kind"] == "refund_missing_at_wechat"]

    try:
        await stack.advance(60)
        await worker.run_until_idle()
        assert gateway.not_exist_answers == 1
        (found,) = await missing()
        assert (found["sub_mch_id"], found["out_refund_no"], found["refund_id"]) == (
            "1900000110",
            refund["out_refund_no"],
            refund["refund_id"],
        )
        assert found["ledger"]["status"] == "processing"
        assert found["bill"] == {"refund_status": "REFUNDNOTEXIST"}
        job = await stack.job(REFUND_FOLLOWUP, refund["id"])
        assert (job["status"], job["attempts"]) == ("pending", 0)  # followed on, not counted as a failure
        assert job["run_at"] > stack.container.clock.now()  # with backoff, not at once

        for gap in (30, 60, 120):  # WeChat keeps answering REFUNDNOTEXIST: asked again, reported once
            await stack.advance(gap)
            await worker.run_until_idle()
        assert gateway.not_exist_answers == 4
        assert len(await missing()) == 1
        unchanged = await stack.get_refund(refund["id"])
        assert (unchanged["status"], unchanged["amount"], unchanged["refund_id"]) == (
            "processing",
            700,
            refund["refund_id"],
        )
        assert (await stack.payment(payment["id"]))["status"] == payment_status

        gateway.forgetting = False  # WeChat answers again later: the refund completes normally
        await stack.advance(7200)
        for _ in range(4):
            await worker.run_until_idle()
            if (await stack.get_refund(refund["id"]))["status"] == "succeeded":
                break
            await stack.advance(3 * 3600)
        done = await stack.get_refund(refund["id"])
        assert (done["status"], done["amount"]) == ("succeeded", 700)
        assert gateway.not_exist_answers == 4
        assert len(await missing()) == 1  # the record stays for a human
    finally:
        await worker.aclose()


async def test_the_worker_retries_a_failed_webhook_with_backoff_and_logs_every_attempt(stack: Stack) -> None:
    stack.receiver.fail_next = 1
    payment = await stack.create_payment(1000)
    await stack.pay(payment)  # notified: payment.succeeded is in the outbox
    await stack.worker.run_until_idle()
    assert stack.receiver.types() == []  # the receiver answered 500
    await stack.worker.run_until_idle()
    assert stack.receiver.types() == []  # not retried at once: backoff
    await stack.advance(60)
    await stack.worker.run_until_idle()
    assert stack.receiver.types() == ["payment.succeeded"]
    await stack.advance(3600)
    await stack.worker.run_until_idle()
    assert stack.receiver.types() == ["payment.succeeded"]  # delivered once, never again

    (event,) = await stack.outbox("payment.succeeded", payment["id"])
    d, a = db.webhook_deliveries, db.webhook_attempts
    async with stack.engine.connect() as conn:
        (status,) = (await conn.execute(select(d.c.status).where(d.c.event_id == event["id"]))).one()
        attempts = (
            await conn.execute(
                select(a.c.status_code, a.c.attempted_at)
                .select_from(a.join(d, d.c.id == a.c.delivery_id))
                .where(d.c.event_id == event["id"])
                .order_by(a.c.id)
            )
        ).all()
    assert status == "succeeded"
    assert [code for code, _ in attempts] == [500, 200]
    assert attempts[1][1] - attempts[0][1] >= timedelta(seconds=60)
