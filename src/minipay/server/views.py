"""Views: the JSON of a payment or refund, as the API returns it and the webhooks carry it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from minipay.protocol import (
    PayParams,
)
from minipay.server.domain import (
    Payment,
    Refund,
)

__all__ = [
    "payment_view",
    "refund_view",
]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def payment_view(p: Payment, *, pay_params: PayParams | None = None) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "payment",
        "status": str(p.status),
        "paid_after_close": p.paid_after_close,
        "out_trade_no": p.out_trade_no,
        "amount": p.amount,
        "currency": p.currency,
        "amount_refunded": p.refunded_amount,
        "description": p.description,
        "openid": p.openid,
        "attach": p.attach,
        "metadata": dict(p.metadata),
        "sub_mch_id": p.sub_mch_id,
        "sub_appid": p.sub_appid,
        "transaction_id": p.transaction_id,
        "cash_fee": p.cash_fee,
        "cash_fee_type": p.cash_fee_type,
        "pay_params": dict(pay_params) if pay_params is not None else None,
        "expires_at": _iso(p.expires_at),
        "paid_at": _iso(p.paid_at),
        "closed_at": _iso(p.closed_at),
        "created_at": _iso(p.created_at),
        "updated_at": _iso(p.updated_at),
        "last_error": p.last_error,
    }


def refund_view(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "refund",
        "payment_id": r.payment_id,
        "status": str(r.status),
        "amount": r.amount,
        "currency": r.currency,
        "out_refund_no": r.out_refund_no,
        "refund_id": r.refund_id,
        "reason": r.reason,
        "failure_code": r.failure_code,
        "sub_mch_id": r.sub_mch_id,
        "succeeded_at": _iso(r.succeeded_at),
        "created_at": _iso(r.created_at),
        "updated_at": _iso(r.updated_at),
    }
