"""Typed messages of every operation (spec 4, 5, 8-11, 13, 14): wire names verbatim.

**Requests** hold the business fields of one call plus ``sub_mch_id``/``sub_appid`` (per request
in institution mode). The fields common to every request -- ``appid``, ``mch_id``, ``nonce_str``,
``sign_type``, ``sign`` -- are *not* attributes: :func:`build_request` adds them and signs. Field
rules (spec 16.5) are enforced when a request is built; a violation raises
:class:`~minipay.protocol.FieldError` naming the field (never a pydantic ``ValidationError``).
Unknown wire fields go in ``extra_fields`` (kept, signed, sent); ``from_fields`` (the sandbox's
side) puts unknown received fields there too.

**Responses** are built with ``from_fields(decoded_fields)`` after :func:`check_response`:
amounts become ``int``, ``yyyyMMddHHmmss`` times become China-time datetimes, the ``_$n`` fields
become lists (``coupons``, ``refunds``), and unknown fields are kept (``model_extra``).
``to_fields()`` renders the wire dict again (the sandbox builds its answers with it).

>>> from datetime import datetime, timezone
>>> req = UnifiedOrderRequest(body="Demo Shop-Coffee", out_trade_no="ORDER20240101000001",
...     total_fee=1000, fee_type="HKD", spbill_create_ip="203.0.113.10",
...     notify_url="https://merchant.example.com/wxpay/notify", sub_mch_id="1900000110",
...     sub_appid="wx1234567890abcdef", sub_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
>>> fields = build_request(req, appid="wx8888888888888888", mch_id="1900000109",
...     key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6", nonce="5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
>>> fields["sign"]
'ADB78094AECABDCAEFBBFCCA21AB3DEE'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from minipay.protocol._codes import login_error
from minipay.protocol._errors import FieldError
from minipay.protocol._money import DEFAULT_CURRENCIES
from minipay.protocol._rules import (
    check_amount,
    check_fee_type,
    check_id,
    check_ip,
    check_nonce,
    check_notify_url,
    check_out_refund_no,
    check_out_trade_no,
    check_text,
)
from minipay.protocol._secrets import ApiKey, Secret
from minipay.protocol._signing import MD5, SignType, new_nonce, sign
from minipay.protocol._time import (
    CHINA_TZ,
    format_wx_date,
    format_wx_datetime,
    format_wx_time,
    parse_wx_date,
    parse_wx_datetime,
    parse_wx_time,
    require_aware,
)

__all__ = [
    "COMMON_REQUEST_FIELDS",
    "CloseOrderRequest",
    "CloseOrderResponse",
    "Code2SessionResult",
    "Coupon",
    "DownloadBillRequest",
    "ExchangeRateRequest",
    "ExchangeRateResponse",
    "OrderQueryRequest",
    "OrderQueryResponse",
    "RefundCoupon",
    "RefundQueryRequest",
    "RefundQueryResponse",
    "RefundRecord",
    "RefundRequest",
    "RefundResponse",
    "ReportRequest",
    "UnifiedOrderRequest",
    "UnifiedOrderResponse",
    "WeChatRequest",
    "WeChatResponse",
    "build_request",
]

#: Fields :func:`build_request` adds to every request; never attributes of a request model.
COMMON_REQUEST_FIELDS: Final = frozenset({"appid", "mch_id", "nonce_str", "sign_type", "sign"})

_Date = date  # ExchangeRateRequest has a field named "date"
_INDEXED_KEY_RE: Final = re.compile(r"_[0-9]+$", re.MULTILINE)
_INDEXED_RE: Final = re.compile(r"(.+?)_(\d+)(?:_(\d+))?")


def _field_error(exc: ValidationError) -> FieldError:
    """The first problem of a pydantic ``ValidationError`` as our :class:`FieldError`."""
    first = exc.errors(include_url=False)[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, FieldError):
        return original
    loc = first.get("loc") or ("?",)
    field = str(loc[0]) if loc else "?"
    message = str(original) if isinstance(original, Exception) else first.get("msg", "invalid value")
    return FieldError(field, message)


_MAX_WIRE_DIGITS: Final = 18  # WeChat's Int fields are 64-bit; this also keeps int() far from its 4300-digit limit


def _wire_int(name: str, value: str) -> int | None:
    """An amount/count field of a received message; empty means absent."""
    if value.isdigit() and value.isascii() and len(value) <= _MAX_WIRE_DIGITS:
        return int(value)  # the common case, first
    if value == "":
        return None
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()):
        raise FieldError(name, f"expected an integer, got {value[:40]!r}")
    if len(digits) > _MAX_WIRE_DIGITS:
        raise FieldError(name, f"expected an integer of at most {_MAX_WIRE_DIGITS} digits, got {len(digits)}")
    return int(value)


def _text(value: object) -> str:
    if isinstance(value, bool):
        raise TypeError("bool is not a wire value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return format_wx_time(value)
    if isinstance(value, date):
        return format_wx_date(value)
    if isinstance(value, Secret):
        raise TypeError("a Secret is never put on the wire by to_fields()")
    return str(value)


# --- requests -------------------------------------------------------------------------------------


class WeChatRequest(BaseModel):
    """Base of every request model: frozen, unknown keyword arguments refused (typos fail)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False, str_strip_whitespace=False)

    #: Wire name (``OPERATION_TABLE`` key) of the operation this request belongs to.
    operation: ClassVar[str] = ""
    #: Whether the request carries ``nonce_str`` (the exchange-rate query does not, spec 14).
    has_nonce: ClassVar[bool] = True
    #: Fields that are ``datetime`` on the model and ``yyyyMMddHHmmss`` China time on the wire.
    _time_fields: ClassVar[frozenset[str]] = frozenset()
    _date_fields: ClassVar[frozenset[str]] = frozenset()

    extra_fields: dict[str, str] = Field(default_factory=dict)

    if not TYPE_CHECKING:

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise _field_error(exc) from None

    @field_validator("extra_fields")
    @classmethod
    def _check_extra(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name in COMMON_REQUEST_FIELDS or name in cls.model_fields:
                raise FieldError(name, "set it as an attribute (or via build_request), not in extra_fields")
            if not isinstance(text, str):
                raise FieldError(name, "extra_fields values must be strings")
        return value

    def to_fields(self) -> dict[str, str]:
        """The business fields as wire strings (no ``appid``/``mch_id``/``nonce_str``/``sign``)."""
        out: dict[str, str] = {}
        for name, value in self.__dict__.items():
            if value is None or name == "extra_fields":
                continue
            out[name] = value if type(value) is str else _text(value)
        out.update(self.extra_fields)
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Self:
        """Parse a received request (the sandbox's side) and enforce the same field rules.

        The common fields (``appid``, ``mch_id``, ``nonce_str``, ``sign_type``, ``sign``) are
        skipped; unknown fields land in ``extra_fields``; empty values count as absent.
        """
        known = cls.model_fields
        data: dict[str, Any] = {}
        extra: dict[str, str] = {}
        for name, value in fields.items():
            if name in COMMON_REQUEST_FIELDS or value == "":
                continue
            if name in known and name != "extra_fields":
                data[name] = value
            else:
                extra[name] = value
        for name in cls._time_fields & data.keys():
            data[name] = parse_wx_time(data[name], name)
        for name in cls._date_fields & data.keys():
            data[name] = parse_wx_date(data[name], name)
        for name, info in known.items():
            if name in data and info.annotation in (int, "int", int | None, "int | None"):
                data[name] = _wire_int(name, data[name])
        if extra:
            data["extra_fields"] = extra
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _field_error(exc) from None


def _positive(name: str, value: object) -> int:
    return check_amount(value, name)  # type: ignore[arg-type]


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise FieldError(name, f"expected a timezone-aware datetime, got {type(value).__name__}")
    return require_aware(value, name)  # converted to China time when rendered


class UnifiedOrderRequest(WeChatRequest):
    """``/pay/unifiedorder`` (spec 5.1), Mini Program payment in institution mode.

    Rules: ``out_trade_no`` 1-32 of ``[0-9A-Za-z_-|*]``; ``total_fee`` a positive ``int``;
    ``fee_type`` an upper-case known currency; ``body``/``attach`` <= 127 characters without 4-byte
    UTF-8; ``notify_url`` an absolute http(s) URL without query (loopback allowed here: the SDK
    checks public reachability with ``check_notify_url`` for real WeChat); ``time_start``/
    ``time_expire`` timezone-aware datetimes only (sent in China time). Institution rule: with
    ``sub_appid``, ``sub_openid`` is required and ``openid`` refused; without ``sub_appid``,
    ``sub_openid`` is refused.
    """

    operation: ClassVar[str] = "unifiedorder"
    _time_fields: ClassVar[frozenset[str]] = frozenset({"time_start", "time_expire"})

    sub_mch_id: str
    sub_appid: str | None = None
    body: str
    out_trade_no: str
    total_fee: int
    fee_type: str
    spbill_create_ip: str
    notify_url: str
    trade_type: Literal["JSAPI", "NATIVE", "APP", "MWEB"] = "JSAPI"
    sub_openid: str | None = None
    openid: str | None = None
    device_info: str | None = None
    detail: str | None = None
    attach: str | None = None
    time_start: datetime | None = None
    time_expire: datetime | None = None
    goods_tag: str | None = None
    limit_pay: str | None = None
    product_id: str | None = None
    version: str | None = None

    @field_validator("sub_mch_id", "sub_appid", "device_info", "goods_tag", "limit_pay", "product_id", "version")
    @classmethod
    def _ids(cls, value: str, info: Any) -> str:
        return check_id(value, info.field_name)

    @field_validator("sub_openid", "openid")
    @classmethod
    def _openids(cls, value: str, info: Any) -> str:
        return check_id(value, info.field_name, 128)

    @field_validator("body", "attach")
    @classmethod
    def _texts(cls, value: str, info: Any) -> str:
        return check_text(value, info.field_name, 127)

    @field_validator("detail")
    @classmethod
    def _detail(cls, value: str) -> str:
        return check_text(value, "detail", 6000)

    @field_validator("out_trade_no")
    @classmethod
    def _out_trade_no(cls, value: str) -> str:
        return check_out_trade_no(value)

    @field_validator("total_fee", mode="before")
    @classmethod
    def _amount(cls, value: object) -> int:
        return _positive("total_fee", value)

    @field_validator("fee_type")
    @classmethod
    def _fee_type(cls, value: str) -> str:
        return check_fee_type(value, "fee_type", DEFAULT_CURRENCIES)

    @field_validator("spbill_create_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        return check_ip(value)

    @field_validator("notify_url")
    @classmethod
    def _notify_url(cls, value: str) -> str:
        return check_notify_url(value, allow_local=True)

    @field_validator("time_start", "time_expire", mode="before")
    @classmethod
    def _times(cls, value: object, info: Any) -> datetime:
        return _aware(info.field_name, value)

    @model_validator(mode="after")
    def _institution_rules(self) -> Self:
        if self.sub_appid is not None:
            if self.openid is not None:
                raise FieldError("openid", "with sub_appid, send sub_openid (the Mini Program's OpenID), not openid")
            if self.trade_type == "JSAPI" and self.sub_openid is None:
                raise FieldError("sub_openid", "required with sub_appid for JSAPI / Mini Program payment")
        else:
            if self.sub_openid is not None:
                raise FieldError("sub_openid", "requires sub_appid (the Mini Program's AppID)")
            if self.trade_type == "JSAPI" and self.openid is None:
                raise FieldError("sub_openid", "JSAPI needs sub_appid + sub_openid (or openid without sub_appid)")
        if self.time_start is not None and self.time_expire is not None and self.time_expire <= self.time_start:
            raise FieldError("time_expire", "must be after time_start")
        return self


class _OrderRef(WeChatRequest):
    sub_mch_id: str
    sub_appid: str | None = None

    @field_validator("sub_mch_id", "sub_appid")
    @classmethod
    def _ids(cls, value: str, info: Any) -> str:
        return check_id(value, info.field_name)


class OrderQueryRequest(_OrderRef):
    """``/pay/orderquery`` (spec 8.1): exactly one of ``transaction_id`` / ``out_trade_no``."""

    operation: ClassVar[str] = "orderquery"

    transaction_id: str | None = None
    out_trade_no: str | None = None

    @field_validator("transaction_id")
    @classmethod
    def _transaction_id(cls, value: str) -> str:
        return check_id(value, "transaction_id")

    @field_validator("out_trade_no")
    @classmethod
    def _out_trade_no(cls, value: str) -> str:
        return check_out_trade_no(value)

    @model_validator(mode="after")
    def _one_id(self) -> Self:
        if (self.transaction_id is None) == (self.out_trade_no is None):
            raise FieldError("out_trade_no", "give exactly one of transaction_id and out_trade_no")
        return self


class CloseOrderRequest(_OrderRef):
    """``/pay/closeorder`` (spec 9): by ``out_trade_no`` only."""

    operation: ClassVar[str] = "closeorder"

    out_trade_no: str

    @field_validator("out_trade_no")
    @classmethod
    def _out_trade_no(cls, value: str) -> str:
        return check_out_trade_no(value)


class RefundRequest(_OrderRef):
    """``/secapi/pay/refund`` (spec 10.2): one of ``transaction_id`` / ``out_trade_no``.

    ``refund_fee`` <= ``total_fee``, both positive ints; ``refund_fee_type`` a known currency (it
    must equal the order's ``fee_type``, which only the caller knows).
    """

    operation: ClassVar[str] = "refund"

    transaction_id: str | None = None
    out_trade_no: str | None = None
    out_refund_no: str
    total_fee: int
    refund_fee: int
    refund_fee_type: str | None = None
    refund_desc: str | None = None
    refund_account: str | None = None
    notify_url: str | None = None
    op_user_id: str | None = None
    device_info: str | None = None

    @field_validator("transaction_id", "refund_account", "op_user_id", "device_info")
    @classmethod
    def _other_ids(cls, value: str, info: Any) -> str:
        return check_id(value, info.field_name)

    @field_validator("out_trade_no")
    @classmethod
    def _out_trade_no(cls, value: str) -> str:
        return check_out_trade_no(value)

    @field_validator("out_refund_no")
    @classmethod
    def _out_refund_no(cls, value: str) -> str:
        return check_out_refund_no(value)

    @field_validator("total_fee", "refund_fee", mode="before")
    @classmethod
    def _amounts(cls, value: object, info: Any) -> int:
        return _positive(info.field_name, value)

    @field_validator("refund_fee_type")
    @classmethod
    def _fee_type(cls, value: str) -> str:
        return check_fee_type(value, "refund_fee_type")

    @field_validator("refund_desc")
    @classmethod
    def _desc(cls, value: str) -> str:
        return check_text(value, "refund_desc", 80)

    @field_validator("notify_url")
    @classmethod
    def _notify_url(cls, value: str) -> str:
        return check_notify_url(value, allow_local=True)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.transaction_id is None and self.out_trade_no is None:
            raise FieldError("out_trade_no", "give transaction_id or out_trade_no")
        if self.refund_fee > self.total_fee:
            raise FieldError("refund_fee", f"{self.refund_fee} exceeds total_fee {self.total_fee}")
        return self


class RefundQueryRequest(_OrderRef):
    """``/pay/refundquery`` (spec 11.1): one of four identifiers; ``offset`` pages past 10 refunds."""

    operation: ClassVar[str] = "refundquery"

    transaction_id: str | None = None
    out_trade_no: str | None = None
    out_refund_no: str | None = None
    refund_id: str | None = None
    offset: int | None = None

    @field_validator("transaction_id", "refund_id")
    @classmethod
    def _other_ids(cls, value: str, info: Any) -> str:
        return check_id(value, info.field_name)

    @field_validator("out_trade_no")
    @classmethod
    def _out_trade_no(cls, value: str) -> str:
        return check_out_trade_no(value)

    @field_validator("out_refund_no")
    @classmethod
    def _out_refund_no(cls, value: str) -> str:
        return check_out_refund_no(value)

    @field_validator("offset", mode="before")
    @classmethod
    def _offset(cls, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FieldError("offset", "must be a non-negative int")
        return value

    @model_validator(mode="after")
    def _one_id(self) -> Self:
        if not (self.transaction_id or self.out_trade_no or self.out_refund_no or self.refund_id):
            raise FieldError("out_refund_no", "give one of refund_id, out_refund_no, transaction_id, out_trade_no")
        return self


class DownloadBillRequest(WeChatRequest):
    """``/pay/downloadbill`` (spec 13.1). ``bill_date`` a China-time day (``date``, or an aware datetime)."""

    operation: ClassVar[str] = "downloadbill"
    _date_fields: ClassVar[frozenset[str]] = frozenset({"bill_date"})

    sub_mch_id: str | None = None
    bill_date: date
    bill_type: Literal["ALL", "SUCCESS", "REFUND", "RECHARGE_REFUND"] = "ALL"
    tar_type: Literal["GZIP"] | None = None

    @field_validator("sub_mch_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return check_id(value, "sub_mch_id")

    @field_validator("bill_date", mode="before")
    @classmethod
    def _bill_date(cls, value: object) -> date:
        return _day("bill_date", value)


def _day(name: str, value: object) -> date:
    if isinstance(value, datetime):
        return require_aware(value, name).astimezone(CHINA_TZ).date()
    if isinstance(value, date):
        return value
    raise FieldError(name, f"expected a date, got {type(value).__name__}")


class ExchangeRateRequest(WeChatRequest):
    """``/pay/queryexchagerate`` (spec 14): no ``nonce_str``."""

    operation: ClassVar[str] = "queryexchagerate"
    has_nonce: ClassVar[bool] = False
    _date_fields: ClassVar[frozenset[str]] = frozenset({"date"})

    sub_mch_id: str | None = None
    fee_type: str
    date: _Date

    @field_validator("sub_mch_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return check_id(value, "sub_mch_id")

    @field_validator("fee_type")
    @classmethod
    def _fee_type(cls, value: str) -> str:
        return check_fee_type(value)

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: object) -> _Date:
        return _day("date", value)


class ReportRequest(WeChatRequest):
    """``/payitil/report`` (spec 15), single-call form; every field optional text."""

    operation: ClassVar[str] = "report"

    interface_url: str
    execute_time_: int | None = None
    return_code: str | None = None
    return_msg: str | None = None
    result_code: str | None = None
    err_code: str | None = None
    err_code_des: str | None = None
    out_trade_no: str | None = None
    user_ip: str | None = None
    time: str | None = None
    device_info: str | None = None


def build_request(
    request: WeChatRequest,
    *,
    appid: str,
    mch_id: str,
    key: str | ApiKey,
    sign_type: SignType | str = MD5,
    nonce: str | None = None,
) -> dict[str, str]:
    """The complete signed wire fields of ``request``: ``appid``, ``mch_id``, ``nonce_str``,
    the business fields, ``sign_type`` (only when not MD5, as in the spec 3.4 vectors) and ``sign``.
    A given ``nonce`` (fixed vectors, tests) must be 1-32 letters or digits.

    Pass the result to :func:`~minipay.protocol.encode_xml`.
    """
    fields: dict[str, str] = {"appid": check_id(appid, "appid"), "mch_id": check_id(mch_id, "mch_id")}
    if request.has_nonce:
        fields["nonce_str"] = new_nonce() if nonce is None else check_nonce(nonce)
    fields.update(request.to_fields())
    if sign_type != MD5:
        fields["sign_type"] = sign_type
    fields["sign"] = sign(fields, key, sign_type)
    return fields


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
            data[name] = _wire_int(name, data[name])
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
            raise _field_error(exc) from None

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
                out[name] = _text(value)
        if self.model_extra:
            for name, value in self.model_extra.items():
                out[name] = value if isinstance(value, str) else _text(value)
        return out

    @property
    def extra(self) -> dict[str, str]:
        """Received fields this model does not name (e.g. a new WeChat field), as strings."""
        return {k: v if isinstance(v, str) else _text(v) for k, v in (self.model_extra or {}).items()}


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
                out[f"{name}{tail}"] = _text(value)
        for name, value in (record.model_extra or {}).items():
            out[f"{name}{tail}"] = value if isinstance(value, str) else _text(value)


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
                value = _wire_int(key, value)
            elif base == "refund_success_time":
                value = parse_wx_datetime(value, key) if value else None
            records.setdefault(n, {"index": n})[base] = value
        elif m_text is not None and base in nested_names:
            value = data.pop(key)
            if base in nested_ints:
                value = _wire_int(key, value)
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


# --- Mini Program login ---------------------------------------------------------------------------


class Code2SessionResult(BaseModel):
    """A successful ``jscode2session`` answer (spec 4); ``openid`` is the ``sub_openid``.

    ``session_key`` is a :class:`~minipay.protocol.Secret` (masked in every repr).

    >>> r = Code2SessionResult.from_json({"openid": "oUpF8u", "session_key": "tiihtNczf5v6AKRyjwEUhQ=="})
    >>> r
    Code2SessionResult(openid='oUpF8u', session_key=Secret('**********'), unionid=None)
    """

    model_config = ConfigDict(frozen=True, extra="allow", arbitrary_types_allowed=True)

    openid: str
    session_key: Secret
    unionid: str | None = None

    @field_validator("session_key", mode="before")
    @classmethod
    def _secret(cls, value: object) -> Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise FieldError("session_key", "must be a string")
        return Secret(value)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Code2SessionResult:
        """Judge the decoded JSON: a non-zero ``errcode`` raises :class:`~minipay.protocol.LoginError`
        (``retryable`` from ``LOGIN_ERRCODES``); a success without ``openid`` is a :class:`FieldError`."""
        errcode = data.get("errcode", 0)
        if errcode not in (0, None, "0"):
            try:
                code = int(str(errcode))
            except ValueError:
                code = -1
            raise login_error(code, str(data.get("errmsg", "")))
        payload = {k: v for k, v in data.items() if k not in ("errcode", "errmsg")}
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise _field_error(exc) from None
