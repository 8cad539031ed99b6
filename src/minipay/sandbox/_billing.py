"""Exchange-rate queries (spec 14) and bill downloads (spec 13): which trades of a day go into
the bill; the rendering is ``_bills``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from minipay.protocol import (
    CHINA_TZ,
    FieldError,
    china_date,
    format_wx_date,
    parse_wx_date,
)
from minipay.sandbox._bills import bill_bytes, payment_row, phantom_row, refund_row
from minipay.sandbox._config import Institution
from minipay.sandbox._errors import ReturnFail
from minipay.sandbox._state import BackendState

__all__ = ["BillRules"]


class BillRules(BackendState):
    """Exchange rates and downloadable bills."""

    # ------------------------------------------------------------------ exchange rate (spec 14)
    def exchange_rate(self, inst: Institution, f: Mapping[str, str]) -> dict[str, str | int]:
        if f.get("sub_mch_id") and self.world.sub_merchant(inst, f["sub_mch_id"]) is None:
            raise ReturnFail("sub_mch_id参数错误")
        try:
            day = parse_wx_date(f["date"], "date")
        except FieldError:
            raise ReturnFail("date参数错误: expected yyyyMMdd") from None
        if day > self.today():
            raise ReturnFail("汇率不存在 (no rate for a future day)")
        rate = self.world.rate(f["fee_type"], day)
        if rate is None:
            raise ReturnFail(f"fee_type参数错误: no rate for {f['fee_type']!r}")
        out: dict[str, str | int] = {"fee_type": f["fee_type"], "rate_time": format_wx_date(day), "rate": str(rate)}
        if f.get("sub_mch_id"):
            out["sub_mch_id"] = f["sub_mch_id"]
        return out

    # ------------------------------------------------------------------ bills (spec 13)
    def download_bill(self, inst: Institution, f: Mapping[str, str], faults: Collection[str] = ()) -> bytes:
        """The bill; ``faults`` may hold both bill faults (the missing trade is dropped from the real
        trades first, then the phantom is added)."""
        sub_mch_id = f.get("sub_mch_id") or None
        if sub_mch_id and self.world.sub_merchant(inst, sub_mch_id) is None:
            raise ReturnFail("sub_mch_id参数错误")
        bill_type = f.get("bill_type") or "ALL"
        if bill_type not in ("ALL", "SUCCESS", "REFUND", "RECHARGE_REFUND"):
            raise ReturnFail("invalid bill_type", error_code="20001")
        tar_type = f.get("tar_type") or ""
        if tar_type not in ("", "GZIP"):
            raise ReturnFail("invalid tar_type", error_code="20001")
        try:
            day = parse_wx_date(f["bill_date"], "bill_date")
        except FieldError:
            raise ReturnFail("invalid bill_date", error_code="20001") from None
        ready = datetime(day.year, day.month, day.day, self.config.rules.bill_ready_hour, tzinfo=CHINA_TZ) + timedelta(
            days=1
        )
        if self.now() < ready:
            raise ReturnFail("No Bill Exist", error_code="20002")
        fee_bp = self.config.rules.fee_rate_bp
        lines = []
        for order in self.orders.values():
            if order.mch_id != inst.mch_id or (sub_mch_id and order.sub_mch_id != sub_mch_id):
                continue
            if bill_type in ("ALL", "SUCCESS") and order.time_end is not None and china_date(order.time_end) == day:
                lines.append(payment_row(order, fee_bp))
            if bill_type in ("ALL", "REFUND"):
                for no in order.refunds:
                    refund = self.refunds[(order.sub_mch_id, no)]
                    if china_date(refund.created_at) == day:
                        lines.append(refund_row(order, refund, fee_bp))
        lines.sort(key=lambda line: line.transaction_time or self.start)
        if "bill_missing_trade" in faults and lines:
            lines.pop()
        if "bill_extra_trade" in faults:
            fallback = inst.sub_merchants[0].sub_mch_id
            lines.append(phantom_row(inst, sub_mch_id or fallback, day, self.ids, fee_bp))
        if not lines:
            raise ReturnFail("No Bill Exist", error_code="20002")
        return bill_bytes(
            lines, gzip_it=tar_type == "GZIP", layout=self.config.effective.bill_layout, bill_type=bill_type
        )
