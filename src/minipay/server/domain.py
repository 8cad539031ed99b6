"""The payment domain: payments, refunds and their state machines. Pure: no I/O, no clock of its own.

States only move forward (research B9.3)::

    Payment:  created -> pending -> succeeded -> partially_refunded -> refunded
              created/pending -> closed            (closed + money arriving => succeeded, paid_after_close)
    Refund:   pending -> processing -> succeeded | failed
              pending -> succeeded | failed        (the answer may come before the "accepted" step is recorded)

A late ``NOTPAY`` never undoes a success; a success after a close is kept and flagged
``paid_after_close``, never dropped. Money is an ``int`` of minor units of ``currency``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from minipay.protocol import (
    OrderQueryResponse,
    PaymentNotification,
    RefundNotification,
    RefundQueryResponse,
    RefundRecord,
    random_hex,
)

__all__ = [
    "MONEY_OUT_FAILURES",
    "PAYMENT_FIXED_FIELDS",
    "ApplyOutcome",
    "DomainError",
    "Payment",
    "PaymentResult",
    "PaymentStatus",
    "Refund",
    "RefundNotAllowed",
    "RefundResult",
    "RefundStatus",
    "TransitionError",
    "new_id",
]


class DomainError(Exception):
    """A business rule refused an action (mapped to a 4xx by the API)."""

    code = "invalid_state"


class TransitionError(DomainError):
    """A state change the state machine does not allow."""

    code = "invalid_state"


class RefundNotAllowed(DomainError):
    """The payment cannot be refunded for that amount (not paid, or the remainder is too small)."""

    code = "refund_not_allowed"


class PaymentStatus(enum.StrEnum):
    CREATED = "created"
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    CLOSED = "closed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


PAID_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED})
OPEN_STATUSES = frozenset({PaymentStatus.CREATED, PaymentStatus.PENDING})


class RefundStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINAL_REFUND_STATUSES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})

#: Failure codes of a refund whose money left the merchant without reaching the payer (``CHANGE``:
#: card cancelled..., handled by hand in the merchant platform, spec 11.2). Its amount stays reserved:
#: refunding it again through the API could pay the payer twice.
MONEY_OUT_FAILURES = frozenset({"CHANGE"})


class ApplyOutcome(enum.StrEnum):
    """What applying a result from WeChat did."""

    APPLIED = "applied"  # a transition happened (exactly once)
    DUPLICATE = "duplicate"  # already in that state: nothing to do, acknowledge
    NO_CHANGE = "no_change"  # a non-final answer (NOTPAY, PROCESSING...) or a stale one: nothing to do
    MISMATCH = "mismatch"  # amount / currency / ids differ from the stored payment: alert recorded
    UNKNOWN = "unknown"  # no such payment or refund here: nothing created


def new_id(prefix: str) -> str:
    """An opaque public id such as ``pay_3f9c...`` (24 hex characters of randomness)."""
    return f"{prefix}_{random_hex(12)}"


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """A payment outcome from WeChat: a verified notification or an ``orderquery`` answer (wire names).

    ``trade_state`` is ``SUCCESS`` for a notification; a query gives any of spec 8.3. Built from
    protocol's typed messages, which parsed and bounded every field already.
    """

    out_trade_no: str
    trade_state: str
    appid: str | None = None
    mch_id: str | None = None
    sub_mch_id: str | None = None
    sub_appid: str | None = None
    sub_openid: str | None = None
    transaction_id: str | None = None
    total_fee: int | None = None
    fee_type: str | None = None
    cash_fee: int | None = None
    cash_fee_type: str | None = None
    time_end: datetime | None = None

    @classmethod
    def from_notification(cls, notification: PaymentNotification) -> PaymentResult:
        """A verified payment notification: only successes are notified (spec 7.1)."""
        return cls._from_message(notification, "SUCCESS")

    @classmethod
    def from_query(cls, response: OrderQueryResponse) -> PaymentResult:
        """An ``orderquery`` answer (its ``trade_state``; ``PAYERROR`` when a FAIL names none)."""
        state = response.trade_state or ("SUCCESS" if response.result_code == "SUCCESS" else "PAYERROR")
        return cls._from_message(response, state)

    @classmethod
    def _from_message(cls, message: PaymentNotification | OrderQueryResponse, trade_state: str) -> PaymentResult:
        return cls(
            out_trade_no=message.out_trade_no or "",
            trade_state=trade_state,
            appid=message.appid,
            mch_id=message.mch_id,
            sub_mch_id=message.sub_mch_id,
            sub_appid=message.sub_appid or None,
            sub_openid=message.sub_openid or None,
            transaction_id=message.transaction_id or None,
            total_fee=message.total_fee,
            fee_type=message.fee_type or None,
            cash_fee=message.cash_fee,
            cash_fee_type=message.cash_fee_type or None,
            time_end=message.time_end,
        )


@dataclass(frozen=True, slots=True)
class RefundResult:
    """A refund outcome from WeChat: a decrypted refund notification or a ``refundquery`` record.

    ``refund_status`` is ``SUCCESS``, ``PROCESSING``, ``REFUNDCLOSE`` or ``CHANGE`` (spec 11.2, 12.3).
    """

    out_refund_no: str
    refund_status: str
    out_trade_no: str | None = None
    sub_mch_id: str | None = None
    refund_id: str | None = None
    refund_fee: int | None = None
    total_fee: int | None = None
    success_time: datetime | None = None

    @classmethod
    def from_notification(cls, notification: RefundNotification) -> RefundResult:
        """A decrypted refund notification (``sub_mch_id`` from its outer, unencrypted part)."""
        return cls(
            out_refund_no=notification.out_refund_no or "",
            refund_status=notification.refund_status or "",
            out_trade_no=notification.out_trade_no or None,
            sub_mch_id=notification.sub_mch_id or None,
            refund_id=notification.refund_id or None,
            refund_fee=notification.refund_fee,
            total_fee=notification.total_fee,
            success_time=notification.success_time,
        )

    @classmethod
    def from_query(cls, response: RefundQueryResponse, record: RefundRecord) -> RefundResult:
        """One record of a ``refundquery`` answer."""
        return cls(
            out_refund_no=record.out_refund_no or "",
            refund_status=record.refund_status or "",
            out_trade_no=response.out_trade_no,
            sub_mch_id=response.sub_mch_id,
            refund_id=record.refund_id,
            refund_fee=record.refund_fee,
            success_time=record.refund_success_time,
        )


@dataclass(slots=True)
class DomainEvent:
    """Something that happened, to be logged (``payment_events``) and maybe published (outbox)."""

    type: str
    data: dict[str, Any]
    webhook: str | None = None  # the webhook event type, if merchants are told
    key: str | None = None  # the outbox dedupe key: one row per logical event


@dataclass(slots=True)
class Payment:
    id: str
    institution: str
    appid: str
    mch_id: str
    sub_mch_id: str
    sub_appid: str
    out_trade_no: str
    amount: int
    currency: str
    description: str
    openid: str
    client_ip: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    attach: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: PaymentStatus = PaymentStatus.CREATED
    paid_after_close: bool = False
    transaction_id: str | None = None
    prepay_id: str | None = None
    prepay_expires_at: datetime | None = None
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    refunded_amount: int = 0
    cash_fee: int | None = None
    cash_fee_type: str | None = None
    notified_at: datetime | None = None
    last_error: str | None = None
    version: int = 0
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    # -- transitions -------------------------------------------------------------------------------

    def prepared(self, prepay_id: str, prepay_expires_at: datetime, now: datetime) -> None:
        """Unified order answered with a ``prepay_id``: ``created -> pending`` (or a fresh one for ``pending``)."""
        if self.status not in OPEN_STATUSES:
            raise TransitionError(f"payment is {self.status}: no new prepay_id")
        self.prepay_id = prepay_id
        self.prepay_expires_at = prepay_expires_at
        self.last_error = None
        if self.status is PaymentStatus.CREATED:
            self.status = PaymentStatus.PENDING
        self.updated_at = now
        self.events.append(DomainEvent("prepared", {"prepay_expires_at": prepay_expires_at.isoformat()}))

    def paid(self, result: PaymentResult, now: datetime) -> ApplyOutcome:
        """Money arrived (notification or query SUCCESS/REFUND). Exactly one transition per payment."""
        if self.status in PAID_STATUSES:
            if result.transaction_id and self.transaction_id and result.transaction_id != self.transaction_id:
                self.events.append(
                    DomainEvent(
                        "transaction_id_conflict", {"stored": self.transaction_id, "received": result.transaction_id}
                    )
                )
            return ApplyOutcome.DUPLICATE
        was_closed = self.status is PaymentStatus.CLOSED
        self.status = PaymentStatus.SUCCEEDED
        self.transaction_id = result.transaction_id
        self.paid_at = result.time_end or now
        self.cash_fee = result.cash_fee
        self.cash_fee_type = result.cash_fee_type
        self.updated_at = now
        data = {"transaction_id": result.transaction_id, "paid_at": self.paid_at.isoformat()}
        if was_closed:
            self.paid_after_close = True
            self.events.append(
                DomainEvent(
                    "paid_after_close",
                    data,
                    webhook="payment.paid_after_close",
                    key=f"payment.paid_after_close:{self.id}",
                )
            )
        else:
            self.events.append(
                DomainEvent("succeeded", data, webhook="payment.succeeded", key=f"payment.succeeded:{self.id}")
            )
        return ApplyOutcome.APPLIED

    def closed(self, now: datetime, reason: str) -> ApplyOutcome:
        """Closed at WeChat (close API, expiry, or a query answering CLOSED/PAYERROR/REVOKED)."""
        if self.status is PaymentStatus.CLOSED:
            return ApplyOutcome.DUPLICATE
        if self.status not in OPEN_STATUSES:
            return ApplyOutcome.NO_CHANGE  # a paid payment is never closed
        self.status = PaymentStatus.CLOSED
        self.closed_at = now
        self.updated_at = now
        self.events.append(
            DomainEvent("closed", {"reason": reason}, webhook="payment.closed", key=f"payment.closed:{self.id}")
        )
        return ApplyOutcome.APPLIED

    def mismatch(self, result: PaymentResult) -> str | None:
        """Why ``result`` does not describe this payment (amount, currency, ids), or None."""
        if result.sub_mch_id is not None and result.sub_mch_id != self.sub_mch_id:
            return "sub_mch_id"
        if result.appid is not None and result.appid != self.appid:
            return "appid"
        if result.mch_id is not None and result.mch_id != self.mch_id:
            return "mch_id"
        # The payer and mini program must be the ones the order was made for (a validly signed
        # message about someone else's payment is not this payment's outcome).
        if result.sub_appid and result.sub_appid != self.sub_appid:
            return "sub_appid"
        if result.sub_openid and result.sub_openid != self.openid:
            return "sub_openid"
        if result.trade_state in ("SUCCESS", "REFUND"):
            if result.total_fee != self.amount:
                return "total_fee"
            # No fee_type means CNY (spec 5.1: the v2 default); Global always sends it.
            if (result.fee_type or "CNY") != self.currency:
                return "fee_type"
            if not result.transaction_id:
                return "transaction_id"
            if self.transaction_id is not None and result.transaction_id != self.transaction_id:
                return "transaction_id"  # a second, different WeChat transaction for one paid order
        return None

    # -- refunds -------------------------------------------------------------------------------------

    def check_refundable(self, amount: int, reserved: int) -> None:
        """Raise unless ``amount`` fits in what is left after ``reserved`` (pending + processing + succeeded
        + failed with the money out, see :data:`MONEY_OUT_FAILURES`)."""
        if self.status not in PAID_STATUSES:
            raise RefundNotAllowed(f"payment is {self.status}: only a paid payment can be refunded")
        if amount <= 0:
            raise RefundNotAllowed("amount must be a positive integer of minor units")
        remaining = self.amount - reserved
        if amount > remaining:
            raise RefundNotAllowed(f"amount {amount} exceeds the refundable remainder {remaining}")

    def refund_succeeded(self, amount: int, now: datetime) -> None:
        if self.status not in PAID_STATUSES:
            raise TransitionError(f"payment is {self.status}: cannot record a refund")
        self.refunded_amount += amount
        if self.refunded_amount > self.amount:
            raise TransitionError("refunded more than paid")
        self.status = (
            PaymentStatus.REFUNDED if self.refunded_amount == self.amount else PaymentStatus.PARTIALLY_REFUNDED
        )
        self.updated_at = now


#: What a payment is created with and never changes afterwards: the order WeChat was asked for and
#: whose it is. Saving a payment writes every other field (the repositories rely on it: an update
#: carries half the values).
PAYMENT_FIXED_FIELDS = frozenset(
    {
        "id",
        "institution",
        "appid",
        "mch_id",
        "sub_mch_id",
        "sub_appid",
        "out_trade_no",
        "amount",
        "currency",
        "description",
        "openid",
        "client_ip",
        "attach",
        "metadata",
        "created_at",
    }
)


@dataclass(slots=True)
class Refund:
    id: str
    payment_id: str
    sub_mch_id: str
    mch_id: str
    out_refund_no: str
    amount: int
    currency: str
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    status: RefundStatus = RefundStatus.PENDING
    refund_id: str | None = None
    failure_code: str | None = None
    succeeded_at: datetime | None = None
    version: int = 0
    events: list[DomainEvent] = field(default_factory=list, repr=False)

    def accepted(self, refund_id: str | None, now: datetime) -> ApplyOutcome:
        """WeChat accepted the refund request: ``pending -> processing``."""
        if self.status is not RefundStatus.PENDING:
            return ApplyOutcome.NO_CHANGE
        self.status = RefundStatus.PROCESSING
        self.refund_id = refund_id or self.refund_id
        self.updated_at = now
        self.events.append(DomainEvent("refund.processing", {"refund_id": self.refund_id}))
        return ApplyOutcome.APPLIED

    def succeeded(self, result: RefundResult, now: datetime) -> ApplyOutcome:
        if self.status is RefundStatus.SUCCEEDED:
            return ApplyOutcome.DUPLICATE
        if self.status is RefundStatus.FAILED:
            # A refund WeChat closed cannot succeed later; keep the record, flag it for a human.
            self.events.append(DomainEvent("refund.conflict", {"stored": "failed", "received": "SUCCESS"}))
            return ApplyOutcome.MISMATCH
        self.status = RefundStatus.SUCCEEDED
        self.refund_id = result.refund_id or self.refund_id
        self.succeeded_at = result.success_time or now
        self.updated_at = now
        self.events.append(
            DomainEvent(
                "refund.succeeded",
                {"refund_id": self.refund_id, "succeeded_at": self.succeeded_at.isoformat()},
                webhook="refund.succeeded",
                key=f"refund.succeeded:{self.id}",
            )
        )
        return ApplyOutcome.APPLIED

    def failed(self, code: str, now: datetime) -> ApplyOutcome:
        if self.status is RefundStatus.FAILED:
            return ApplyOutcome.DUPLICATE
        if self.status is RefundStatus.SUCCEEDED:
            return ApplyOutcome.NO_CHANGE  # forward only
        self.status = RefundStatus.FAILED
        self.failure_code = code
        self.updated_at = now
        self.events.append(
            DomainEvent(
                "refund.failed", {"failure_code": code}, webhook="refund.failed", key=f"refund.failed:{self.id}"
            )
        )
        return ApplyOutcome.APPLIED
