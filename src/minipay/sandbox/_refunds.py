"""Refund rules: refund (spec 10), refund query (spec 11), scripted refund outcomes, refund
completion and its notification (CNY pool accounting included).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from minipay.protocol import (
    FieldError,
    cash_refund_fee,
    check_notify_url,
    check_out_refund_no,
    check_text,
    encode_xml,
    encrypt_req_info,
    format_wx_datetime,
)
from minipay.sandbox._config import Institution, SubMerchant
from minipay.sandbox._errors import BizFail, ControlError
from minipay.sandbox._models import Order, Refund
from minipay.sandbox._orders import OrderRules
from minipay.sandbox._state import _UNCOMPARED, _int_field, _param

__all__ = ["RefundRules"]


class RefundRules(OrderRules):
    """Requesting, completing and querying refunds."""

    # ------------------------------------------------------------------ refunds (spec 10)
    def refund(self, inst: Institution, sub: SubMerchant, f: Mapping[str, str]) -> dict[str, str | int]:
        rules = self.config.rules
        try:
            check_out_refund_no(f["out_refund_no"])
            if f.get("notify_url"):
                check_notify_url(f["notify_url"], allow_local=True)
            if f.get("refund_desc"):
                check_text(f["refund_desc"], "refund_desc", 80)
        except FieldError as exc:
            raise _param(exc.field, exc) from None
        total_fee = _int_field(f, "total_fee")
        refund_fee = _int_field(f, "refund_fee")
        order = self._order(sub, f, refunds=True)
        existing = self.refunds.get((sub.sub_mch_id, f["out_refund_no"]))
        if existing is not None:
            if existing.out_trade_no != order.out_trade_no or (existing.refund_fee, existing.total_fee) != (
                refund_fee,
                total_fee,
            ):
                raise BizFail("PARAM_ERROR", "out_refund_no已使用，且与原请求参数不一致")
            return self._refund_answer(order, existing)
        if order.state not in ("SUCCESS", "REFUND"):
            raise BizFail("ORDERNOTEXIST", "订单未支付，不能退款")
        assert order.time_end is not None
        assert order.cash_fee is not None
        assert order.transaction_id is not None
        if total_fee != order.total_fee:
            raise BizFail("PARAM_ERROR", "total_fee参数错误: 订单金额与原订单不一致")
        refund_fee_type = f.get("refund_fee_type") or order.fee_type
        if refund_fee_type != order.fee_type:
            raise BizFail("PARAM_ERROR", "refund_fee_type参数错误: 退款币种必须和标价币种一致")
        now = self.now()
        if now - order.time_end > timedelta(days=rules.refund_window_days):
            raise BizFail("TRADE_OVERDUE")
        live = [self.refunds[(sub.sub_mch_id, no)] for no in order.refunds]
        counted = [r for r in live if r.status != "REFUNDCLOSE"]
        if len(live) >= rules.refund_cap:
            raise BizFail("ERROR", f"退款次数超过限制（每笔订单最多{rules.refund_cap}次部分退款）")
        refunded = sum(r.refund_fee for r in counted)
        effective = self.config.effective
        if effective.full_refund_error and counted and refunded >= order.total_fee:
            raise BizFail("ERROR", "订单已全额退款")
        if refunded + refund_fee > order.total_fee:
            raise BizFail("PARAM_ERROR", "refund_fee参数错误: 申请退款金额超过订单可退金额")
        spacing = effective.refund_spacing
        if spacing and live and now - max(r.created_at for r in live) < timedelta(seconds=spacing):
            raise BizFail("FREQUENCY_LIMITED", f"同一笔订单两次退款需间隔{spacing}秒")
        cash_left = order.cash_fee - sum(r.cash_refund_fee for r in counted)
        if refunded + refund_fee == order.total_fee:
            cash = cash_left
        else:
            # Each partial refund rounds half up on its own, so several of them can add up to more
            # than was paid (cash_fee 920 of 1000: refunds of 6, 6, 6 and 981 round to 6+6+6+903 =
            # 921): never give back more CNY than is left, so no refund ever carries a negative
            # cash_refund_fee and the sum never exceeds cash_fee.
            cash = min(cash_refund_fee(order.cash_fee, refund_fee, order.total_fee), cash_left)
        pool_key = (sub.sub_mch_id, self.today())
        if effective.cny_pool and self.pools.get(pool_key, 0) + sub.cny_pool < cash:
            raise BizFail(rules.insufficient_funds_code)
        self.pools[pool_key] = self.pools.get(pool_key, 0) - cash
        script_status, script_after = self.refund_scripts.pop(order.out_trade_no, ("SUCCESS", None))
        delay = rules.refund_delay if script_after is None else script_after
        refund = Refund(
            sub_mch_id=sub.sub_mch_id,
            out_refund_no=f["out_refund_no"],
            refund_id=self.ids.refund_id(now),
            out_trade_no=order.out_trade_no,
            transaction_id=order.transaction_id,
            total_fee=total_fee,
            refund_fee=refund_fee,
            refund_fee_type=refund_fee_type,
            cash_refund_fee=cash,
            created_at=now,
            due_at=now + timedelta(seconds=delay),
            params={k: v for k, v in f.items() if k not in _UNCOMPARED},
            notify_url=f.get("notify_url") or sub.refund_notify_url,
            final_status=script_status,  # type: ignore[arg-type]
        )
        self.refunds[(sub.sub_mch_id, refund.out_refund_no)] = refund
        self.by_refund_id[refund.refund_id] = refund
        order.refunds.append(refund.out_refund_no)
        order.state = "REFUND"
        return self._refund_answer(order, refund)

    def _refund_answer(self, order: Order, refund: Refund) -> dict[str, str | int]:
        assert order.cash_fee is not None
        return {
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_fee": refund.refund_fee,
            "total_fee": refund.total_fee,
            "fee_type": order.fee_type,
            "refund_fee_type": refund.refund_fee_type,
            "cash_fee": order.cash_fee,
            "cash_fee_type": "CNY",
            "cash_refund_fee": refund.cash_refund_fee,
            "cash_refund_fee_type": "CNY",
            "refund_channel": "ORIGINAL",
        }

    def script_refund(self, body: Mapping[str, Any]) -> dict[str, Any]:
        status = body.get("status")
        if status not in ("SUCCESS", "CHANGE", "REFUNDCLOSE"):
            raise ControlError("status must be SUCCESS, CHANGE or REFUNDCLOSE")
        after = body.get("after")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise ControlError("after must be a non-negative integer of seconds")
        if body.get("out_refund_no"):
            sub_mch_id = body.get("sub_mch_id")
            found = [
                r
                for r in self.refunds.values()
                if r.out_refund_no == body["out_refund_no"] and (not sub_mch_id or r.sub_mch_id == sub_mch_id)
            ]
            if not found:
                raise ControlError(f"no refund {body['out_refund_no']!r}", 404)
            if len(found) > 1:  # out_refund_no is unique per sub-merchant only
                raise ControlError(f"several sub-merchants have refund {body['out_refund_no']!r}: give sub_mch_id", 409)
            refund = found[0]
            if refund.status != "PROCESSING":
                raise ControlError(f"refund is already {refund.status}", 409)
            refund.final_status = status
            if after is not None:
                refund.due_at = self.now() + timedelta(seconds=after)
            return {"ok": True, "refund": refund.to_json()}
        if body.get("out_trade_no"):
            self.refund_scripts[str(body["out_trade_no"])] = (status, after)
            return {"ok": True}
        raise ControlError("give out_refund_no or out_trade_no")

    def _complete_refund(self, refund: Refund) -> None:
        refund.status = refund.final_status
        order = self.orders[(refund.sub_mch_id, refund.out_trade_no)]
        if refund.status == "REFUNDCLOSE":
            # The refund did not happen: its CNY stays with the merchant (back in today's pool).
            pool_key = (refund.sub_mch_id, self.today())
            self.pools[pool_key] = self.pools.get(pool_key, 0) + refund.cash_refund_fee
        if refund.status == "SUCCESS":
            refund.success_time = refund.due_at
            self.wallets[order.sub_openid] = (
                self.wallets.get(order.sub_openid, self.config.rules.payer_balance) + refund.cash_refund_fee
            )
        if refund.notify_url:
            inst = self.world.institution(order.mch_id)
            assert inst is not None
            self._notify_refund(inst, order, refund)

    def _notify_refund(self, inst: Institution, order: Order, refund: Refund) -> None:
        inner: dict[str, str | int] = {
            "transaction_id": refund.transaction_id,
            "out_trade_no": refund.out_trade_no,
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "total_fee": refund.total_fee,
            "refund_fee": refund.refund_fee,
            "settlement_refund_fee": refund.refund_fee,
            "refund_status": refund.status,
            "refund_recv_accout": "支付用户零钱",
            "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
            "refund_request_source": "API",
            "cash_refund_fee": refund.cash_refund_fee,
        }
        if refund.success_time is not None:
            inner["success_time"] = format_wx_datetime(refund.success_time)
        plaintext = encode_xml(inner, root="root")
        outer: dict[str, str | int] = {
            "return_code": "SUCCESS",
            "appid": inst.appid,
            "mch_id": inst.mch_id,
            "sub_appid": order.sub_appid,
            "sub_mch_id": order.sub_mch_id,
            "nonce_str": self.ids.nonce(),
            "req_info": encrypt_req_info(plaintext, inst.key),
        }
        assert refund.notify_url is not None
        self._enqueue("refund", order, refund, refund.notify_url, encode_xml(outer))

    # ------------------------------------------------------------------ refund query (spec 11)
    def refund_query(self, sub: SubMerchant, f: Mapping[str, str]) -> dict[str, str | int]:
        selected: list[Refund]
        if f.get("refund_id"):
            refund = self.by_refund_id.get(f["refund_id"])
            if refund is None or refund.sub_mch_id != sub.sub_mch_id:
                raise BizFail("REFUNDNOTEXIST")
            selected = [refund]
        elif f.get("out_refund_no"):
            found = self.refunds.get((sub.sub_mch_id, f["out_refund_no"]))
            if found is None:
                raise BizFail("REFUNDNOTEXIST")
            selected = [found]
        elif f.get("transaction_id") or f.get("out_trade_no"):
            try:
                order = self._order(sub, f, missing="REFUNDNOTEXIST", refunds=True)
            except BizFail as exc:
                if exc.err_code == "ORDERNOTEXIST":
                    raise BizFail("REFUNDNOTEXIST") from None
                raise
            selected = [self.refunds[(sub.sub_mch_id, no)] for no in order.refunds]
            if not selected:
                raise BizFail("REFUNDNOTEXIST")
        else:
            raise BizFail("LACK_PARAMS", "refund_id、out_refund_no、transaction_id、out_trade_no至少填一个")
        order = self.orders[(sub.sub_mch_id, selected[0].out_trade_no)]
        assert order.cash_fee is not None
        assert order.transaction_id is not None
        total = len(selected)
        offset = 0
        if f.get("offset"):
            if not (f["offset"].isascii() and f["offset"].isdigit()) or int(f["offset"]) >= total:
                raise BizFail("PARAM_ERROR", "offset参数错误: offset必须小于total_refund_count")
            offset = int(f["offset"])
        page = selected[offset : offset + 10]
        out: dict[str, str | int] = {
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "total_fee": order.total_fee,
            "fee_type": order.fee_type,
            "cash_fee": order.cash_fee,
            "cash_fee_type": "CNY",
            "refund_count": len(page),
        }
        if f.get("offset") or total > 10:
            out["total_refund_count"] = total
        for n, r in enumerate(page):
            out[f"out_refund_no_{n}"] = r.out_refund_no
            out[f"refund_id_{n}"] = r.refund_id
            out[f"refund_channel_{n}"] = "ORIGINAL"
            out[f"refund_fee_{n}"] = r.refund_fee
            out[f"refund_fee_type_{n}"] = r.refund_fee_type
            out[f"cash_refund_fee_{n}"] = r.cash_refund_fee
            out[f"cash_refund_fee_type_{n}"] = "CNY"
            out[f"refund_status_{n}"] = r.status
            out[f"refund_account_{n}"] = "REFUND_SOURCE_UNSETTLED_FUNDS"
            out[f"refund_recv_accout_{n}"] = "支付用户零钱"
            if r.success_time is not None:
                out[f"refund_success_time_{n}"] = format_wx_datetime(r.success_time)
        return out
