"""Scripted faults: which endpoint fails how, how many times, for which order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minipay.sandbox._errors import ControlError
from minipay.sandbox._models import Fault
from minipay.sandbox._state import BackendState

__all__ = ["BILL_FAULTS", "ENDPOINTS", "LOGIN_FAULTS", "XML_FAULTS", "FaultRules"]

XML_FAULTS = frozenset(
    {"SYSTEMERROR", "http_500", "delay", "drop", "lost_response", "bad_signature", "bill_extra_trade",
     "bill_missing_trade"}
)  # fmt: skip
#: Faults that change the bill's rows: one of each kind may apply to the same downloadbill request.
BILL_FAULTS = frozenset({"bill_extra_trade", "bill_missing_trade"})
LOGIN_FAULTS = frozenset({"http_500", "delay", "drop", "lost_response", "-1", "45011", "40226"})
ENDPOINTS = (
    "unifiedorder", "orderquery", "closeorder", "refund", "refundquery", "downloadbill", "queryexchagerate",
    "report", "jscode2session",
)  # fmt: skip


class FaultRules(BackendState):
    """The scripted-fault list."""

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
