"""The sandbox's mutable state (orders, refunds, notifications, wallets, CNY pools) and the
lookups every rule shares: the configured world, the clock, order lookup, the notification queue.

The rules live in mixins built on :class:`BackendState` (``_orders``, ``_refunds``, ``_cashier``,
``_timeline``, ``_bills``, ``_faults``); ``_backend.Backend`` combines them. Time comes from the
virtual clock only; ids from the seeded factory.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from minipay.protocol import (
    FieldError,
    check_amount,
    check_out_trade_no,
    china_date,
    format_wx_date,
    parse_wire_int,
)
from minipay.sandbox._clock import VirtualClock
from minipay.sandbox._config import NOTIFY_MODES, Institution, SandboxConfig, SubMerchant
from minipay.sandbox._errors import BizFail, ControlError
from minipay.sandbox._ids import IdFactory
from minipay.sandbox._models import Fault, LoginCode, Notification, Order, Refund
from minipay.sandbox._notifier import Dispatcher

__all__ = ["FIELD_LENGTHS", "BackendState", "World", "utc_now"]

_TRANSACTION_ID_RE = re.compile(r"\d{28}")
_TRADE_STATE_DESC = {"SUCCESS": "支付成功", "REFUND": "转入退款", "NOTPAY": "订单未支付", "CLOSED": "订单已关闭"}
_UNCOMPARED = frozenset({"nonce_str", "sign", "sign_type"})


#: Field -> (longest, counted in UTF-8 bytes when ``byte_lengths`` is on): the lengths of spec 16.5.
FIELD_LENGTHS: dict[str, tuple[int, bool]] = {
    "body": (127, True), "attach": (127, True), "detail": (6000, True), "nonce_str": (32, False),
    "out_trade_no": (32, False), "out_refund_no": (64, False), "refund_desc": (80, False),
    "device_info": (32, False), "goods_tag": (32, False), "notify_url": (256, False),
    "openid": (128, False), "sub_openid": (128, False), "transaction_id": (32, False),
}  # fmt: skip


def _param(field: str, exc: FieldError) -> BizFail:
    return BizFail("PARAM_ERROR", f"{field}参数错误: {exc.reason}")


def _int_field(fields: Mapping[str, str], name: str) -> int:
    text = fields[name]
    try:
        value = parse_wire_int(text, name, negative=False)  # not "²" (int() fails), not "١٠٠" (100)
    except FieldError:
        raise BizFail(
            "PARAM_ERROR", f"{name}参数错误: must be a positive integer of minor units, got {text!r}"
        ) from None
    try:
        return check_amount(value, name)
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


class BackendState:
    """All mutable sandbox state and the lookups every rule shares."""

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
        for task in getattr(self, "tasks", ()):
            task.cancel()
        #: Asynchronous first deliveries waiting for their real-time delay (see ``_timeline``).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Notification id -> real seconds its first delivery is held back (not due until released).
        self.held: dict[int, float] = {}
        self.delays = random.Random(self.config.seed)
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

    def too_long(self, fields: Mapping[str, str]) -> str | None:
        """The first field longer than :data:`FIELD_LENGTHS` allows (UTF-8 bytes for ``body``,
        ``attach`` and ``detail`` when the ``byte_lengths`` rule is on), or None."""
        in_bytes = self.config.effective.byte_lengths
        for name, (longest, byte_counted) in FIELD_LENGTHS.items():
            value = fields.get(name)
            if value is not None:
                size = len(value.encode("utf-8", "surrogatepass")) if byte_counted and in_bytes else len(value)
                if size > longest:
                    return name
        return None

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
