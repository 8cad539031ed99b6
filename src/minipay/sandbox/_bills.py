"""Bills (spec 13.2) from the day's simulated trades, rendered with the protocol's renderer
(``minipay.protocol.render_bill``: WeChat's back-tick CSV with a summary), so the SDK's parser
and the sandbox agree on the columns by construction.

Rows: one per payment completed that China day (``SUCCESS``), one per refund requested that day
(``REFUND``, with its current refund status). Amounts are major units in the bill.
"""

from __future__ import annotations

import gzip as _gzip
from collections.abc import Sequence
from datetime import date, datetime, time
from typing import TYPE_CHECKING

from minipay.protocol import CHINA_TZ, BillRow, BillSummary, render_bill

if TYPE_CHECKING:
    from minipay.sandbox._config import Institution
    from minipay.sandbox._ids import IdFactory
    from minipay.sandbox._models import Order, Refund

__all__ = ["bill_bytes", "payment_row", "phantom_row", "refund_row"]


def _fee(amount: int, fee_rate_bp: int) -> int:
    return (amount * fee_rate_bp + 5000) // 10000


def _rate_text(fee_rate_bp: int) -> str:
    return f"{fee_rate_bp // 100}.{fee_rate_bp % 100:02d}%"


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
        fee_rate=_rate_text(fee_rate_bp),
        sub_appid=order.sub_appid,
        cash_fee_type="CNY",
        cash_fee=order.cash_fee,
        rate=order.rate,
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
        fee_rate=_rate_text(fee_rate_bp),
        sub_appid=order.sub_appid,
        cash_fee_type="CNY",
        cash_fee=refund.cash_refund_fee,
        rate=order.rate,
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
        fee_rate=_rate_text(fee_rate_bp),
        sub_appid=sub.sub_appid,
        cash_fee_type="CNY",
        cash_fee=100,
    )


def bill_bytes(rows: Sequence[BillRow], *, gzip_it: bool = False) -> bytes:
    """The bill body; with rows in several currencies the summary amounts are left empty."""
    currencies = {row.fee_type for row in rows}
    summary = None
    if len(currencies) > 1:
        summary = BillSummary(transaction_count=len(rows), currency=None)
    data = render_bill(rows, summary=summary)
    if gzip_it:
        # mtime=0: the same bill always compresses to the same bytes.
        return _gzip.compress(data, mtime=0)
    return data
