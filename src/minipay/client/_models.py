"""Typed answers of the SDK: the protocol's message models, with the fields a *successful* answer
must carry made required (so ``response.prepay_id`` is a ``str``, never ``None``).

Wire names verbatim; money ``int`` minor units; times aware China time; unknown fields kept
(``response.extra``; ``response.to_fields()`` gives the wire dict back). Built only from answers
whose signature verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from minipay.protocol import Bill as _Bill
from minipay.protocol import (
    BillRow,
    BillSummary,
    CloseOrderResponse,
    Code2SessionResult,
    ExchangeRateResponse,
    FieldError,
    RefundRecord,
    UnexpectedResponseError,
    WeChatResponse,
    parse_bill,
)
from minipay.protocol import OrderQueryResponse as _OrderQueryResponse
from minipay.protocol import RefundQueryResponse as _RefundQueryResponse
from minipay.protocol import RefundResponse as _RefundResponse
from minipay.protocol import UnifiedOrderResponse as _UnifiedOrderResponse

__all__ = [
    "Bill",
    "BillRow",
    "BillSummary",
    "CloseOrderResponse",
    "Code2SessionResult",
    "ExchangeRate",
    "OrderQueryResponse",
    "RefundQueryResponse",
    "RefundRecord",
    "RefundResponse",
    "UnifiedOrderResponse",
    "parse_downloaded_bill",
    "parse_model",
]


class UnifiedOrderResponse(_UnifiedOrderResponse):
    """``/pay/unifiedorder`` succeeded: ``prepay_id`` is valid for 2 hours (spec 5.2)."""

    prepay_id: str


class OrderQueryResponse(_OrderQueryResponse):
    """``/pay/orderquery``: ``trade_state`` (spec 8.3) and, once paid, the amounts (spec 8.2)."""

    trade_state: str
    out_trade_no: str


class RefundResponse(_RefundResponse):
    """``/secapi/pay/refund`` accepted the refund; its outcome comes later (query / notification)."""

    out_refund_no: str
    refund_id: str
    refund_fee: int


class RefundQueryResponse(_RefundQueryResponse):
    """``/pay/refundquery``: ``refunds`` in ``$n`` order (at most 10 per page)."""

    refund_count: int

    def find(self, out_refund_no: str) -> RefundRecord | None:
        """The refund with this ``out_refund_no`` on this page, if any."""
        return next((r for r in self.refunds if r.out_refund_no == out_refund_no), None)


class ExchangeRate(ExchangeRateResponse):
    """``/pay/queryexchagerate``: CNY per one major unit of ``fee_type``, x 10^8 (spec 14)."""

    fee_type: str
    rate_time: str
    rate: int


class Bill(_Bill):
    """A downloaded bill: ``rows`` (typed, minor units), ``summary`` and ``raw``, the bytes as received
    (gzip when ``gzip=True`` was asked). "No Bill Exist" is an empty bill (``raw == b""``)."""

    raw: bytes = b""


def parse_downloaded_bill(raw: bytes, ids: Mapping[str, str] | None = None) -> Bill:
    """Parse the bill with the protocol's tolerant parser; a malformed file is an :class:`UnexpectedResponseError`."""
    if not raw:
        return Bill()
    try:
        parsed = parse_bill(raw)
    except FieldError as exc:
        raise UnexpectedResponseError(f"the bill is malformed: {exc}", operation="downloadbill", ids=ids) from None
    if parsed.summary is None:
        # WeChat's bill always ends with its summary (spec 13.2); "no trades" is "No Bill Exist".
        # Without it the file is cut short (a truncated gzip stream even decodes to nothing):
        # never hand a reconciliation a silently shortened or empty bill.
        raise UnexpectedResponseError(
            "the bill has no summary line: truncated or not a bill", operation="downloadbill", ids=ids
        )
    return Bill(rows=parsed.rows, summary=parsed.summary, headers=parsed.headers, raw=raw)


_M = TypeVar("_M", bound=WeChatResponse)


def parse_model(model: type[_M], operation: str, fields: Mapping[str, str], ids: Mapping[str, str] | None = None) -> _M:
    """``model.from_fields(fields)``; a malformed or missing field is an :class:`UnexpectedResponseError`."""
    try:
        return model.from_fields(fields)
    except FieldError as exc:
        raise UnexpectedResponseError(
            f"the answer is malformed: {exc}", operation=operation, ids=ids, fields=fields
        ) from None
