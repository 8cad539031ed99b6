"""Typed responses of every operation (spec 5, 7-11, 14): wire names verbatim.

Built with ``from_fields(decoded_fields)`` after :func:`~minipay.protocol.check_response`: amounts
become ``int`` (one bounded parser, ``_fields``), ``yyyyMMddHHmmss`` times become China-time
datetimes, the ``_$n`` fields become lists (``coupons``, ``refunds``), and unknown fields are kept
(``model_extra``). ``to_fields()`` renders the wire dict again (the sandbox builds its answers with
it). Notifications (``_notify``) share the payment fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, ClassVar, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from minipay.protocol._fields import field_error, optional_wire_int, wire_text
from minipay.protocol._time import (
    format_wx_datetime,
    parse_wx_date,
    parse_wx_datetime,
    parse_wx_time,
)

__all__ = [
    "CloseOrderResponse",
    "Coupon",
    "ExchangeRateResponse",
    "OrderQueryResponse",
    "RefundCoupon",
    "RefundQueryResponse",
    "RefundRecord",
    "RefundResponse",
    "UnifiedOrderResponse",
    "WeChatResponse",
]

_INDEXED_KEY_RE: Final = re.compile(r"_[0-9]+$", re.MULTILINE)
_INDEXED_RE: Final = re.compile(r"(.+?)_(\d+)(?:_(\d+))?")


# --- responses ------------------------------------------------------------------------------------


class _Indexed(BaseModel):
    """One ``_$n`` record; ``index`` is its ``$n`` on the wire."""

    model_config = ConfigDict(frozen=True, extra="allow")

    index: int


class Coupon(_Indexed):
    """``coupon_type_$n``, ``coupon_id_$n``, ``coupon_fee_$n`` of a payment (spec 7.2, 8.2)."""

    coupon_type: str | None = None
    coupon_id: str | None = None
    coupon_fee: int | None = None


class RefundCoupon(_Indexed):
    """``coupon_type_$n``, ``coupon_refund_id_$n``, ``coupon_refund_fee_$n`` of a refund (spec 10.3)."""

    coupon_type: str | None = None
    coupon_refund_id: str | None = None
    coupon_refund_fee: int | None = None


class RefundRecord(_Indexed):
    """One refund of a refund query (``*_$n`` fields, spec 11.2); its coupons are ``*_$n_$m``."""

    out_refund_no: str | None = None
    refund_id: str | None = None
    refund_channel: str | None = None
    refund_fee: int | None = None
    settlement_refund_fee: int | None = None
    refund_status: str | None = None
    refund_account: str | None = None
    refund_recv_accout: str | None = None
    refund_success_time: datetime | None = None
    coupon_refund_fee: int | None = None
    coupon_refund_count: int | None = None
    cash_refund_fee: int | None = None
    refund_fee_type: str | None = None
    cash_refund_fee_type: str | None = None
    coupons: list[RefundCoupon] = Field(default_factory=list)


def _indexed_names(model: type[_Indexed]) -> frozenset[str]:
    return frozenset(n for n in model.model_fields if n not in ("index", "coupons"))


_COUPON_NAMES: Final = _indexed_names(Coupon)
_REFUND_COUPON_NAMES: Final = _indexed_names(RefundCoupon)
_REFUND_RECORD_NAMES: Final = _indexed_names(RefundRecord)
_INT_TYPES: Final = (int | None, int)


def _int_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(n for n, f in model.model_fields.items() if f.annotation in _INT_TYPES and n != "index")


_COUPON_INTS: Final = _int_fields(Coupon)
_REFUND_COUPON_INTS: Final = _int_fields(RefundCoupon)
_REFUND_RECORD_INTS: Final = _int_fields(RefundRecord)


class WeChatResponse(BaseModel):
    """Base of responses and notifications: frozen, unknown fields kept in ``model_extra``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    #: Fields with ``yyyyMMddHHmmss`` / ``yyyy-MM-dd HH:mm:ss`` times (China time on the wire).
    _time_fields: ClassVar[frozenset[str]] = frozenset()
    _datetime_fields: ClassVar[frozenset[str]] = frozenset()
    #: Which ``_$n`` family this message carries: "coupons", "refund_coupons" or "refunds".
    _indexed: ClassVar[str] = ""
    _ints: ClassVar[frozenset[str]] = frozenset()

    return_code: str
    return_msg: str | None = None
    appid: str | None = None
    mch_id: str | None = None
    sub_appid: str | None = None
    sub_mch_id: str | None = None
    nonce_str: str | None = None
    sign: str | None = None
    sign_type: str | None = None
    result_code: str | None = None
    err_code: str | None = None
    err_code_des: str | None = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._ints = _int_fields(cls)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Self:
        """Build the typed message from decoded (and already verified) wire fields.

        Raises :class:`FieldError` when an amount is not an integer or a time is malformed.
        """
        data: dict[str, Any] = dict(fields)
        keys = data.keys()
        for name in cls._ints & keys:
            data[name] = optional_wire_int(name, data[name])
        for name in cls._time_fields & keys:
            value = data[name]
            data[name] = parse_wx_time(value, name) if value else None
        for name in cls._datetime_fields & keys:
            value = data[name]
            data[name] = parse_wx_datetime(value, name) if value else None
        if cls._indexed and _has_indexed(cls._indexed, data):
            _collect_indexed(cls._indexed, data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise field_error(exc) from None

    def to_fields(self) -> dict[str, str]:
        """The wire fields again (``_$n`` lists expanded, extras kept, ``None`` omitted)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if name in ("coupons", "refunds"):
                _expand(value, out)
            elif name in self._datetime_fields:
                out[name] = format_wx_datetime(value)
            else:
                out[name] = wire_text(value)
        if self.model_extra:
            for name, value in self.model_extra.items():
                out[name] = value if isinstance(value, str) else wire_text(value)
        return out

    @property
    def extra(self) -> dict[str, str]:
        """Received fields this model does not name (e.g. a new WeChat field), as strings."""
        return {k: v if isinstance(v, str) else wire_text(v) for k, v in (self.model_extra or {}).items()}


def _expand(records: list[Any], out: dict[str, str], outer: str = "") -> None:
    """Render records as ``name_$n`` (or ``name_$n_$m`` for records nested in record ``$n``)."""
    for record in records:
        tail = f"{outer}_{record.index}"
        for name in type(record).model_fields:
            if name == "index":
                continue
            value = getattr(record, name)
            if value is None:
                continue
            if name == "coupons":
                _expand(value, out, tail)
            elif isinstance(value, datetime):
                out[f"{name}{tail}"] = format_wx_datetime(value)
            else:
                out[f"{name}{tail}"] = wire_text(value)
        for name, value in (record.model_extra or {}).items():
            out[f"{name}{tail}"] = value if isinstance(value, str) else wire_text(value)


# Payment coupons are few: a set lookup finds them without scanning every key name; any other
# sign of coupons (``coupon_count``) falls back to the full scan.
_COUPON_KEYS: Final = frozenset(
    f"{name}_{n}" for name in ("coupon_type", "coupon_id", "coupon_fee") for n in range(100)
)


def _has_indexed(kind: str, data: dict[str, Any]) -> bool:
    if kind == "coupons":
        return "coupon_count" in data or not _COUPON_KEYS.isdisjoint(data)
    return _INDEXED_KEY_RE.search("\n".join(data)) is not None


def _collect_indexed(kind: str, data: dict[str, Any]) -> None:
    """Move the ``name_$n`` (and ``name_$n_$m``) fields of ``data`` into a list of records."""
    if kind == "refunds":
        flat_names, flat_ints = _REFUND_RECORD_NAMES, _REFUND_RECORD_INTS
        nested_names, nested_ints = _REFUND_COUPON_NAMES, _REFUND_COUPON_INTS
    elif kind == "refund_coupons":
        flat_names, flat_ints = _REFUND_COUPON_NAMES, _REFUND_COUPON_INTS
        nested_names, nested_ints = frozenset(), frozenset()
    else:
        flat_names, flat_ints = _COUPON_NAMES, _COUPON_INTS
        nested_names, nested_ints = frozenset(), frozenset()
    records: dict[int, dict[str, Any]] = {}
    nested: dict[int, dict[int, dict[str, Any]]] = {}
    for key in [k for k in data if k[-1:].isdigit()]:
        match = _INDEXED_RE.fullmatch(key)
        if match is None:
            continue
        base, n_text, m_text = match.groups()
        if not (n_text.isascii() and (m_text is None or m_text.isascii())):
            continue
        if len(n_text) > 4 or (m_text is not None and len(m_text) > 4):
            continue  # not a record index WeChat sends (at most 50 refunds); kept as an unknown field
        n = int(n_text)
        if m_text is None and base in flat_names:
            value = data.pop(key)
            if base in flat_ints:
                value = optional_wire_int(key, value)
            elif base == "refund_success_time":
                value = parse_wx_datetime(value, key) if value else None
            records.setdefault(n, {"index": n})[base] = value
        elif m_text is not None and base in nested_names:
            value = data.pop(key)
            if base in nested_ints:
                value = optional_wire_int(key, value)
            m = int(m_text)
            nested.setdefault(n, {}).setdefault(m, {"index": m})[base] = value
    if not records and not nested:
        return
    if kind == "refunds":
        for n, coupons in nested.items():
            records.setdefault(n, {"index": n})["coupons"] = [coupons[m] for m in sorted(coupons)]
        data["refunds"] = [records[n] for n in sorted(records)]
    else:
        data["coupons"] = [records[n] for n in sorted(records)]


class UnifiedOrderResponse(WeChatResponse):
    """``/pay/unifiedorder`` answer (spec 5.2): ``prepay_id`` valid 2 hours."""

    device_info: str | None = None
    trade_type: str | None = None
    prepay_id: str | None = None
    code_url: str | None = None


class _PaymentFields(WeChatResponse):
    """The payment detail shared by the order query answer and the payment notification."""

    _time_fields: ClassVar[frozenset[str]] = frozenset({"time_end"})
    _indexed: ClassVar[str] = "coupons"

    device_info: str | None = None
    openid: str | None = None
    is_subscribe: str | None = None
    sub_openid: str | None = None
    sub_is_subscribe: str | None = None
    trade_type: str | None = None
    bank_type: str | None = None
    total_fee: int | None = None
    settlement_total_fee: int | None = None
    fee_type: str | None = None
    cash_fee: int | None = None
    cash_fee_type: str | None = None
    coupon_fee: int | None = None
    coupon_count: int | None = None
    coupons: list[Coupon] = Field(default_factory=list)
    transaction_id: str | None = None
    out_trade_no: str | None = None
    attach: str | None = None
    time_end: datetime | None = None
    version: str | None = None


class OrderQueryResponse(_PaymentFields):
    """``/pay/orderquery`` answer (spec 8.2); the order's state is ``trade_state`` (spec 8.3).

    ``rate`` (x 10^8) is legacy and may be absent (spec 19 #2).
    """

    trade_state: str | None = None
    trade_state_desc: str | None = None
    rate: int | None = None

    @property
    def is_paid(self) -> bool:
        """``trade_state`` is ``SUCCESS`` or ``REFUND`` (a refunded order was paid)."""
        return self.trade_state in ("SUCCESS", "REFUND")


class CloseOrderResponse(WeChatResponse):
    """``/pay/closeorder`` answer (spec 9)."""

    result_msg: str | None = None


class RefundResponse(WeChatResponse):
    """``/secapi/pay/refund`` answer (spec 10.3): the refund is *accepted*; the outcome comes later."""

    _indexed: ClassVar[str] = "refund_coupons"

    device_info: str | None = None
    transaction_id: str | None = None
    out_trade_no: str | None = None
    out_refund_no: str | None = None
    refund_id: str | None = None
    refund_fee: int | None = None
    settlement_refund_fee: int | None = None
    total_fee: int | None = None
    settlement_total_fee: int | None = None
    fee_type: str | None = None
    refund_fee_type: str | None = None
    cash_fee: int | None = None
    cash_fee_type: str | None = None
    cash_refund_fee: int | None = None
    cash_refund_fee_type: str | None = None
    refund_channel: str | None = None
    coupon_refund_fee: int | None = None
    coupon_refund_count: int | None = None
    coupons: list[RefundCoupon] = Field(default_factory=list)


class RefundQueryResponse(WeChatResponse):
    """``/pay/refundquery`` answer (spec 11.2); ``refunds`` holds the ``*_$n`` records in ``$n`` order."""

    _indexed: ClassVar[str] = "refunds"

    device_info: str | None = None
    total_refund_count: int | None = None
    transaction_id: str | None = None
    out_trade_no: str | None = None
    total_fee: int | None = None
    settlement_total_fee: int | None = None
    fee_type: str | None = None
    cash_fee: int | None = None
    cash_fee_type: str | None = None
    refund_count: int | None = None
    refunds: list[RefundRecord] = Field(default_factory=list)


class ExchangeRateResponse(WeChatResponse):
    """``/pay/queryexchagerate`` answer (spec 14): ``rate`` = CNY per major unit x 10^8."""

    fee_type: str | None = None
    rate_time: str | None = None
    rate: int | None = None

    @property
    def rate_date(self) -> date | None:
        """``rate_time`` as a date (its first 8 digits are ``yyyyMMdd``)."""
        return parse_wx_date(self.rate_time[:8], "rate_time") if self.rate_time else None
