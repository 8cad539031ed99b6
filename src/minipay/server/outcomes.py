"""Applying WeChat's answers, exactly once: the only ways a payment or refund reaches a final state.

The notification handler, ``?sync=true``, close and the worker's active query all go through
:func:`apply_payment_result`, :func:`apply_refund_result` and :func:`mark_payment_closed`, whatever
the number of replicas (row lock + version check, see ``uow``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from minipay.server.domain import (
    PAID_STATUSES,
    ApplyOutcome,
    Payment,
    PaymentResult,
    Refund,
    RefundResult,
)
from minipay.server.ports import Clock, UnitOfWorkPort, UnitOfWorkPortFactory
from minipay.server.uow import retrying
from minipay.server.views import payment_view, refund_view

__all__ = [
    "apply_payment_result",
    "apply_refund_result",
    "mark_payment_closed",
    "record_payment_events",
    "record_refund_events",
]

log = logging.getLogger("minipay.server")

_PAID_STATES = frozenset({"SUCCESS", "REFUND"})
_DEAD_STATES = frozenset({"CLOSED", "REVOKED", "PAYERROR"})


async def apply_payment_result(
    uow_factory: UnitOfWorkPortFactory, result: PaymentResult, *, source: str, clock: Clock
) -> ApplyOutcome:
    """Apply a payment outcome from a verified notification (``source="notification"``) or an order
    query (``source="query"``): at most one transition, whatever the number of concurrent deliveries.

    Nothing is created for an unknown ``out_trade_no``; ids that do not match the stored payment
    change nothing; an amount or currency mismatch changes nothing but is logged and raises a
    ``payment.amount_mismatch`` webhook (once per distinct mismatching message).
    """

    # A notification's payment is read first, without a write transaction (it answers a repeated
    # notification on its own). The first attempt decides on that snapshot instead of reading the row
    # again under a lock: every write below is conditional on the version it read (``save`` raises
    # ConcurrentUpdate when another writer came first, and ``retrying`` starts over with a locked
    # read), and the fields it checks against the message never change once set. That attempt reads
    # nothing, so on PostgreSQL its writes go in one statement at commit (uow.writing_at_commit).
    snapshot: list[Payment] = []

    async def work(uow: UnitOfWorkPort) -> ApplyOutcome:
        now = clock.now()
        payment = snapshot.pop() if snapshot else await _find_payment(uow, result)
        if payment is None:
            log.warning(
                "payment result for unknown order refused",
                extra={"out_trade_no": result.out_trade_no, "source": source},
            )
            return ApplyOutcome.UNKNOWN
        reason = payment.mismatch(result)
        if reason in ("sub_mch_id", "appid", "mch_id"):
            log.warning(
                "payment result with foreign ids refused",
                extra={"payment_id": payment.id, "field": reason, "source": source},
            )
            return ApplyOutcome.MISMATCH
        if reason is not None:
            expected: dict[str, Any] = {"total_fee": payment.amount, "fee_type": payment.currency}
            received: dict[str, Any] = {"total_fee": result.total_fee, "fee_type": result.fee_type}
            if reason == "transaction_id":
                expected["transaction_id"] = payment.transaction_id
                received["transaction_id"] = result.transaction_id
            elif reason in ("sub_appid", "sub_openid"):
                expected[reason] = payment.sub_appid if reason == "sub_appid" else payment.openid
                received[reason] = result.sub_appid if reason == "sub_appid" else result.sub_openid
            data = {
                "field": reason,
                "expected": expected,
                "received": received,
                "transaction_id": result.transaction_id,
                "source": source,
            }
            await uow.events.append(
                type="amount_mismatch",
                source=source,
                data=data,
                now=now,
                payment_id=payment.id,
                sub_mch_id=payment.sub_mch_id,
            )
            await uow.outbox.publish(
                key=f"payment.amount_mismatch:{payment.id}:{reason}:{result.transaction_id}:{result.total_fee}"
                f":{result.fee_type}:{received.get(reason, '')}"[:200],
                type="payment.amount_mismatch",
                sub_mch_id=payment.sub_mch_id,
                data={**payment_view(payment), "mismatch": data},
                now=now,
                payment_id=payment.id,
            )
            await uow.commit()
            log.error("payment amount mismatch", extra={"payment_id": payment.id, "field": reason, "source": source})
            return ApplyOutcome.MISMATCH

        if result.trade_state in _PAID_STATES:
            outcome = payment.paid(result, now)
        elif result.trade_state in _DEAD_STATES:
            outcome = payment.closed(now, reason=result.trade_state)
        else:
            outcome = ApplyOutcome.NO_CHANGE
        if source == "notification" and payment.notified_at is None:
            payment.notified_at = now
            payment.updated_at = now
        if outcome is ApplyOutcome.APPLIED or payment.events or payment.notified_at == now:
            await uow.payments.save(payment)
        await uow.events.append(
            type=f"{source}.{outcome}",
            source=source,
            data={"trade_state": result.trade_state, "transaction_id": result.transaction_id},
            now=now,
            payment_id=payment.id,
            sub_mch_id=payment.sub_mch_id,
        )
        await record_payment_events(uow, payment, source=source, now=now)
        await uow.commit()
        return outcome

    if source == "notification":
        payment = await _read_for_notification(uow_factory, result)
        if payment is not None:
            if _already_applied(payment, result):
                return ApplyOutcome.DUPLICATE
            snapshot.append(payment)

    def unit_of_work() -> UnitOfWorkPort:
        # Deciding on the snapshot, the attempt reads nothing: its writes can go at commit.
        return uow_factory().writing_at_commit() if snapshot else uow_factory()

    return await retrying(unit_of_work, work)


async def _read_for_notification(uow_factory: UnitOfWorkPortFactory, result: PaymentResult) -> Payment | None:
    """The payment a paid notification names, read with no write transaction; None when the message
    lacks the ids to look it up that way or names no payment (the locked read decides then)."""
    if result.trade_state not in _PAID_STATES or not (result.mch_id and result.sub_mch_id and result.transaction_id):
        return None
    async with uow_factory().looking_up() as uow:
        return await uow.payments.get_by_out_trade_no(result.mch_id, result.out_trade_no, sub_mch_id=result.sub_mch_id)


def _already_applied(payment: Payment, result: PaymentResult) -> bool:
    """A notification WeChat repeats (it does, until it reads our SUCCESS) is answered from the read,
    with no write transaction, when the payment is paid with this very transaction, notified already,
    and the message matches it in every field the write path checks."""
    return (
        payment.status in PAID_STATUSES
        and payment.notified_at is not None
        and payment.transaction_id == result.transaction_id
        and payment.mismatch(result) is None
    )


async def _find_payment(uow: UnitOfWorkPort, result: PaymentResult) -> Payment | None:
    if result.mch_id and result.sub_mch_id:
        return await uow.payments.get_by_out_trade_no(
            result.mch_id, result.out_trade_no, sub_mch_id=result.sub_mch_id, for_update=True
        )
    found = await uow.payments.search(sub_mch_id=result.sub_mch_id, out_trade_no=result.out_trade_no, limit=2)
    if len(found) != 1:
        return None
    return await uow.payments.get(found[0].id, for_update=True)


async def mark_payment_closed(
    uow_factory: UnitOfWorkPortFactory, payment_id: str, *, reason: str, source: str, clock: Clock
) -> ApplyOutcome:
    """Record that WeChat closed the order (closeorder SUCCESS / ORDERCLOSED, or a query said CLOSED)."""

    async def work(uow: UnitOfWorkPort) -> ApplyOutcome:
        now = clock.now()
        payment = await uow.payments.get(payment_id, for_update=True)
        if payment is None:
            return ApplyOutcome.UNKNOWN
        outcome = payment.closed(now, reason=reason)
        if outcome is ApplyOutcome.APPLIED:
            await uow.payments.save(payment)
            await record_payment_events(uow, payment, source=source, now=now)
            await uow.commit()
        return outcome

    return await retrying(uow_factory, work)


async def apply_refund_result(
    uow_factory: UnitOfWorkPortFactory, result: RefundResult, *, mch_id: str, source: str, clock: Clock
) -> ApplyOutcome:
    """Apply a refund outcome (decrypted notification or refund query): exactly once.

    ``SUCCESS`` -> refund ``succeeded`` and the payment becomes ``partially_refunded``/``refunded``;
    ``REFUNDCLOSE`` -> ``failed`` (the amount becomes refundable again); ``CHANGE`` -> ``failed`` with the
    amount still reserved (the money is out, handled by hand: ``domain.MONEY_OUT_FAILURES``);
    ``PROCESSING`` -> ``processing``. An unknown ``out_refund_no`` changes nothing.
    """

    async def work(uow: UnitOfWorkPort) -> ApplyOutcome:
        now = clock.now()
        peek = await uow.refunds.get_by_out_refund_no(mch_id, result.out_refund_no)
        if peek is None:
            return ApplyOutcome.UNKNOWN
        # Lock order everywhere: payment, then refund (no deadlocks between refund paths).
        payment = await uow.payments.get(peek.payment_id, for_update=True)
        refund = await uow.refunds.get(peek.id, for_update=True)
        if payment is None or refund is None:
            return ApplyOutcome.UNKNOWN
        if (result.sub_mch_id and result.sub_mch_id != refund.sub_mch_id) or (
            result.out_trade_no and result.out_trade_no != payment.out_trade_no
        ):
            return ApplyOutcome.MISMATCH
        if result.refund_fee is not None and result.refund_fee != refund.amount:
            data = {
                "field": "refund_fee",
                "refund_id": refund.id,
                "out_refund_no": refund.out_refund_no,
                "expected": {"refund_fee": refund.amount},
                "received": {"refund_fee": result.refund_fee, "refund_status": result.refund_status},
                "source": source,
            }
            await uow.events.append(
                type="refund_amount_mismatch",
                source=source,
                data=data,
                now=now,
                payment_id=payment.id,
                refund_id=refund.id,
                sub_mch_id=refund.sub_mch_id,
            )
            await uow.outbox.publish(  # the alert, once per distinct message
                key=f"payment.amount_mismatch:{refund.id}:{result.refund_status}:{result.refund_fee}",
                type="payment.amount_mismatch",
                sub_mch_id=refund.sub_mch_id,
                data={**payment_view(payment), "mismatch": data},
                now=now,
                payment_id=payment.id,
                refund_id=refund.id,
            )
            await uow.commit()
            log.error("refund amount mismatch", extra={"refund_id": refund.id, "source": source})
            return ApplyOutcome.MISMATCH
        status = result.refund_status
        if status == "SUCCESS":
            outcome = refund.succeeded(result, now)
            if outcome is ApplyOutcome.APPLIED:
                payment.refund_succeeded(refund.amount, now)
                await uow.payments.save(payment)
        elif status in ("REFUNDCLOSE", "CHANGE"):
            outcome = refund.failed(status, now)
        elif status == "PROCESSING":
            outcome = refund.accepted(result.refund_id, now)
        else:
            outcome = ApplyOutcome.NO_CHANGE
        if refund.events:
            await uow.refunds.save(refund)
        await uow.events.append(
            type=f"refund_{source}.{outcome}",
            source=source,
            data={"refund_status": status},
            now=now,
            payment_id=payment.id,
            refund_id=refund.id,
            sub_mch_id=refund.sub_mch_id,
        )
        await record_refund_events(uow, refund, payment, source=source, now=now)
        await uow.commit()
        return outcome

    return await retrying(uow_factory, work)


async def record_payment_events(uow: UnitOfWorkPort, payment: Payment, *, source: str, now: datetime) -> None:
    """Store the payment's new events; each is a webhook that carries the payment as the API shows it."""
    await uow.record(
        payment.events,
        source=source,
        sub_mch_id=payment.sub_mch_id,
        now=now,
        payment_id=payment.id,
        webhook_data=payment_view(payment),
    )


async def record_refund_events(
    uow: UnitOfWorkPort, refund: Refund, payment: Payment, *, source: str, now: datetime
) -> None:
    """Store the refund's new events; each webhook carries the refund with its payment."""
    await uow.record(
        refund.events,
        source=source,
        sub_mch_id=refund.sub_mch_id,
        now=now,
        payment_id=payment.id,
        refund_id=refund.id,
        webhook_data={**refund_view(refund), "payment": payment_view(payment)},
    )
