"""The WeChat client's side: Mini Program login (spec 4, wx.login + jscode2session) and the
cashier (spec 6, wx.requestPayment), which takes the money and queues the payment notification.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from minipay.protocol import (
    SignatureError,
    cash_fee_cny,
    encode_xml,
    sign,
    verify_pay_params,
)
from minipay.sandbox._config import NOTIFY_MODES, Institution
from minipay.sandbox._errors import ControlError
from minipay.sandbox._ids import openid_for
from minipay.sandbox._models import LoginCode, Order
from minipay.sandbox._timeline import Timeline

__all__ = ["PAY_OUTCOMES", "Cashier"]

#: What the payer does on the pay sheet (``POST /sandbox/pay {"outcome": ...}``).
PAY_OUTCOMES = ("success", "cancel", "fail", "insufficient_balance")


class Cashier(Timeline):
    """Login codes and the payer's cashier."""

    # ------------------------------------------------------------------ Mini Program login (spec 4)
    def login(self, appid: str, user: str) -> dict[str, Any]:
        if self.world.mini_program(appid) is None:
            raise ControlError(f"unknown mini program appid {appid!r} (see GET /sandbox/merchants)", 404)
        if not user or len(user) > 64:
            raise ControlError("user must be 1 to 64 characters")
        openid = openid_for(appid, user)
        self.openids[openid] = (appid, user)
        code = self.ids.js_code()
        self.codes[code] = LoginCode(appid=appid, user=user, openid=openid, issued_at=self.now())
        return {"code": code, "openid": openid, "expires_in": self.config.rules.code_life}

    def code2session(self, params: Mapping[str, str]) -> dict[str, Any]:
        appid = params.get("appid", "")
        secret = params.get("secret", "")
        js_code = params.get("js_code", "")
        if not appid:
            return {"errcode": 41002, "errmsg": "appid missing"}
        if not secret:
            return {"errcode": 41004, "errmsg": "appsecret missing"}
        if not js_code:
            return {"errcode": 41008, "errmsg": "missing code"}
        if params.get("grant_type") != "authorization_code":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        found = self.world.mini_program(appid)
        if found is None:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if not hmac.compare_digest(found[1].app_secret.encode(), secret.encode()):
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        code = self.codes.get(js_code)
        if code is None or code.appid != appid:
            return {"errcode": 40029, "errmsg": "invalid code"}
        if self.now() - code.issued_at >= timedelta(seconds=self.config.rules.code_life):
            return {"errcode": 40029, "errmsg": "invalid code (expired)"}
        if code.used:
            return {"errcode": 40163, "errmsg": "code been used"}
        code.used = True
        return {"openid": code.openid, "session_key": self.ids.session_key()}

    # ------------------------------------------------------------------ the cashier (spec 6)
    async def pay(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``wx.requestPayment`` as the WeChat client runs it; then the notification is delivered.

        ``force``: the payer's password screen was open when the order closed or expired
        (pay-after-expiry): the money is taken anyway, the order becomes SUCCESS and is notified,
        as WeChat does for money that arrived. Everything else is still checked.
        """
        outcome = body.get("outcome", "success")
        if outcome not in PAY_OUTCOMES:
            raise ControlError(f"outcome must be one of {', '.join(PAY_OUTCOMES)}")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise ControlError("force must be true or false")
        mode = body.get("notify")
        if mode is not None and mode not in NOTIFY_MODES:
            raise ControlError(f"notify must be one of {', '.join(NOTIFY_MODES)}")
        package = body.get("package")
        if not isinstance(package, str) or not package.startswith("prepay_id="):
            return {"errMsg": "requestPayment:fail package参数错误"}
        order = self.by_prepay.get(package.removeprefix("prepay_id="))
        if order is None:
            return {"errMsg": "requestPayment:fail prepay_id无效"}
        inst = self.world.institution(order.mch_id)
        assert inst is not None
        params = {k: body.get(k) for k in ("timeStamp", "nonceStr", "package", "signType", "paySign")}
        try:
            if not all(isinstance(v, str) for v in params.values()):
                raise SignatureError("pay params must be five strings")
            verify_pay_params(params, app_id=order.sub_appid, key=inst.key)  # type: ignore[arg-type]
        except SignatureError:
            return {"errMsg": "requestPayment:fail 支付验证签名失败"}
        if params["signType"] != order.sign_type:
            return {"errMsg": "requestPayment:fail 支付验证签名失败 (signType differs from the unified order)"}
        if order.prepay_id != package.removeprefix("prepay_id=") or self.now() - order.prepay_created_at >= timedelta(
            seconds=self.config.rules.prepay_life
        ):
            return {"errMsg": "requestPayment:fail prepay_id已过期"}
        if order.state in ("SUCCESS", "REFUND"):
            return {"errMsg": "requestPayment:fail 该订单已支付"}
        after_close = order.state == "CLOSED" or self.expired(order)
        if after_close and not force:
            return {"errMsg": "requestPayment:fail 订单已关闭"}
        if outcome == "cancel":
            return {"errMsg": "requestPayment:fail cancel"}
        if outcome == "fail":
            return {"errMsg": "requestPayment:fail 支付失败"}
        rate = 1 if order.fee_type == "CNY" else self.world.rate(order.fee_type, self.today())
        if rate is None:
            return {"errMsg": f"requestPayment:fail no exchange rate for {order.fee_type}"}
        cash_fee = cash_fee_cny(order.total_fee, order.fee_type, rate)
        wallet = self.wallets.get(order.sub_openid, self.config.rules.payer_balance)
        # "insufficient_balance": the payer's wallet (and any card) cannot cover the amount, as if
        # it were short; WeChat's client then ends wx.requestPayment with a failure and the order
        # stays NOTPAY (the payer may pay it later, with money).
        if wallet < cash_fee or outcome == "insufficient_balance":
            return {"errMsg": "requestPayment:fail 余额不足"}
        if mode is not None:
            order.notify_mode = mode
        order.paid_after_close = after_close
        self._record_payment(inst, order, rate, cash_fee)
        await self.run_due()
        answer: dict[str, Any] = {
            "errMsg": "requestPayment:ok",
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
        }
        if after_close:
            answer["paid_after_close"] = True
        return answer

    def _record_payment(self, inst: Institution, order: Order, rate: int, cash_fee: int) -> None:
        now = self.now()
        self.wallets[order.sub_openid] = self.wallets.get(order.sub_openid, self.config.rules.payer_balance) - cash_fee
        order.state = "SUCCESS"
        order.transaction_id = self.ids.transaction_id(now)
        order.time_end = now
        order.cash_fee = cash_fee
        order.rate = rate if order.fee_type != "CNY" else None
        order.openid = openid_for(inst.appid, order.user)
        self.openids[order.openid] = (inst.appid, order.user)
        self.by_transaction[order.transaction_id] = order
        pool_key = (order.sub_mch_id, self.today())
        self.pools[pool_key] = self.pools.get(pool_key, 0) + cash_fee
        self._notify_payment(inst, order)

    def _notify_payment(self, inst: Institution, order: Order) -> None:
        notify = self.config.notify
        fields: dict[str, str | int] = {
            "return_code": "SUCCESS",
            "return_msg": "OK",
            "appid": inst.appid,
            "mch_id": inst.mch_id,
            "sub_appid": order.sub_appid,
            "sub_mch_id": order.sub_mch_id,
            "nonce_str": self.ids.nonce(),
            "result_code": "SUCCESS",
            **self._payment_fields(order),
            "out_trade_no": order.out_trade_no,  # spec 7.2: required (service engineer's fix)
        }
        # Live HMAC-SHA256 notifications come without sign_type (strict): receivers must use the
        # algorithm they configured, never the message's word for it.
        placement = self.config.effective.sign_type_in_notify
        if placement == "always" or (placement == "md5" and order.sign_type == "MD5"):
            fields["sign_type"] = order.sign_type
        if order.params.get("attach"):
            fields["attach"] = order.params["attach"]
        if order.params.get("version"):
            fields["version"] = order.params["version"]
        if order.rate is not None:
            fields[notify.rate_field] = str(order.rate)
        fields["sign"] = sign(fields, inst.key, order.sign_type)
        notification = self._enqueue("payment", order, None, order.notify_url, encode_xml(fields))
        if self.config.effective.asynchronous_notify and notification.next_due == notification.created_at:
            self.hold_first_delivery(notification)
