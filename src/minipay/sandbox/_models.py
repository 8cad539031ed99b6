"""The sandbox's state records: orders, refunds, login codes, notifications, faults, journal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["Attempt", "Fault", "LoginCode", "Notification", "Order", "Refund"]

TradeState = Literal["NOTPAY", "SUCCESS", "REFUND", "CLOSED"]
RefundStatus = Literal["PROCESSING", "SUCCESS", "CHANGE", "REFUNDCLOSE"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass
class Order:
    mch_id: str
    appid: str
    sub_mch_id: str
    sub_appid: str
    out_trade_no: str
    total_fee: int
    fee_type: str
    notify_url: str
    sub_openid: str
    user: str
    sign_type: str
    #: Every request field except nonce_str/sign/sign_type: re-entry compares these.
    params: dict[str, str]
    created_at: datetime
    prepay_id: str
    prepay_created_at: datetime
    time_expire: datetime | None = None
    state: TradeState = "NOTPAY"
    transaction_id: str | None = None
    time_end: datetime | None = None
    cash_fee: int | None = None
    rate: int | None = None
    openid: str | None = None
    closed_at: datetime | None = None
    refunds: list[str] = field(default_factory=list)
    notify_mode: str | None = None
    #: Paid with ``POST /sandbox/pay {"force": true}`` while CLOSED or past ``time_expire``.
    paid_after_close: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "out_trade_no": self.out_trade_no,
            "mch_id": self.mch_id,
            "appid": self.appid,
            "sub_mch_id": self.sub_mch_id,
            "sub_appid": self.sub_appid,
            "trade_state": self.state,
            "total_fee": self.total_fee,
            "fee_type": self.fee_type,
            "body": self.params.get("body", ""),
            "attach": self.params.get("attach"),
            "notify_url": self.notify_url,
            "sub_openid": self.sub_openid,
            "sign_type": self.sign_type,
            "created_at": _iso(self.created_at),
            "prepay_id": self.prepay_id,
            "prepay_created_at": _iso(self.prepay_created_at),
            "time_expire": _iso(self.time_expire),
            "transaction_id": self.transaction_id,
            "time_end": _iso(self.time_end),
            "cash_fee": self.cash_fee,
            "cash_fee_type": "CNY" if self.cash_fee is not None else None,
            "rate": self.rate,
            "closed_at": _iso(self.closed_at),
            "paid_after_close": self.paid_after_close,
            "refunds": list(self.refunds),
        }


@dataclass
class Refund:
    sub_mch_id: str
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    transaction_id: str
    total_fee: int
    refund_fee: int
    refund_fee_type: str
    cash_refund_fee: int
    created_at: datetime
    due_at: datetime
    params: dict[str, str]
    notify_url: str | None
    status: RefundStatus = "PROCESSING"
    final_status: RefundStatus = "SUCCESS"
    success_time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "out_refund_no": self.out_refund_no,
            "refund_id": self.refund_id,
            "sub_mch_id": self.sub_mch_id,
            "out_trade_no": self.out_trade_no,
            "transaction_id": self.transaction_id,
            "total_fee": self.total_fee,
            "refund_fee": self.refund_fee,
            "refund_fee_type": self.refund_fee_type,
            "cash_refund_fee": self.cash_refund_fee,
            "refund_status": self.status,
            "scripted_status": self.final_status,
            "created_at": _iso(self.created_at),
            "completes_at": _iso(self.due_at) if self.status == "PROCESSING" else None,
            "success_time": _iso(self.success_time),
            "notify_url": self.notify_url,
        }


@dataclass
class LoginCode:
    appid: str
    user: str
    openid: str
    issued_at: datetime
    used: bool = False


@dataclass
class Attempt:
    n: int
    at: datetime
    status: int | None
    reply: str
    verdict: Literal["ack", "nack", "timeout", "error", "blocked"]
    error: str | None = None
    duplicate: bool = False
    resend: bool = False
    #: A forged copy sent on request (``POST /sandbox/notifications/{id}/resend {"tamper": ...}``).
    tamper: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "at": _iso(self.at),
            "status": self.status,
            "reply": self.reply,
            "verdict": self.verdict,
            "error": self.error,
            "duplicate": self.duplicate,
            "resend": self.resend,
            "tamper": self.tamper,
        }


@dataclass
class Notification:
    id: int
    kind: Literal["payment", "refund"]
    sub_mch_id: str
    out_trade_no: str
    out_refund_no: str | None
    url: str
    body: bytes
    mode: str
    created_at: datetime
    next_due: datetime | None
    state: Literal["pending", "delivered", "exhausted", "suppressed", "blocked"] = "pending"
    #: Scheduled deliveries made so far (index into the retry schedule).
    deliveries: int = 0
    attempts: list[Attempt] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "sub_mch_id": self.sub_mch_id,
            "out_trade_no": self.out_trade_no,
            "out_refund_no": self.out_refund_no,
            "url": self.url,
            "mode": self.mode,
            "state": self.state,
            "created_at": _iso(self.created_at),
            "next_attempt_at": _iso(self.next_due) if self.state == "pending" else None,
            "body": self.body.decode("utf-8"),
            "attempts": [a.to_json() for a in self.attempts],
        }


@dataclass
class Fault:
    id: int
    endpoint: str
    fault: str
    times: int
    out_trade_no: str | None = None
    delay: float = 0.0
    #: Only calls carrying this ``sub_mch_id`` (e.g. one sub-merchant's bill).
    sub_mch_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "fault": self.fault,
            "times": self.times,
            "out_trade_no": self.out_trade_no,
            "sub_mch_id": self.sub_mch_id,
            "delay": self.delay,
        }
