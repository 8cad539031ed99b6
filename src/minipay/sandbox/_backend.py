"""The sandbox backend: the state of the simulated WeChat Pay and its business rules.

Handlers (``_wire.py``) authenticate a request and hand the raw field dict to one method here;
each method returns the business fields of the answer or raises a wire-coded error
(``_errors.py``). The rules are split by job: ``_state`` (state and shared lookups), ``_orders``,
``_refunds``, ``_cashier`` (login and wx.requestPayment), ``_timeline`` (notifications and the
clock), ``_billing`` (rates and bills) and ``_faults``.
"""

from __future__ import annotations

from minipay.sandbox._billing import BillRules
from minipay.sandbox._cashier import Cashier
from minipay.sandbox._faults import BILL_FAULTS, ENDPOINTS, LOGIN_FAULTS, XML_FAULTS, FaultRules
from minipay.sandbox._state import World, utc_now
from minipay.sandbox._timeline import MAX_ADVANCE, PAYMENT_TAMPERS, REFUND_TAMPERS

__all__ = [
    "BILL_FAULTS", "ENDPOINTS", "LOGIN_FAULTS", "MAX_ADVANCE", "PAYMENT_TAMPERS", "REFUND_TAMPERS", "XML_FAULTS",
    "Backend", "World", "utc_now",
]  # fmt: skip


class Backend(Cashier, BillRules, FaultRules):
    """All mutable sandbox state plus the rules that change it."""
