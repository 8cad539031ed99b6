"""Order rules: unified order (spec 5), order query (spec 8) and close order (spec 9)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from minipay.protocol import (
    FieldError,
    check_id,
    check_ip,
    check_notify_url,
    check_out_trade_no,
    check_text,
    format_wx_time,
    parse_wx_time,
)
from minipay.sandbox._config import Institution, SubMerchant
from minipay.sandbox._errors import BizFail, ControlError
from minipay.sandbox._models import Order
from minipay.sandbox._state import _TRADE_STATE_DESC, _UNCOMPARED, BackendState, _int_field, _param

__all__ = ["OrderRules"]


class OrderRules(BackendState):
    """Creating, querying and closing orders."""

    # ------------------------------------------------------------------ unified order (spec 5)
    def unified_order(self, inst: Institution, sub: SubMerchant, f: Mapping[str, str]) -> dict[str, str | int]:
        now = self.now()
        if f["trade_type"] != "JSAPI":
            raise BizFail(
                "PARAM_ERROR", f"trade_type参数错误: the sandbox serves JSAPI (Mini Program), not {f['trade_type']}"
            )
        if f.get("version") not in (None, "", "1.0"):
            raise BizFail("PARAM_ERROR", "version参数错误: must be 1.0")
        try:
            check_out_trade_no(f["out_trade_no"])
            in_bytes = self.config.effective.byte_lengths
            check_text(f["body"], "body", 127, utf8_bytes=in_bytes)
            if f.get("attach"):
                check_text(f["attach"], "attach", 127, utf8_bytes=in_bytes)
            if f.get("detail"):
                check_text(f["detail"], "detail", 6000, utf8_bytes=in_bytes)
            for name in ("device_info", "goods_tag", "limit_pay", "product_id"):
                if f.get(name):
                    check_id(f[name], name)
            check_ip(f["spbill_create_ip"])
            check_notify_url(f["notify_url"], allow_local=True)
            time_expire: datetime | None = None
            time_start: datetime | None = None
            if f.get("time_start"):
                time_start = parse_wx_time(f["time_start"], "time_start")
            if f.get("time_expire"):
                time_expire = parse_wx_time(f["time_expire"], "time_expire")
        except FieldError as exc:
            raise _param(exc.field, exc) from None
        total_fee = _int_field(f, "total_fee")
        fee_type = f["fee_type"]
        if fee_type not in sub.fee_types:
            raise BizFail(
                "PARAM_ERROR",
                f"fee_type参数错误: {fee_type!r} is not allowed for this sub-merchant "
                f"(allowed: {', '.join(sorted(sub.fee_types))})",
            )
        user = self._payer(inst, sub, f)
        params = {k: v for k, v in f.items() if k not in _UNCOMPARED}
        key = (sub.sub_mch_id, f["out_trade_no"])
        order = self.orders.get(key)
        if order is not None:
            return self._reenter(order, params)
        gap = self.config.effective.time_expire_min_gap
        if time_expire is not None and time_expire - max(now, time_start or now) < timedelta(seconds=gap):
            raise BizFail(
                "PARAM_ERROR", f"time_expire时间过短，至少{gap // 60 or 1}分钟 (at least {gap} s after time_start)"
            )
        prepay_id = self.ids.prepay_id(now)
        order = Order(
            mch_id=inst.mch_id,
            appid=inst.appid,
            sub_mch_id=sub.sub_mch_id,
            sub_appid=sub.sub_appid,
            out_trade_no=f["out_trade_no"],
            total_fee=total_fee,
            fee_type=fee_type,
            notify_url=f["notify_url"],
            sub_openid=f.get("sub_openid", ""),
            user=user,
            sign_type=f.get("sign_type") or "MD5",
            params=params,
            created_at=now,
            prepay_id=prepay_id,
            prepay_created_at=now,
            time_expire=time_expire,
        )
        self.orders[key] = order
        self.by_prepay[prepay_id] = order
        return self._prepay_answer(order)

    def _prepay_answer(self, order: Order) -> dict[str, str | int]:
        out: dict[str, str | int] = {"trade_type": "JSAPI", "prepay_id": order.prepay_id}
        if order.params.get("device_info"):
            out["device_info"] = order.params["device_info"]
        return out

    def _payer(self, inst: Institution, sub: SubMerchant, f: Mapping[str, str]) -> str:
        sub_openid = f.get("sub_openid")
        openid = f.get("openid")
        if sub_openid:
            if not f.get("sub_appid"):
                raise BizFail("LACK_PARAMS", "sub_openid requires sub_appid")
            issued = self.openids.get(sub_openid)
            if issued is None or issued[0] != sub.sub_appid:
                raise BizFail("PARAM_ERROR", "sub_openid和sub_appid不匹配")
            return issued[1]
        if openid:
            issued = self.openids.get(openid)
            if issued is None or issued[0] != inst.appid:
                raise BizFail("PARAM_ERROR", "openid和appid不匹配")
            return issued[1]
        raise BizFail("LACK_PARAMS", "trade_type=JSAPI时（即小程序支付），openid或sub_openid必传")

    def _reenter(self, order: Order, params: dict[str, str]) -> dict[str, str | int]:
        rules = self.config.rules
        if order.state in ("SUCCESS", "REFUND"):
            raise BizFail("ORDERPAID")
        if order.state == "CLOSED" or self.expired(order):
            raise BizFail("ORDERCLOSED")
        if params != order.params:
            raise BizFail(rules.reentry_error, "201 商户订单号重复 (out_trade_no was used with other parameters)")
        now = self.now()
        if now - order.prepay_created_at >= timedelta(seconds=rules.prepay_life):
            del self.by_prepay[order.prepay_id]
            order.prepay_id = self.ids.prepay_id(now)
            order.prepay_created_at = now
            self.by_prepay[order.prepay_id] = order
        return self._prepay_answer(order)

    # ------------------------------------------------------------------ order query (spec 8)
    def order_query(self, sub: SubMerchant, f: Mapping[str, str]) -> dict[str, str | int]:
        if not f.get("transaction_id") and not f.get("out_trade_no"):
            raise BizFail("LACK_PARAMS", "transaction_id或out_trade_no必传")
        order = self._order(sub, f)
        state = self.trade_state(order)
        out: dict[str, str | int] = {
            "out_trade_no": order.out_trade_no,
            "trade_state": state,
            "trade_state_desc": _TRADE_STATE_DESC[state],
        }
        if order.params.get("attach"):
            out["attach"] = order.params["attach"]
        if state in ("SUCCESS", "REFUND"):
            out.update(self._payment_fields(order))
        return out

    def _payment_fields(self, order: Order) -> dict[str, str | int]:
        assert order.transaction_id is not None
        assert order.time_end is not None
        assert order.cash_fee is not None
        out: dict[str, str | int] = {
            "openid": order.openid or "",
            "is_subscribe": "N",
            "sub_openid": order.sub_openid,
            "sub_is_subscribe": "N",
            "trade_type": "JSAPI",
            "bank_type": "OTHERS",
            "total_fee": order.total_fee,
            "fee_type": order.fee_type,
            "cash_fee": order.cash_fee,
            "cash_fee_type": "CNY",
            "transaction_id": order.transaction_id,
            "time_end": format_wx_time(order.time_end),
        }
        if order.params.get("device_info"):
            out["device_info"] = order.params["device_info"]
        return out

    # ------------------------------------------------------------------ close order (spec 9)
    def close_order(self, sub: SubMerchant, f: Mapping[str, str]) -> dict[str, str | int]:
        order = self._order(sub, {"out_trade_no": f["out_trade_no"]})
        return self._close(order)

    def _close(self, order: Order, *, force: bool = False) -> dict[str, str | int]:
        rules = self.config.rules
        if order.state in ("SUCCESS", "REFUND"):
            raise BizFail("ORDERPAID")
        if order.state == "CLOSED":
            raise BizFail("ORDERCLOSED")
        age = self.now() - order.created_at
        if not force and rules.close_min_age > 0 and age < timedelta(seconds=rules.close_min_age):
            raise BizFail(rules.close_too_early_code, f"订单创建后{rules.close_min_age // 60}分钟内不能关单")
        order.state = "CLOSED"
        order.closed_at = self.now()
        return {"result_msg": "OK"}

    def force_close(self, out_trade_no: str, sub_mch_id: str | None = None) -> None:
        """Dashboard "cancel": close an unpaid order now, ignoring the 5-minute rule.

        ``sub_mch_id``: two sub-merchants may use the same ``out_trade_no``; the dashboard's
        button names the one it shows."""
        order = self._find_order(out_trade_no, sub_mch_id)
        try:
            self._close(order, force=True)
        except BizFail as exc:
            raise ControlError(f"cannot close: {exc.err_code}", 409) from None

    def _find_order(self, out_trade_no: str, sub_mch_id: str | None = None) -> Order:
        for (sub_id, no), order in self.orders.items():
            if no == out_trade_no and (sub_mch_id is None or sub_id == sub_mch_id):
                return order
        raise ControlError(f"no order {out_trade_no!r}", 404)
