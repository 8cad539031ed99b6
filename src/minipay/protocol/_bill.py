"""The downloaded bill (spec 13.2): a tolerant parser and the English-layout renderer.

Shape (WeChat's): a header line of column names; one line per record with every cell prefixed by a
back-quote; a summary header line; one summary line (back-quoted). Amounts are decimal *major*
units (``10.50``) and become ``int`` minor units here (:func:`~minipay.protocol.parse_major`).
Columns are found by **header name, not position** (the Global column list is unconfirmed, spec
19 #9): each column has an English name (ours; the first sixteen follow the Global institution
guide) and the documented Chinese names as aliases, so the documented layout (Chinese headers,
a column set per ``bill_type``, the Chinese summary, fees to five decimals) and the English one
both parse. Unknown columns are kept in ``BillRow.extra``. A gzip body (``tar_type=GZIP``) is
accepted; the ``No Bill Exist`` answer is an empty bill.

English columns rendered by :func:`render_bill`, in order (``BILL_COLUMNS``): Transaction time,
Official account ID, Vendor ID, Sub vendor ID, Device ID, WeChat order number, Vendor order number,
User tag, Transaction type, Transaction status, Payment bank, Currency type, Total amount, Coupon
amount, WeChat refund number, Vendor refund number, Refund amount, Coupon refund amount, Refund
type, Refund status, Product name, Vendor's data package, Fee, Rate, Sub app ID, Cash currency type,
Cash amount, Exchange rate.
Summary (``SUMMARY_COLUMNS``): Total transactions, Total amount, Total refund amount,
Total coupon refund amount, Total fee amount.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from minipay.protocol._errors import CommunicationError, FieldError
from minipay.protocol._money import (
    DEFAULT_CURRENCIES,
    PLAIN_DECIMAL_RE,
    RATE_SCALE,
    CurrencyTable,
    format_major,
    parse_major,
)
from minipay.protocol._time import format_wx_datetime, parse_wx_datetime
from minipay.protocol._xml import decode_xml

__all__ = [
    "BILL_COLUMNS",
    "DEFAULT_MAX_BILL_BYTES",
    "SUMMARY_COLUMNS",
    "Bill",
    "BillRow",
    "BillSummary",
    "parse_bill",
    "render_bill",
]

_Kind = Literal["text", "time", "amount", "cash_amount", "rate", "fee"]

# (attribute, English header, Chinese aliases, kind). "amount" is in fee_type, "cash_amount" in cash_fee_type.
_COLUMNS: Final[tuple[tuple[str, str, tuple[str, ...], _Kind], ...]] = (
    ("transaction_time", "Transaction time", ("交易时间",), "time"),
    ("appid", "Official account ID", ("公众账号ID",), "text"),
    ("mch_id", "Vendor ID", ("商户号",), "text"),
    ("sub_mch_id", "Sub vendor ID", ("子商户号", "特约商户号"), "text"),
    ("device_info", "Device ID", ("设备号",), "text"),
    ("transaction_id", "WeChat order number", ("微信订单号",), "text"),
    ("out_trade_no", "Vendor order number", ("商户订单号",), "text"),
    ("openid", "User tag", ("用户标识",), "text"),
    ("trade_type", "Transaction type", ("交易类型",), "text"),
    ("trade_state", "Transaction status", ("交易状态",), "text"),
    ("bank_type", "Payment bank", ("付款银行",), "text"),
    ("fee_type", "Currency type", ("货币种类",), "text"),
    ("total_fee", "Total amount", ("总金额", "应结订单金额"), "amount"),
    ("coupon_fee", "Coupon amount", ("代金券金额", "代金券或立减优惠金额"), "amount"),
    ("refund_id", "WeChat refund number", ("微信退款单号",), "text"),
    ("out_refund_no", "Vendor refund number", ("商户退款单号",), "text"),
    ("refund_fee", "Refund amount", ("退款金额",), "amount"),
    (
        "coupon_refund_fee",
        "Coupon refund amount",
        ("代金券退款金额", "充值券退款金额", "代金券或立减优惠退款金额"),
        "amount",
    ),
    ("refund_channel", "Refund type", ("退款类型",), "text"),
    ("refund_status", "Refund status", ("退款状态",), "text"),
    ("body", "Product name", ("商品名称",), "text"),
    ("attach", "Vendor's data package", ("商户数据包",), "text"),
    ("service_fee", "Fee", ("手续费",), "fee"),
    ("fee_rate", "Rate", ("费率",), "text"),
    ("sub_appid", "Sub app ID", ("子商户公众账号ID",), "text"),
    ("cash_fee_type", "Cash currency type", ("用户支付币种",), "text"),
    ("cash_fee", "Cash amount", ("用户支付金额",), "cash_amount"),
    ("rate", "Exchange rate", ("汇率",), "rate"),
)
#: Columns the parser also knows but the English layout does not render: the domestic REFUND
#: bill's refund times, the newer domestic amount columns, and the Global settlement currency.
_EXTRA_COLUMNS: Final[tuple[tuple[str, str, tuple[str, ...], _Kind], ...]] = (
    ("refund_request_time", "Refund request time", ("退款申请时间",), "time"),
    ("refund_success_time", "Refund success time", ("退款成功时间",), "time"),
    ("order_fee", "Order amount", ("订单金额",), "amount"),
    ("requested_refund_fee", "Requested refund amount", ("申请退款金额",), "amount"),
    ("fee_rate_remark", "Rate remark", ("费率备注",), "text"),
    ("settlement_fee_type", "Settlement currency type", ("结算币种",), "text"),
)
_SUMMARY: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("transaction_count", "Total transactions", ("总交易单数",)),
    ("total_fee", "Total amount", ("总交易额", "应结订单总金额")),
    ("refund_fee", "Total refund amount", ("总退款金额", "退款总金额")),
    (
        "coupon_refund_fee",
        "Total coupon refund amount",
        ("总代金券退款金额", "总代金券或立减优惠退款金额", "充值券退款总金额", "企业红包退款总金额"),
    ),
    ("service_fee", "Total fee amount", ("手续费总金额", "总手续费")),
)

#: The rendered header, in order.
BILL_COLUMNS: Final[tuple[str, ...]] = tuple(c[1] for c in _COLUMNS)
SUMMARY_COLUMNS: Final[tuple[str, ...]] = tuple(c[1] for c in _SUMMARY)

_BY_HEADER: Final[dict[str, tuple[str, _Kind]]] = {
    name: (attr, kind) for attr, english, aliases, kind in (*_COLUMNS, *_EXTRA_COLUMNS) for name in (english, *aliases)
}
_SUMMARY_BY_HEADER: Final[dict[str, str]] = {
    name: attr for attr, english, aliases in _SUMMARY for name in (english, *aliases)
}
_GZIP_MAGIC: Final = b"\x1f\x8b"
#: Cap on a (decompressed) bill: a gzip bomb must not exhaust memory.
DEFAULT_MAX_BILL_BYTES: Final = 64 * 1024 * 1024


class BillRow(BaseModel):
    """One record of the bill; amounts in minor units of ``fee_type`` (``cash_fee``: ``cash_fee_type``).

    ``rate`` is CNY per major unit x 10^8 (rendered as a decimal such as ``0.92000000``).
    """

    model_config = ConfigDict(frozen=True)

    transaction_time: datetime | None = None
    appid: str | None = None
    mch_id: str | None = None
    sub_mch_id: str | None = None
    device_info: str | None = None
    transaction_id: str | None = None
    out_trade_no: str | None = None
    openid: str | None = None
    trade_type: str | None = None
    trade_state: str | None = None
    bank_type: str | None = None
    fee_type: str | None = None
    total_fee: int | None = None
    coupon_fee: int | None = None
    refund_id: str | None = None
    out_refund_no: str | None = None
    refund_fee: int | None = None
    coupon_refund_fee: int | None = None
    refund_channel: str | None = None
    refund_status: str | None = None
    body: str | None = None
    attach: str | None = None
    service_fee: int | None = None
    fee_rate: str | None = None
    sub_appid: str | None = None
    cash_fee_type: str | None = None
    cash_fee: int | None = None
    rate: int | None = None
    #: The fee in major units when the bill states it finer than the currency's minor unit (the
    #: documented layout gives five decimals); ``service_fee`` is then it rounded half up.
    #: ``None`` when ``service_fee`` is exact.
    service_fee_major: Decimal | None = None
    refund_request_time: datetime | None = None
    refund_success_time: datetime | None = None
    order_fee: int | None = None
    requested_refund_fee: int | None = None
    fee_rate_remark: str | None = None
    settlement_fee_type: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)


class BillSummary(BaseModel):
    """The summary line. Amounts are minor units of ``currency`` when the bill has a single
    currency; with mixed currencies they are ``None`` and the raw text is in ``raw``."""

    model_config = ConfigDict(frozen=True)

    transaction_count: int
    total_fee: int | None = None
    refund_fee: int | None = None
    coupon_refund_fee: int | None = None
    service_fee: int | None = None
    currency: str | None = None
    #: ``Total fee amount`` in major units when finer than the minor unit (as ``BillRow.service_fee_major``).
    service_fee_major: Decimal | None = None
    raw: dict[str, str] = Field(default_factory=dict)


class Bill(BaseModel):
    """A parsed bill: ``rows`` in file order, ``summary`` (``None`` for an empty bill), ``headers`` as read."""

    model_config = ConfigDict(frozen=True)

    rows: list[BillRow] = Field(default_factory=list)
    summary: BillSummary | None = None
    headers: list[str] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows


def _cell(text: str) -> str:
    text = text.strip()
    return text[1:] if text.startswith("`") else text


def _is_data(cells: Sequence[str]) -> bool:
    return any(c.strip().startswith("`") for c in cells)


def _rate(text: str) -> int:
    if not PLAIN_DECIMAL_RE.fullmatch(text) or text.startswith("-"):
        raise FieldError("rate", f"not a decimal exchange rate: {text!r}")
    value = Decimal(text) * RATE_SCALE
    if value != value.to_integral_value():
        raise FieldError("rate", f"exchange rate {text!r} has more than 8 decimal places")
    return int(value)


def _decompress(body: bytes, max_bytes: int) -> bytes:
    """Every member of a gzip stream (as ``gzip -d`` reads them), at most ``max_bytes`` in all.

    One ``decompressobj`` stops at the end of the first member and leaves the rest in
    ``unused_data``: a second member (or trailing junk) would otherwise be dropped in silence.
    """
    out = bytearray()
    rest = body
    while True:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += decompressor.decompress(rest, max_bytes + 1 - len(out))  # >= 1: 0 would mean no limit
        except zlib.error as exc:
            raise FieldError("bill", f"not a valid gzip stream: {exc}") from None
        if len(out) > max_bytes or decompressor.unconsumed_tail:
            raise FieldError("bill", f"decompressed bill exceeds {max_bytes} bytes")
        if not decompressor.eof:  # a cut stream decodes to a plausible prefix: never a shorter bill
            raise FieldError("bill", "truncated gzip stream")
        rest = decompressor.unused_data
        if not rest.strip(b"\x00"):  # gzip tolerates zero padding after the last member
            return bytes(out)


def parse_bill(
    body: bytes | str,
    *,
    default_currency: str = "CNY",
    table: CurrencyTable = DEFAULT_CURRENCIES,
    max_bytes: int = DEFAULT_MAX_BILL_BYTES,
) -> Bill:
    """Parse a downloaded bill (plain or gzip) into typed rows and the summary.

    An XML body is WeChat's failure answer: ``No Bill Exist`` gives an empty :class:`Bill`, any
    other raises :class:`~minipay.protocol.CommunicationError` (``operation="downloadbill"``).
    Amounts use the row's ``Currency type`` (``default_currency`` when the column is absent).
    Raises :class:`~minipay.protocol.FieldError` for a malformed amount, time, CSV or gzip stream
    (:class:`~minipay.protocol.XMLError` for a failure answer the hardened codec refuses).
    """
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if raw[:2] == _GZIP_MAGIC:
        raw = _decompress(raw, max_bytes)
    if len(raw) > max_bytes:
        raise FieldError("bill", f"bill exceeds {max_bytes} bytes")
    stripped = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<xml"):
        fields = decode_xml(stripped)
        message = fields.get("return_msg", "")
        if message.strip().lower() == "no bill exist":
            return Bill()
        raise CommunicationError(
            f"return_code={fields.get('return_code', '')}: {message}",
            operation="downloadbill",
            err_code=fields.get("error_code", "") or fields.get("err_code", ""),
            err_code_des=message,
            fields=fields,
        )
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FieldError("bill", f"not UTF-8 (byte {exc.start})") from None
    try:
        # strict: an unterminated quote would otherwise swallow every later line into one cell,
        # and the bill would silently lose rows.
        lines = [cells for cells in csv.reader(io.StringIO(text), strict=True) if any(c.strip() for c in cells)]
    except csv.Error as exc:  # also a cell over the csv module's field size limit (128 KiB)
        raise FieldError("bill", f"malformed CSV: {exc}") from None
    if not lines:
        return Bill()
    headers = [c.strip() for c in lines[0]]
    rows: list[BillRow] = []
    index = 1
    while index < len(lines) and _is_data(lines[index]):
        rows.append(_row(headers, lines[index], default_currency, table))
        index += 1
    summary = None
    if index + 1 < len(lines):
        summary = _summary([c.strip() for c in lines[index]], lines[index + 1], rows, default_currency, table)
    return Bill(rows=rows, summary=summary, headers=headers)


def _row(headers: list[str], cells: list[str], default_currency: str, table: CurrencyTable) -> BillRow:
    values: dict[str, str] = {}
    extra: dict[str, str] = {}
    kinds: dict[str, _Kind] = {}
    for position, header in enumerate(headers):
        value = _cell(cells[position]) if position < len(cells) else ""
        known = _BY_HEADER.get(header)
        if known is None:
            if header:
                extra[header] = value
            continue
        attr, kind = known
        values[attr] = value
        kinds[attr] = kind
    currency = values.get("fee_type") or default_currency
    cash_currency = values.get("cash_fee_type") or "CNY"
    data: dict[str, object] = {}
    for attr, value in values.items():
        if value == "":
            continue
        kind = kinds[attr]
        if kind == "time":
            data[attr] = parse_wx_datetime(value, attr)
        elif kind == "amount":
            data[attr] = _amount(value, currency, attr, table)
        elif kind == "cash_amount":
            data[attr] = _amount(value, cash_currency, attr, table)
        elif kind == "rate":
            data[attr] = _rate(value)
        elif kind == "fee":
            data[attr], data["service_fee_major"] = _fee(value, currency, attr, table)
        else:
            data[attr] = value
    if extra:
        data["extra"] = extra
    return BillRow.model_validate(data)


def _amount(text: str, currency: str, field: str, table: CurrencyTable) -> int:
    try:
        return parse_major(text, currency, table)
    except FieldError as exc:
        raise FieldError(field, exc.reason) from None


#: Decimal places a fee may carry (the documented layout uses five).
_MAX_FEE_PLACES: Final = 8


def _fee(text: str, currency: str, field: str, table: CurrencyTable) -> tuple[int, Decimal | None]:
    """A fee in major units, finer than the currency's minor unit allowed: (minor units rounded
    half up, the exact value when rounding changed it, else ``None``)."""
    stripped = text.strip()
    if not PLAIN_DECIMAL_RE.fullmatch(stripped):
        raise FieldError(field, f"not a plain decimal amount: {text[:40]!r}")
    exact = Decimal(stripped)
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _MAX_FEE_PLACES:
        raise FieldError(field, f"{text!r} has more than {_MAX_FEE_PLACES} decimal places")
    scaled = exact.scaleb(table.exponent(currency))
    minor = scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(minor), (None if minor == scaled else exact)


def _summary(
    headers: list[str], cells: list[str], rows: list[BillRow], default_currency: str, table: CurrencyTable
) -> BillSummary:
    raw = {h: _cell(cells[i]) if i < len(cells) else "" for i, h in enumerate(headers) if h}
    currencies = {r.fee_type or default_currency for r in rows} or {default_currency}
    currency = next(iter(currencies)) if len(currencies) == 1 else None
    data: dict[str, object] = {"raw": raw, "currency": currency, "transaction_count": 0}
    for header, value in raw.items():
        attr = _SUMMARY_BY_HEADER.get(header)
        if attr is None or value == "":
            continue
        if attr == "transaction_count":
            if not (value.isascii() and value.isdigit()) or len(value) > 18:
                raise FieldError("transaction_count", f"not a count: {value[:40]!r}")
            data[attr] = int(value)
        elif currency is not None and attr == "service_fee":
            data[attr], data["service_fee_major"] = _fee(value, currency, attr, table)
        elif currency is not None:
            data[attr] = _amount(value, currency, attr, table)
    return BillSummary.model_validate(data)


def render_bill(
    rows: Iterable[BillRow],
    *,
    summary: BillSummary | None = None,
    table: CurrencyTable = DEFAULT_CURRENCIES,
    default_currency: str = "CNY",
) -> bytes:
    """Render rows in WeChat's bill shape (the sandbox's ``/pay/downloadbill`` body), UTF-8, CRLF.

    Without ``summary`` it is computed from the rows (their currency must be single). No rows
    renders the header and a zero summary; the sandbox answers ``No Bill Exist`` instead when
    it has nothing for the day (spec 13.2).
    """
    rows = list(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(BILL_COLUMNS)
    for row in rows:
        currency = row.fee_type or default_currency
        cells = []
        for attr, _english, _aliases, kind in _COLUMNS:
            if attr == "service_fee" and row.service_fee_major is not None:
                cells.append(f"`{row.service_fee_major:f}")
                continue
            value = getattr(row, attr)
            cells.append("`" + _render_value(value, kind, currency, row.cash_fee_type or "CNY", table))
        writer.writerow(cells)
    if summary is None:
        summary = _compute_summary(rows, default_currency)
    writer.writerow(SUMMARY_COLUMNS)
    currency = summary.currency or default_currency
    summary_cells = [str(summary.transaction_count)]
    for attr in ("total_fee", "refund_fee", "coupon_refund_fee", "service_fee"):
        value = getattr(summary, attr)
        if attr == "service_fee" and summary.service_fee_major is not None:
            summary_cells.append(f"{summary.service_fee_major:f}")
        else:
            summary_cells.append(format_major(value, currency, table) if value is not None else "")
    writer.writerow(["`" + c for c in summary_cells])
    return out.getvalue().encode("utf-8")


def _render_value(value: object, kind: _Kind, currency: str, cash_currency: str, table: CurrencyTable) -> str:
    if value is None:
        return ""
    if kind == "time" and isinstance(value, datetime):
        return format_wx_datetime(value)
    if kind in ("amount", "fee") and isinstance(value, int):
        return format_major(value, currency, table)
    if kind == "cash_amount" and isinstance(value, int):
        return format_major(value, cash_currency, table)
    if kind == "rate" and isinstance(value, int):
        return f"{Decimal(value) / RATE_SCALE:.8f}"
    return str(value)


def _compute_summary(rows: list[BillRow], default_currency: str) -> BillSummary:
    currencies = {r.fee_type or default_currency for r in rows} or {default_currency}
    if len(currencies) != 1:
        raise ValueError("rows in several currencies: pass an explicit summary")
    return BillSummary(
        transaction_count=len(rows),
        currency=next(iter(currencies)),
        total_fee=sum(r.total_fee or 0 for r in rows),
        refund_fee=sum(r.refund_fee or 0 for r in rows),
        coupon_refund_fee=sum(r.coupon_refund_fee or 0 for r in rows),
        service_fee=sum(r.service_fee or 0 for r in rows),
    )
