"""Stateful property test: random sequences of orders, payments, refunds, closes and clock moves
keep the ledger's invariants (money never refunded twice, states only move forward)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import httpx2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from minipay.protocol import build_pay_params, to_unix
from minipay.sandbox import SandboxConfig, create_app
from minipay.sandbox._config import Institution, SubMerchant
from minipay.sandbox._errors import BizFail
from tests.sandbox.conftest import HKD_APP, HKD_SUB, KEY, START, Receiver

ORDER_NOS = [f"P{i}" for i in range(4)]
REFUND_NOS = [f"R{i}" for i in range(6)]
FORWARD = {
    "NOTPAY": {"NOTPAY", "SUCCESS", "CLOSED"},
    "SUCCESS": {"SUCCESS", "REFUND"},
    "REFUND": {"REFUND"},
    "CLOSED": {"CLOSED"},
}


def _code(call: Callable[[], object]) -> str | None:
    """The err_code a backend call fails with, or None when it succeeds."""
    try:
        call()
    except BizFail as exc:
        return exc.err_code
    return None


class SandboxLedger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        receiver = Receiver()
        config = SandboxConfig.from_dict({"rules": {"refund_spacing": 0, "close_min_age": 0}})
        self.app = create_app(config, seed=1, start=START, notify_transport=httpx2.ASGITransport(receiver.app()))
        self.backend = self.app.state.sandbox
        self.inst: Institution = self.backend.config.institutions[0]
        self.sub: SubMerchant = self.inst.sub_merchants[0]
        self.openid = self.backend.login(HKD_APP, "prop")["openid"]
        self.states: dict[str, str] = {}

    def _fields(self, no: str, amount: int) -> dict[str, str]:
        return {
            "appid": self.inst.appid, "mch_id": self.inst.mch_id, "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP,
            "body": "prop", "out_trade_no": no, "fee_type": "HKD", "total_fee": str(amount),
            "spbill_create_ip": "127.0.0.1", "notify_url": "http://m.test/n", "trade_type": "JSAPI",
            "sub_openid": self.openid,
        }  # fmt: skip

    @rule(no=st.sampled_from(ORDER_NOS), amount=st.sampled_from([1, 999, 1000, 1001]))
    def create(self, no: str, amount: int) -> None:
        code = _code(lambda: self.backend.unified_order(self.inst, self.sub, self._fields(no, amount)))
        assert code in (None, "INVALID_REQUEST", "ORDERPAID", "ORDERCLOSED")

    @rule(no=st.sampled_from(ORDER_NOS), outcome=st.sampled_from(["success", "success", "cancel"]))
    def pay(self, no: str, outcome: str) -> None:
        order = self.backend.orders.get((HKD_SUB, no))
        if order is None:
            return
        params = build_pay_params(
            app_id=HKD_APP, prepay_id=order.prepay_id, key=KEY, timestamp=to_unix(self.backend.now())
        )
        answer = asyncio.run(self.backend.pay({**params, "outcome": outcome}))
        assert answer["errMsg"].startswith("requestPayment:")

    @rule(no=st.sampled_from(ORDER_NOS), refund_no=st.sampled_from(REFUND_NOS), fee=st.integers(1, 1001))
    def refund(self, no: str, refund_no: str, fee: int) -> None:
        order = self.backend.orders.get((HKD_SUB, no))
        total = order.total_fee if order else 1000
        fields = {
            "appid": self.inst.appid, "mch_id": self.inst.mch_id, "sub_mch_id": HKD_SUB, "out_trade_no": no,
            "out_refund_no": refund_no, "total_fee": str(total), "refund_fee": str(fee),
        }  # fmt: skip
        code = _code(lambda: self.backend.refund(self.inst, self.sub, fields))
        assert code in (None, "ORDERNOTEXIST", "PARAM_ERROR", "ERROR")

    @rule(no=st.sampled_from(ORDER_NOS))
    def close(self, no: str) -> None:
        code = _code(lambda: self.backend.close_order(self.sub, {"out_trade_no": no}))
        assert code in (None, "ORDERNOTEXIST", "ORDERPAID", "ORDERCLOSED")

    @rule(seconds=st.sampled_from([1, 59, 60, 3600, 7200]))
    def advance(self, seconds: int) -> None:
        asyncio.run(self.backend.advance_to(self.backend.now() + timedelta(seconds=seconds)))

    @invariant()
    def states_only_move_forward(self) -> None:
        for (_, no), order in self.backend.orders.items():
            before = self.states.get(no, "NOTPAY")
            assert order.state in FORWARD[before], (no, before, order.state)
            self.states[no] = order.state

    @invariant()
    def money_is_never_refunded_twice(self) -> None:
        for order in self.backend.orders.values():
            refunds = [self.backend.refunds[(order.sub_mch_id, r)] for r in order.refunds]
            live = [r for r in refunds if r.status != "REFUNDCLOSE"]
            assert sum(r.refund_fee for r in live) <= order.total_fee
            assert all(r.cash_refund_fee >= 0 for r in refunds)
            if order.cash_fee is not None:
                assert sum(r.cash_refund_fee for r in live) <= order.cash_fee
            assert (order.state == "REFUND") == bool(refunds)
            if refunds:
                assert order.transaction_id is not None

    @invariant()
    def each_payment_is_notified_once_and_ids_are_unique(self) -> None:
        paid = [o for o in self.backend.orders.values() if o.transaction_id]
        assert len({o.transaction_id for o in paid}) == len(paid)
        payments = [n for n in self.backend.notifications if n.kind == "payment"]
        assert sorted(n.out_trade_no for n in payments) == sorted(o.out_trade_no for o in paid)
        refund_ids = [r.refund_id for r in self.backend.refunds.values()]
        assert len(set(refund_ids)) == len(refund_ids)


SandboxLedger.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_sandbox_ledger_invariants = SandboxLedger.TestCase
