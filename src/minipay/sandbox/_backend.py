"""The sandbox backend: the state of the simulated WeChat Pay and its business rules.

Handlers (``_wire.py``) authenticate a request and hand the raw field dict to one method here;
each method returns the business fields of the answer or raises a wire-coded error
(``_errors.py``). Time comes from the virtual clock only; ids from the seeded factory.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
from collections.abc import Collection, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from minipay.protocol import (
    CHINA_TZ,
    FieldError,
    SignatureError,
    cash_fee_cny,
    cash_refund_fee,
    check_amount,
    check_id,
    check_ip,
    check_notify_url,
    check_out_refund_no,
    check_out_trade_no,
    check_text,
    china_date,
    decode_xml,
    decrypt_req_info,
    encode_xml,
    encrypt_req_info,
    format_wx_date,
    format_wx_datetime,
    format_wx_time,
    parse_wx_date,
    parse_wx_time,
    sign,
    verify_pay_params,
)
from minipay.sandbox._bills import bill_bytes, payment_row, phantom_row, refund_row
from minipay.sandbox._clock import VirtualClock
from minipay.sandbox._config import NOTIFY_MODES, Institution, SandboxConfig, SubMerchant
from minipay.sandbox._errors import BizFail, ControlError, ReturnFail
from minipay.sandbox._ids import IdFactory, openid_for
from minipay.sandbox._models import Fault, LoginCode, Notification, Order, Refund
from minipay.sandbox._notifier import Dispatcher

__all__ = ["BILL_FAULTS", "Backend", "World"]

#: True inside a dispatch run (and in receivers called in-process from it): avoids a self-deadlock.
_IN_DISPATCH: ContextVar[bool] = ContextVar("minipay_sandbox_in_dispatch", default=False)

_TRANSACTION_ID_RE = re.compile(r"\d{28}")
_TRADE_STATE_DESC = {"SUCCESS": "支付成功", "REFUND": "转入退款", "NOTPAY": "订单未支付", "CLOSED": "订单已关闭"}
_UNCOMPARED = frozenset({"nonce_str", "sign", "sign_type"})
XML_FAULTS = frozenset(
    {"SYSTEMERROR", "http_500", "delay", "drop", "lost_response", "bad_signature", "bill_extra_trade",
     "bill_missing_trade"}
)  # fmt: skip
#: Faults that change the bill's rows: one of each kind may apply to the same downloadbill request.
BILL_FAULTS = frozenset({"bill_extra_trade", "bill_missing_trade"})
LOGIN_FAULTS = frozenset({"http_500", "delay", "drop", "lost_response", "-1", "45011", "40226"})
PAYMENT_TAMPERS = ("bad_signature", "amount", "unsigned", "other_key", "md5_downgrade")
REFUND_TAMPERS = ("other_key", "garbage")
#: The longest single clock advance (ten years): NaN, infinity or 1e300 would overflow the clock.
MAX_ADVANCE = 10 * 366 * 86400
ENDPOINTS = (
    "unifiedorder", "orderquery", "closeorder", "refund", "refundquery", "downloadbill", "queryexchagerate",
    "report", "jscode2session",
)  # fmt: skip


def _param(field: str, exc: FieldError) -> BizFail:
    return BizFail("PARAM_ERROR", f"{field}参数错误: {exc.reason}")


def _int_field(fields: Mapping[str, str], name: str) -> int:
    text = fields[name]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # not "²" (int() fails), not "١٠٠" (100)
        raise BizFail("PARAM_ERROR", f"{name}参数错误: must be a positive integer of minor units, got {text!r}")
    try:
        return check_amount(int(text), name)
    except FieldError as exc:
        raise _param(name, exc) from None


@dataclass(frozen=True)
class World:
    """Lookups over the configured institutions (immutable)."""

    config: SandboxConfig

    def institution(self, mch_id: str) -> Institution | None:
        return next((i for i in self.config.institutions if i.mch_id == mch_id), None)

    def sub_merchant(self, inst: Institution, sub_mch_id: str) -> SubMerchant | None:
        return next((s for s in inst.sub_merchants if s.sub_mch_id == sub_mch_id), None)

    def mini_program(self, appid: str) -> tuple[Institution, SubMerchant] | None:
        for inst in self.config.institutions:
            for sub in inst.sub_merchants:
                if sub.sub_appid == appid:
                    return inst, sub
        return None

    def rate(self, fee_type: str, day: date) -> int | None:
        override = self.config.rates_by_date.get(format_wx_date(day), {})
        if fee_type in override:
            return override[fee_type]
        return self.config.rates.get(fee_type)


class Backend:
    """All mutable sandbox state plus the rules that change it."""

    def __init__(self, config: SandboxConfig, clock: VirtualClock, dispatcher: Dispatcher, start: datetime) -> None:
        self.config = config
        self.world = World(config)
        self.clock = clock
        self.dispatcher = dispatcher
        self.start = start
        #: Serialises dispatch runs and clock moves (one timeline); one lock per event loop, since
        #: an app may be driven in-process first and served by a thread's loop later.
        self._lock = asyncio.Lock()
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self.ids = IdFactory(self.config.seed)
        self.clock.set(self.start)
        self.orders: dict[tuple[str, str], Order] = {}
        self.by_transaction: dict[str, Order] = {}
        self.by_prepay: dict[str, Order] = {}
        self.refunds: dict[tuple[str, str], Refund] = {}
        self.by_refund_id: dict[str, Refund] = {}
        self.codes: dict[str, LoginCode] = {}
        #: openid -> (appid, user) for every openid the sandbox has issued.
        self.openids: dict[str, tuple[str, str]] = {}
        self.wallets: dict[str, int] = {}
        #: (sub_mch_id, China day) -> CNY taken minus CNY refunded that day.
        self.pools: dict[tuple[str, date], int] = {}
        self.notifications: list[Notification] = []
        self.faults: list[Fault] = []
        self.journal: list[dict[str, Any]] = []
        self.notify_default: str = self.config.notify.mode
        self.notify_modes: dict[str, str] = {}
        self.refund_scripts: dict[str, tuple[str, int | None]] = {}
        #: Where ``minipay sandbox --tls`` wrote its certificates (shown by GET /sandbox/merchants).
        self.tls_files: dict[str, str] | None = getattr(self, "tls_files", None)
        self._seq = 0

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    def now(self) -> datetime:
        return self.clock.now()

    def today(self) -> date:
        return china_date(self.now())

    # ------------------------------------------------------------------ helpers
    def _order(
        self, sub: SubMerchant, fields: Mapping[str, str], *, missing: str = "ORDERNOTEXIST", refunds: bool = False
    ) -> Order:
        """The order named by ``transaction_id`` (preferred) or ``out_trade_no``, of this sub-merchant.

        ``refunds``: the refund APIs answer a malformed unknown ``transaction_id`` with
        ``INVALID_TRANSACTIONID`` (spec 10.4, 11.2); the order APIs with ``missing``.
        """
        order: Order | None
        transaction_id = fields.get("transaction_id")
        if transaction_id:
            order = self.by_transaction.get(transaction_id)
        else:
            out_trade_no = fields.get("out_trade_no", "")
            try:
                check_out_trade_no(out_trade_no)
            except FieldError as exc:
                raise _param("out_trade_no", exc) from None
            order = self.orders.get((sub.sub_mch_id, out_trade_no))
        if order is None or order.sub_mch_id != sub.sub_mch_id:
            if refunds and transaction_id and not _TRANSACTION_ID_RE.fullmatch(transaction_id):
                raise BizFail("INVALID_TRANSACTIONID")
            raise BizFail(missing)
        return order

    def out_trade_no_of(self, transaction_id: str | None) -> str | None:
        """The ``out_trade_no`` of the order with this ``transaction_id`` (None when unknown)."""
        order = self.by_transaction.get(transaction_id) if transaction_id else None
        return order.out_trade_no if order is not None else None

    def expired(self, order: Order) -> bool:
        return order.time_expire is not None and self.now() >= order.time_expire

    def trade_state(self, order: Order) -> str:
        if order.state == "NOTPAY" and self.config.rules.auto_close_expired and self.expired(order):
            return "CLOSED"
        return order.state

    def check_sub_appid(self, sub: SubMerchant, fields: Mapping[str, str]) -> None:
        """``sub_appid`` (when sent) must be the sub-merchant's mini program (a binding: checked
        by the pipeline right after ``sub_mch_id``, before field rules, on every endpoint)."""
        sub_appid = fields.get("sub_appid")
        if sub_appid and sub_appid != sub.sub_appid:
            raise BizFail("APPID_MCHID_NOT_MATCH", "sub_appid和sub_mch_id不匹配")

    # ------------------------------------------------------------------ unified order (spec 5)
    def unified_order(self, inst: Institution, sub: SubMerchant, f: Mapping[str, str]) -> dict[str, str | int]:
        rules = self.config.rules
        now = self.now()
        if f["trade_type"] != "JSAPI":
            raise BizFail(
                "PARAM_ERROR", f"trade_type参数错误: the sandbox serves JSAPI (Mini Program), not {f['trade_type']}"
            )
        if f.get("version") not in (None, "", "1.0"):
            raise BizFail("PARAM_ERROR", "version参数错误: must be 1.0")
        try:
            check_out_trade_no(f["out_trade_no"])
            check_text(f["body"], "body", 127)
            if f.get("attach"):
                check_text(f["attach"], "attach", 127)
            if f.get("detail"):
                check_text(f["detail"], "detail", 6000)
            for name in ("device_info", "goods_tag", "limit_pay", "product_id"):
                if f.get(name):
                    check_id(f[name], name)
            check_ip(f["spbill_create_ip"])
            check_notify_url(f["notify_url"], allow_local=True)
            time_expire: datetime | None = None
            if f.get("time_start"):
                parse_wx_time(f["time_start"], "time_start")
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
        if time_expire is not None and time_expire - now < timedelta(seconds=rules.time_expire_min_gap):
            raise BizFail(
                "PARAM_ERROR", f"time_expire参数错误: must be at least {rules.time_expire_min_gap} s after now"
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
        if outcome not in ("success", "cancel", "fail"):
            raise ControlError("outcome must be 'success', 'cancel' or 'fail'")
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
        if wallet < cash_fee:
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
        if notify.include_sign_type:
            fields["sign_type"] = order.sign_type
        if order.params.get("attach"):
            fields["attach"] = order.params["attach"]
        if order.params.get("version"):
            fields["version"] = order.params["version"]
        if order.rate is not None:
            fields[notify.rate_field] = str(order.rate)
        fields["sign"] = sign(fields, inst.key, order.sign_type)
        self._enqueue("payment", order, None, order.notify_url, encode_xml(fields))

    def _enqueue(self, kind: str, order: Order, refund: Refund | None, url: str, body: bytes) -> Notification:
        mode = order.notify_mode or self.notify_modes.get(order.out_trade_no) or self.notify_default
        now = self.now()
        due: datetime | None = now
        state = "pending"
        if mode == "late":
            due = now + timedelta(seconds=self.config.notify.late_seconds)
        elif mode == "never":
            due, state = None, "suppressed"
        notification = Notification(
            id=self._next_id(),
            kind="payment" if kind == "payment" else "refund",
            sub_mch_id=order.sub_mch_id,
            out_trade_no=order.out_trade_no,
            out_refund_no=refund.out_refund_no if refund else None,
            url=url,
            body=body,
            mode=mode,
            created_at=now,
            next_due=due,
        )
        notification.state = state  # type: ignore[assignment]
        self.notifications.append(notification)
        return notification

    def set_notify_mode(self, mode: str, out_trade_no: str | None) -> dict[str, Any]:
        if mode not in NOTIFY_MODES:
            raise ControlError(f"mode must be one of {', '.join(NOTIFY_MODES)}")
        if out_trade_no:
            self.notify_modes[out_trade_no] = mode
        else:
            self.notify_default = mode
        return {"default": self.notify_default, "orders": dict(self.notify_modes)}

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
        if refunded + refund_fee > order.total_fee:
            raise BizFail("PARAM_ERROR", "refund_fee参数错误: 申请退款金额超过订单可退金额")
        if (
            rules.refund_spacing
            and live
            and now - max(r.created_at for r in live) < timedelta(seconds=rules.refund_spacing)
        ):
            raise BizFail("FREQUENCY_LIMITED", f"同一笔订单两次退款需间隔{rules.refund_spacing}秒")
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
        if rules.cny_pool and self.pools.get(pool_key, 0) + sub.cny_pool < cash:
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
        return bill_bytes(lines, gzip_it=tar_type == "GZIP")

    # ------------------------------------------------------------------ faults
    def add_fault(self, body: Mapping[str, Any]) -> Fault:
        endpoint = str(body.get("endpoint", "")).rstrip("/").rsplit("/", 1)[-1]
        if endpoint not in ENDPOINTS:
            raise ControlError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
        kind = str(body.get("fault", ""))
        allowed = LOGIN_FAULTS if endpoint == "jscode2session" else XML_FAULTS
        if kind not in allowed:
            raise ControlError(f"fault for {endpoint} must be one of {', '.join(sorted(allowed))}")
        if kind.startswith("bill_") and endpoint != "downloadbill":
            raise ControlError(f"{kind} is a downloadbill fault")
        times = body.get("times", 1)
        delay = body.get("delay", 0.0)
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ControlError("times must be a positive integer")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 60:
            raise ControlError("delay must be 0 to 60 seconds")
        out_trade_no = body.get("out_trade_no")
        sub_mch_id = body.get("sub_mch_id")
        if sub_mch_id is not None and not isinstance(sub_mch_id, str):
            raise ControlError("sub_mch_id must be a string")
        fault = Fault(
            id=self._next_id(),
            endpoint=endpoint,
            fault=kind,
            times=times,
            out_trade_no=str(out_trade_no) if out_trade_no else None,
            delay=float(delay),
            sub_mch_id=sub_mch_id or None,
        )
        self.faults.append(fault)
        return fault

    def take_fault(
        self, endpoint: str, out_trade_no: str | None, sub_mch_id: str | None = None, *, kind: str | None = None
    ) -> Fault | None:
        """The first scripted fault matching the call (one of its ``times`` is used up), or None."""
        for fault in self.faults:
            if (
                fault.endpoint == endpoint
                and (kind is None or fault.fault == kind)
                and (fault.out_trade_no is None or fault.out_trade_no == out_trade_no)
                and (fault.sub_mch_id is None or fault.sub_mch_id == sub_mch_id)
            ):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def take_faults(self, endpoint: str, out_trade_no: str | None, sub_mch_id: str | None = None) -> list[Fault]:
        """The faults for one call: the first scripted match; when that is a bill fault, also the
        first matching scripted fault of each other bill kind (they combine in one bill)."""
        first = self.take_fault(endpoint, out_trade_no, sub_mch_id)
        if first is None:
            return []
        taken = [first]
        if first.fault in BILL_FAULTS:
            for kind in sorted(BILL_FAULTS - {first.fault}):
                more = self.take_fault(endpoint, out_trade_no, sub_mch_id, kind=kind)
                if more is not None:
                    taken.append(more)
        return taken

    # ------------------------------------------------------------------ time and the dispatcher
    def _next_event(self) -> datetime | None:
        times = [n.next_due for n in self.notifications if n.state == "pending" and n.next_due is not None]
        times += [r.due_at for r in self.refunds.values() if r.status == "PROCESSING"]
        return min(times, default=None)

    async def run_due(self) -> None:
        """Make every attempt and refund completion that is due now (awaited: determinism)."""
        if _IN_DISPATCH.get():
            # Called back from a notification receiver (same context): the outer run finishes the work.
            return
        async with self._timeline():
            await self._run_due_locked()

    def _timeline(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _run_due_locked(self) -> None:
        token = _IN_DISPATCH.set(True)
        try:
            while True:
                now = self.now()
                for refund in sorted(self.refunds.values(), key=lambda r: r.due_at):
                    if refund.status == "PROCESSING" and refund.due_at <= now:
                        self._complete_refund(refund)
                due = [
                    n
                    for n in self.notifications
                    if n.state == "pending" and n.next_due is not None and n.next_due <= now
                ]
                if not due:
                    return
                await asyncio.gather(*(self._deliver_scheduled(n) for n in due))
        finally:
            _IN_DISPATCH.reset(token)

    async def _deliver_scheduled(self, n: Notification) -> None:
        copies = 2 if n.mode in ("twice", "twice-concurrently") and n.deliveries == 0 else 1
        at = n.next_due or self.now()
        n.next_due = None
        attempts = await self.dispatcher.deliver(n, at, copies=copies, concurrent=n.mode == "twice-concurrently")
        n.deliveries += 1
        if any(a.verdict == "ack" for a in attempts):
            n.state = "delivered"
        elif any(a.verdict == "blocked" for a in attempts):
            n.state = "blocked"
        elif n.deliveries > len(self.config.notify.schedule):
            n.state = "exhausted"
        else:
            n.next_due = at + timedelta(seconds=self.config.notify.schedule[n.deliveries - 1])

    async def resend(self, notification_id: int, tamper: str | None = None) -> Notification:
        """One more delivery now. With ``tamper``, a forged copy instead: it never changes the
        notification's state (a receiver that acknowledges a forgery shows up as an ``ack``)."""
        n = self.notification(notification_id)
        body = self._tampered(n, tamper) if tamper is not None else None
        attempts = await self.dispatcher.deliver(
            n, self.now(), copies=1, concurrent=False, resend=True, body=body, tamper=tamper
        )
        forged = tamper is not None
        if (
            not forged
            and any(a.verdict == "ack" for a in attempts)
            and n.state in ("pending", "exhausted", "suppressed")
        ):
            n.state = "delivered"
            n.next_due = None
        return n

    def _tampered(self, n: Notification, tamper: str) -> bytes:
        inst = next((i for i in self.config.institutions if self.world.sub_merchant(i, n.sub_mch_id)), None)
        assert inst is not None
        fields: dict[str, str | int] = dict(decode_xml(n.body))
        other_key = "".join(self.ids.nonce()[:32])
        if n.kind == "payment":
            algorithm = str(fields.get("sign_type") or "MD5")
            if tamper == "bad_signature":
                fields["sign"] = ("0" * 31 + "1") if algorithm == "MD5" else ("0" * 63 + "1")
            elif tamper == "amount":
                fields["total_fee"] = int(fields["total_fee"]) + 1
            elif tamper == "unsigned":
                del fields["sign"]
            elif tamper == "other_key":
                fields["sign"] = sign({k: v for k, v in fields.items() if k != "sign"}, other_key, algorithm)
            elif tamper == "md5_downgrade":
                fields.pop("sign_type", None)
                fields["sign"] = sign({k: v for k, v in fields.items() if k != "sign"}, inst.key, "MD5")
            else:
                raise ControlError(f"payment tamper must be one of {', '.join(PAYMENT_TAMPERS)}")
            return encode_xml(fields)
        if tamper == "other_key":
            plaintext = decrypt_req_info(str(fields["req_info"]), inst.key)
            fields["req_info"] = encrypt_req_info(plaintext, other_key)
        elif tamper == "garbage":
            fields["req_info"] = "not base64 at all!"
        else:
            raise ControlError(f"refund tamper must be one of {', '.join(REFUND_TAMPERS)}")
        return encode_xml(fields)

    def notification(self, notification_id: int) -> Notification:
        for n in self.notifications:
            if n.id == notification_id:
                return n
        raise ControlError(f"no notification {notification_id}", 404)

    async def advance_by(self, seconds: object) -> None:
        """Move the clock ``seconds`` ahead (a finite number, 0 to :data:`MAX_ADVANCE`)."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or not 0 <= seconds <= MAX_ADVANCE
        ):
            raise ControlError(f"advance takes a number of seconds from 0 to {MAX_ADVANCE} (ten years)")
        await self.advance_to(self.now() + timedelta(seconds=seconds))

    async def advance_to(self, target: datetime) -> None:
        """Move the clock to ``target``, stopping at every due event on the way (in time order)."""
        if _IN_DISPATCH.get():
            # A notification receiver moving the clock: move it; the running dispatch continues.
            self.clock.set(target)
            return
        async with self._timeline():
            await self._run_due_locked()
            while True:
                nxt = self._next_event()
                if nxt is None or nxt > target:
                    break
                if nxt > self.now():
                    self.clock.set(nxt)
                await self._run_due_locked()
            if target > self.now() or not self.clock.realtime:
                self.clock.set(target)
            await self._run_due_locked()

    # ------------------------------------------------------------------ inspection
    def log_request(self, entry: dict[str, Any]) -> None:
        entry["id"] = len(self.journal) + 1
        self.journal.append(entry)
        if len(self.journal) > 10_000:
            del self.journal[:1000]

    def dump(self) -> dict[str, Any]:
        return {
            "now": self.now().isoformat(),
            "seed": self.config.seed,
            "orders": [o.to_json() for o in self.orders.values()],
            "refunds": [r.to_json() for r in self.refunds.values()],
            "notifications": [n.to_json() for n in self.notifications],
            "pools": {f"{sub}/{format_wx_date(day)}": amount for (sub, day), amount in sorted(self.pools.items())},
            "wallets": dict(self.wallets),
            "faults": [f.to_json() for f in self.faults],
            "notify_modes": {"default": self.notify_default, "orders": dict(self.notify_modes)},
        }


def utc_now() -> datetime:
    return datetime.now(UTC)
