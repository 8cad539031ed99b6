"""Bills (spec 13.2): a text table with back-tick cells and a summary, from the day's trades.

Amounts in a bill are decimal major units (``10.50``), unlike the API's integer minor units.
The column list follows the domestic partner ALL bill (spec 13.2) plus Global cash columns
(UNCONFIRMED names: parse by header, not position).
"""

from __future__ import annotations

import gzip as _gzip
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING

from minipay.protocol import CHINA_TZ, format_major, format_wx_datetime

if TYPE_CHECKING:
    from minipay.sandbox._config import Institution
    from minipay.sandbox._ids import IdFactory
    from minipay.sandbox._models import Order, Refund

__all__ = ["BILL_COLUMNS", "SUMMARY_COLUMNS", "BillLine", "render_bill"]

BILL_COLUMNS = (
    "交易时间", "公众账号ID", "商户号", "子商户号", "设备号", "微信订单号", "商户订单号", "用户标识", "交易类型",
    "交易状态", "付款银行", "货币种类", "总金额", "代金券金额", "微信退款单号", "商户退款单号", "退款金额",
    "代金券退款金额", "退款类型", "退款状态", "商品名称", "商户数据包", "手续费", "费率", "现金支付币种",
    "现金支付金额", "现金退款金额", "汇率",
)  # fmt: skip
SUMMARY_COLUMNS = ("总交易单数", "总交易额", "总退款金额", "总代金券或立减优惠退款金额", "手续费总金额")


@dataclass(frozen=True)
class BillLine:
    """One row of a bill: a payment (``SUCCESS``) or a refund (``REFUND``)."""

    time: datetime
    appid: str
    mch_id: str
    sub_mch_id: str
    device_info: str
    transaction_id: str
    out_trade_no: str
    openid: str
    trade_state: str
    fee_type: str
    total_fee: int
    refund_id: str
    out_refund_no: str
    refund_fee: int
    refund_status: str
    body: str
    attach: str
    cash_fee: int
    cash_refund_fee: int
    rate: int | None

    @classmethod
    def payment(cls, order: Order) -> BillLine:
        assert order.time_end is not None
        assert order.transaction_id is not None
        assert order.cash_fee is not None
        return cls(
            time=order.time_end,
            appid=order.appid,
            mch_id=order.mch_id,
            sub_mch_id=order.sub_mch_id,
            device_info=order.params.get("device_info", ""),
            transaction_id=order.transaction_id,
            out_trade_no=order.out_trade_no,
            openid=order.openid or "",
            trade_state="SUCCESS",
            fee_type=order.fee_type,
            total_fee=order.total_fee,
            refund_id="0",
            out_refund_no="0",
            refund_fee=0,
            refund_status="",
            body=order.params.get("body", ""),
            attach=order.params.get("attach", ""),
            cash_fee=order.cash_fee,
            cash_refund_fee=0,
            rate=order.rate,
        )

    @classmethod
    def refund(cls, order: Order, refund: Refund) -> BillLine:
        return cls(
            time=refund.created_at,
            appid=order.appid,
            mch_id=order.mch_id,
            sub_mch_id=order.sub_mch_id,
            device_info=order.params.get("device_info", ""),
            transaction_id=refund.transaction_id,
            out_trade_no=order.out_trade_no,
            openid=order.openid or "",
            trade_state="REFUND",
            fee_type=order.fee_type,
            total_fee=0,
            refund_id=refund.refund_id,
            out_refund_no=refund.out_refund_no,
            refund_fee=refund.refund_fee,
            refund_status=refund.status,
            body=order.params.get("body", ""),
            attach=order.params.get("attach", ""),
            cash_fee=0,
            cash_refund_fee=refund.cash_refund_fee,
            rate=order.rate,
        )

    @classmethod
    def phantom(cls, inst: Institution, sub_mch_id: str, day: date, ids: IdFactory) -> BillLine:
        """A trade the sandbox never saw (fault ``bill_extra_trade``): reconciliation must flag it."""
        when = datetime.combine(day, time(12, 0), tzinfo=CHINA_TZ)
        sub = next((s for s in inst.sub_merchants if s.sub_mch_id == sub_mch_id), inst.sub_merchants[0])
        return cls(
            time=when,
            appid=inst.appid,
            mch_id=inst.mch_id,
            sub_mch_id=sub.sub_mch_id,
            device_info="",
            transaction_id=ids.transaction_id(when),
            out_trade_no="PHANTOM" + ids.nonce()[:12],
            openid="o" + ids.nonce()[:27],
            trade_state="SUCCESS",
            fee_type=sub.settlement_currency,
            total_fee=100,
            refund_id="0",
            out_refund_no="0",
            refund_fee=0,
            refund_status="",
            body="phantom trade",
            attach="",
            cash_fee=100,
            cash_refund_fee=0,
            rate=None,
        )


def _fee(line: BillLine, fee_rate_bp: int) -> int:
    amount = line.total_fee if line.trade_state == "SUCCESS" else 0
    return (amount * fee_rate_bp + 5000) // 10000


def _cell(value: str) -> str:
    return "`" + value.replace(",", " ").replace("\n", " ").replace("\r", " ")


def render_bill(lines: Sequence[BillLine], *, fee_rate_bp: int = 60, gzip_it: bool = False) -> bytes:
    """The bill text (UTF-8), optionally gzip-compressed (``tar_type=GZIP``)."""
    rate_text = f"{Decimal(fee_rate_bp) / 100:.2f}%"
    out = [",".join(BILL_COLUMNS)]
    for line in lines:
        cells = [
            format_wx_datetime(line.time),
            line.appid,
            line.mch_id,
            line.sub_mch_id,
            line.device_info,
            line.transaction_id,
            line.out_trade_no,
            line.openid,
            "JSAPI",
            line.trade_state,
            "OTHERS",
            line.fee_type,
            format_major(line.total_fee, line.fee_type),
            format_major(0, line.fee_type),
            line.refund_id,
            line.out_refund_no,
            format_major(line.refund_fee, line.fee_type),
            format_major(0, line.fee_type),
            "ORIGINAL" if line.trade_state == "REFUND" else "",
            line.refund_status,
            line.body,
            line.attach,
            format_major(_fee(line, fee_rate_bp), line.fee_type),
            rate_text,
            "CNY",
            format_major(line.cash_fee, "CNY"),
            format_major(line.cash_refund_fee, "CNY"),
            str(line.rate) if line.rate is not None else "",
        ]
        out.append(",".join(_cell(c) for c in cells))
    out.append(",".join(SUMMARY_COLUMNS))
    # Totals are decimal sums of the rows' major units (meaningful for a single-currency bill:
    # ask per sub_mch_id to get one).
    total = sum((Decimal(format_major(x.total_fee, x.fee_type)) for x in lines), Decimal(0))
    refunded = sum((Decimal(format_major(x.refund_fee, x.fee_type)) for x in lines), Decimal(0))
    fees = sum((Decimal(format_major(_fee(x, fee_rate_bp), x.fee_type)) for x in lines), Decimal(0))
    out.append(",".join(_cell(c) for c in (str(len(lines)), f"{total}", f"{refunded}", "0.00", f"{fees}")))
    data = ("\r\n".join(out) + "\r\n").encode("utf-8")
    if gzip_it:
        # mtime=0: the same bill always compresses to the same bytes.
        return _gzip.compress(data, mtime=0)
    return data
