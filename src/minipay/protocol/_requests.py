"""Typed requests of every operation (spec 5, 8-11, 13-15): wire names verbatim.

A request holds the business fields of one call plus ``sub_mch_id``/``sub_appid`` (per request in
institution mode). The fields common to every request -- ``appid``, ``mch_id``, ``nonce_str``,
``sign_type``, ``sign`` -- are *not* attributes: :func:`build_request` adds them and signs. Field
rules (spec 16.5) are enforced when a request is built; a violation raises
:class:`~minipay.protocol.FieldError` naming the field (never a pydantic ``ValidationError``).
Unknown wire fields go in ``extra_fields`` (kept, signed, sent); ``from_fields`` (the sandbox's
side) puts unknown received fields there too.

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

from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from minipay.protocol._errors import FieldError
from minipay.protocol._fields import field_error, optional_wire_int, wire_text
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
from minipay.protocol._secrets import ApiKey
from minipay.protocol._signing import MD5, SignType, new_nonce, sign
from minipay.protocol._time import (
    CHINA_TZ,
    parse_wx_date,
    parse_wx_time,
    require_aware,
)

__all__ = [
    "COMMON_REQUEST_FIELDS",
    "CloseOrderRequest",
    "DownloadBillRequest",
    "ExchangeRateRequest",
    "OrderQueryRequest",
    "RefundQueryRequest",
    "RefundRequest",
    "ReportRequest",
    "UnifiedOrderRequest",
    "WeChatRequest",
    "build_request",
]

#: Fields :func:`build_request` adds to every request; never attributes of a request model.
COMMON_REQUEST_FIELDS: Final = frozenset({"appid", "mch_id", "nonce_str", "sign_type", "sign"})

_Date = date  # ExchangeRateRequest has a field named "date"


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
                raise field_error(exc) from None

    # The merchant's own numbers follow one rule in every request that carries them.
    @field_validator("out_trade_no", check_fields=False)
    @classmethod
    def _out_trade_no(cls, value: str) -> str:
        return check_out_trade_no(value)

    @field_validator("out_refund_no", check_fields=False)
    @classmethod
    def _out_refund_no(cls, value: str) -> str:
        return check_out_refund_no(value)

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
            out[name] = value if type(value) is str else wire_text(value)
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
                data[name] = optional_wire_int(name, data[name])
        if extra:
            data["extra_fields"] = extra
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise field_error(exc) from None


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
        return check_text(value, info.field_name, 127, utf8_bytes=True)

    @field_validator("detail")
    @classmethod
    def _detail(cls, value: str) -> str:
        return check_text(value, "detail", 6000, utf8_bytes=True)

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

    @model_validator(mode="after")
    def _one_id(self) -> Self:
        if (self.transaction_id is None) == (self.out_trade_no is None):
            raise FieldError("out_trade_no", "give exactly one of transaction_id and out_trade_no")
        return self


class CloseOrderRequest(_OrderRef):
    """``/pay/closeorder`` (spec 9): by ``out_trade_no`` only."""

    operation: ClassVar[str] = "closeorder"

    out_trade_no: str


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
