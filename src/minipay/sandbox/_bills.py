"""Bills (spec 13.2) from the day's simulated trades, in one of two layouts (``rules.bill_layout``).

- ``documented``: the layout of the documentation: Chinese headers, a column set per ``bill_type``
  (``ALL``; ``SUCCESS`` without the refund columns; ``REFUND``/``RECHARGE_REFUND`` with the refund
  request and success times), the Chinese summary (总交易单数, 总交易额, 总退款金额, 总代金券退款金额,
  手续费总金额), fees to five decimals (a refund gives its share of the fee back: negative), every
  value back-quoted. The Global bill adds cash/settlement currency and rate columns whose names
  are not documented (spec 19 #9): they are rendered as 用户支付币种, 用户支付金额, 结算币种, 汇率,
  an unconfirmed choice, after the documented columns. Rendered here, independently of the SDK's
  parser, so the parser is tested against a layout it did not write.
- ``english``: the English 28-column layout of ``minipay.protocol.render_bill`` (fees to the
  currency's minor unit, refunds with a zero fee).

Rows: one per payment completed that China day (``SUCCESS``), one per refund requested that day
(``REFUND``, with its current refund status). Amounts are major units in the bill.
"""

from __future__ import annotations

import csv
import gzip as _gzip
import io
from collections.abc import Sequence
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Final, Literal

from minipay.protocol import (
    CHINA_TZ,
    DEFAULT_CURRENCIES,
    RATE_SCALE,
    BillRow,
    BillSummary,
    format_major,
    format_wx_datetime,
    render_bill,
)

if TYPE_CHECKING:
    from minipay.sandbox._config import Institution
    from minipay.sandbox._ids import IdFactory
    from minipay.sandbox._models import Order, Refund

__all__ = ["BILL_LAYOUTS", "BillLayout", "bill_bytes", "documented_columns", "payment_row", "phantom_row", "refund_row"]

BillLayout = Literal["documented", "english"]
BILL_LAYOUTS: Final[tuple[BillLayout, ...]] = ("documented", "english")

_FEE_PLACES: Final = Decimal("0.00001")
_HEAD: Final = (
    "交易时间", "公众账号ID", "商户号", "子商户号", "设备号", "微信订单号", "商户订单号", "用户标识", "交易类型",
    "交易状态", "付款银行", "货币种类", "总金额", "代金券金额",
)  # fmt: skip
_REFUND: Final = ("微信退款单号", "商户退款单号", "退款金额", "代金券退款金额", "退款类型", "退款状态")
_TAIL: Final = ("商品名称", "商户数据包", "手续费", "费率")
#: Global columns under names of our choosing (the Global list is unconfirmed, spec 19 #9).
_GLOBAL: Final = ("用户支付币种", "用户支付金额", "结算币种", "汇率")
_SUMMARY: Final = ("总交易单数", "总交易额", "总退款金额", "总代金券退款金额", "手续费总金额")


def documented_columns(bill_type: str) -> tuple[str, ...]:
    """The documented layout's header for ``bill_type`` (``ALL``, ``SUCCESS``, ``REFUND``, ``RECHARGE_REFUND``)."""
    if bill_type == "SUCCESS":
        return (*_HEAD, *_TAIL, *_GLOBAL)
    if bill_type in ("REFUND", "RECHARGE_REFUND"):
        return (*_HEAD, "退款申请时间", "退款成功时间", *_REFUND, *_TAIL, *_GLOBAL)
    return (*_HEAD, *_REFUND, *_TAIL, *_GLOBAL)


def _fee(amount: int, fee_rate_bp: int) -> int:
    return (amount * fee_rate_bp + 5000) // 10000


def _rate_text(fee_rate_bp: int) -> str:
    return f"{fee_rate_bp // 100}.{fee_rate_bp % 100:02d}%"


def _exact_fee(amount: int, currency: str, fee_rate_bp: int) -> Decimal:
    """``amount`` (minor units) x the rate, in major units to five decimals (half up)."""
    minor = Decimal(amount * fee_rate_bp) / 10000
    return minor.scaleb(-DEFAULT_CURRENCIES.exponent(currency)).quantize(_FEE_PLACES, rounding=ROUND_HALF_UP)


def payment_row(order: Order, fee_rate_bp: int) -> BillRow:
    assert order.time_end is not None
    assert order.cash_fee is not None
    return BillRow(
        transaction_time=order.time_end,
        appid=order.appid,
        mch_id=order.mch_id,
        sub_mch_id=order.sub_mch_id,
        device_info=order.params.get("device_info") or None,
        transaction_id=order.transaction_id,
        out_trade_no=order.out_trade_no,
        openid=order.openid,
        trade_type="JSAPI",
        trade_state="SUCCESS",
        bank_type="OTHERS",
        fee_type=order.fee_type,
        total_fee=order.total_fee,
        coupon_fee=0,
        refund_id="0",
        out_refund_no="0",
        refund_fee=0,
        coupon_refund_fee=0,
        body=order.params.get("body"),
        attach=order.params.get("attach") or None,
        service_fee=_fee(order.total_fee, fee_rate_bp),
        service_fee_major=_exact_fee(order.total_fee, order.fee_type, fee_rate_bp),
        fee_rate=_rate_text(fee_rate_bp),
        sub_appid=order.sub_appid,
        cash_fee_type="CNY",
        cash_fee=order.cash_fee,
        rate=order.rate,
        settlement_fee_type=order.fee_type,
    )


def refund_row(order: Order, refund: Refund, fee_rate_bp: int) -> BillRow:
    return BillRow(
        transaction_time=refund.created_at,
        appid=order.appid,
        mch_id=order.mch_id,
        sub_mch_id=order.sub_mch_id,
        device_info=order.params.get("device_info") or None,
        transaction_id=refund.transaction_id,
        out_trade_no=order.out_trade_no,
        openid=order.openid,
        trade_type="JSAPI",
        trade_state="REFUND",
        bank_type="OTHERS",
        fee_type=order.fee_type,
        total_fee=0,
        coupon_fee=0,
        refund_id=refund.refund_id,
        out_refund_no=refund.out_refund_no,
        refund_fee=refund.refund_fee,
        coupon_refund_fee=0,
        refund_channel="ORIGINAL",
        refund_status=refund.status,
        body=order.params.get("body"),
        attach=order.params.get("attach") or None,
        service_fee=0,
        service_fee_major=-_exact_fee(refund.refund_fee, order.fee_type, fee_rate_bp),
        fee_rate=_rate_text(fee_rate_bp),
        sub_appid=order.sub_appid,
        cash_fee_type="CNY",
        cash_fee=refund.cash_refund_fee,
        rate=order.rate,
        refund_request_time=refund.created_at,
        refund_success_time=refund.success_time if refund.status == "SUCCESS" else None,
        settlement_fee_type=order.fee_type,
    )


def phantom_row(inst: Institution, sub_mch_id: str, day: date, ids: IdFactory, fee_rate_bp: int) -> BillRow:
    """A trade the sandbox never saw (fault ``bill_extra_trade``): reconciliation must flag it."""
    when = datetime.combine(day, time(12, 0), tzinfo=CHINA_TZ)
    sub = next((s for s in inst.sub_merchants if s.sub_mch_id == sub_mch_id), inst.sub_merchants[0])
    return BillRow(
        transaction_time=when,
        appid=inst.appid,
        mch_id=inst.mch_id,
        sub_mch_id=sub.sub_mch_id,
        transaction_id=ids.transaction_id(when),
        out_trade_no="PHANTOM" + ids.nonce()[:12],
        openid="o" + ids.nonce()[:27],
        trade_type="JSAPI",
        trade_state="SUCCESS",
        bank_type="OTHERS",
        fee_type=sub.settlement_currency,
        total_fee=100,
        coupon_fee=0,
        refund_id="0",
        out_refund_no="0",
        refund_fee=0,
        coupon_refund_fee=0,
        body="phantom trade",
        service_fee=_fee(100, fee_rate_bp),
        service_fee_major=_exact_fee(100, sub.settlement_currency, fee_rate_bp),
        fee_rate=_rate_text(fee_rate_bp),
        sub_appid=sub.sub_appid,
        cash_fee_type="CNY",
        cash_fee=100,
        settlement_fee_type=sub.settlement_currency,
    )


def bill_bytes(
    rows: Sequence[BillRow], *, gzip_it: bool = False, layout: BillLayout = "english", bill_type: str = "ALL"
) -> bytes:
    """The bill body; with rows in several currencies the summary amounts are left empty."""
    if layout == "documented":
        data = _documented(rows, bill_type)
    else:
        # the English layout keeps fees to the minor unit and refunds without a fee
        data = _english([row.model_copy(update={"service_fee_major": None}) for row in rows])
    if gzip_it:
        # mtime=0: the same bill always compresses to the same bytes.
        return _gzip.compress(data, mtime=0)
    return data


def _english(rows: Sequence[BillRow]) -> bytes:
    currencies = {row.fee_type for row in rows}
    summary = None
    if len(currencies) > 1:
        summary = BillSummary(transaction_count=len(rows), currency=None)
    return render_bill(rows, summary=summary)


def _money(value: int | None, currency: str) -> str:
    return format_major(value or 0, currency)


def _when(value: datetime | None) -> str:
    return format_wx_datetime(value) if value is not None else ""


def _fee_text(row: BillRow, currency: str) -> str:
    if row.service_fee_major is not None:
        return f"{row.service_fee_major.quantize(_FEE_PLACES):f}"
    return f"{Decimal(row.service_fee or 0).scaleb(-DEFAULT_CURRENCIES.exponent(currency)).quantize(_FEE_PLACES):f}"


def _cells(row: BillRow) -> dict[str, str]:
    currency = row.fee_type or "CNY"
    cash_currency = row.cash_fee_type or "CNY"
    return {
        "交易时间": _when(row.transaction_time),
        "公众账号ID": row.appid or "",
        "商户号": row.mch_id or "",
        "子商户号": row.sub_mch_id or "",
        "设备号": row.device_info or "",
        "微信订单号": row.transaction_id or "",
        "商户订单号": row.out_trade_no or "",
        "用户标识": row.openid or "",
        "交易类型": row.trade_type or "",
        "交易状态": row.trade_state or "",
        "付款银行": row.bank_type or "",
        "货币种类": currency,
        "总金额": _money(row.total_fee, currency),
        "代金券金额": _money(row.coupon_fee, currency),
        "退款申请时间": _when(row.refund_request_time),
        "退款成功时间": _when(row.refund_success_time),
        "微信退款单号": row.refund_id or "0",
        "商户退款单号": row.out_refund_no or "0",
        "退款金额": _money(row.refund_fee, currency),
        "代金券退款金额": _money(row.coupon_refund_fee, currency),
        "退款类型": row.refund_channel or "",
        "退款状态": row.refund_status or "",
        "商品名称": row.body or "",
        "商户数据包": row.attach or "",
        "手续费": _fee_text(row, currency),
        "费率": row.fee_rate or "",
        "用户支付币种": cash_currency,
        "用户支付金额": _money(row.cash_fee, cash_currency) if row.cash_fee is not None else "",
        "结算币种": row.settlement_fee_type or currency,
        "汇率": f"{Decimal(row.rate) / RATE_SCALE:.8f}" if row.rate is not None else "",
    }


def _documented(rows: Sequence[BillRow], bill_type: str) -> bytes:
    columns = documented_columns(bill_type)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        cells = _cells(row)
        writer.writerow(["`" + cells[name] for name in columns])
    writer.writerow(_SUMMARY)
    currencies = {row.fee_type or "CNY" for row in rows}
    summary = [str(len(rows))]
    if len(currencies) == 1:
        currency = next(iter(currencies))
        fees = sum((Decimal(_fee_text(row, currency)) for row in rows), Decimal(0))
        summary += [
            _money(sum(row.total_fee or 0 for row in rows), currency),
            _money(sum(row.refund_fee or 0 for row in rows), currency),
            _money(sum(row.coupon_refund_fee or 0 for row in rows), currency),
            f"{fees:f}",
        ]
    else:  # amounts in several currencies do not add up
        summary += ["", "", "", ""]
    writer.writerow(["`" + cell for cell in summary])
    return out.getvalue().encode("utf-8")
