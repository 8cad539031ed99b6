"""T+1 bills against the ledger, with the sandbox's bill faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from minipay.sandbox import SandboxConfig
from minipay.server.worker import BILL_RECONCILE, WorkerConfig
from tests.e2e.conftest import open_stack
from tests.e2e.stack import START, Stack

pytestmark = pytest.mark.anyio

SUB1, SUB2 = "1900000110", "1900000111"
DAY = START.date()  # 2026-03-02, China time
NEXT_MORNING = START + timedelta(days=1, minutes=5)  # bills of DAY are ready from 10:00 on DAY+1

#: No active query before the bill: a payment WeChat has and we never heard of stays unknown here.
NO_QUERIES = WorkerConfig(query_delay=timedelta(days=3), bill_lookback_days=1)


@pytest.fixture(
    params=[
        ("sqlite", "documented"),
        ("sqlite", "english"),
        pytest.param(("postgres", "documented"), marks=pytest.mark.postgres),
    ],
    ids=lambda p: "-".join(p),
)
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The whole system, the sandbox rendering bills in the documented (Chinese) or the English layout."""
    database, layout = request.param
    config = SandboxConfig.default()
    config = config.model_copy(update={"rules": config.rules.model_copy(update={"bill_layout": layout})})
    async with open_stack(database, tmp_path, sandbox_config=config) as s:
        yield s


async def _report(stack: Stack, key: str) -> dict[str, object]:
    r = await stack.service.get(f"/v1/reconciliation/{DAY.isoformat()}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    report: dict[str, object] = r.json()
    return report


async def test_a_clean_day_reconciles_with_zero_discrepancies(stack: Stack) -> None:
    first = await stack.create_payment(1000)
    await stack.pay(first)
    second = await stack.create_payment(2500)
    await stack.pay(second)
    await stack.refund(first["id"], 300)
    await stack.set_clock(NEXT_MORNING)
    await stack.worker.run_until_idle()
    backend = stack.sandbox_app.state.sandbox
    layout = backend.config.effective.bill_layout
    body = backend.download_bill(backend.config.institutions[0], {"bill_date": DAY.strftime("%Y%m%d")})
    assert body.decode().startswith({"documented": "交易时间,", "english": "Transaction time,"}[layout])
    job = await stack.job(BILL_RECONCILE, f"{SUB1}:{DAY.isoformat()}")
    assert job["result"] == {"outcome": "ok", "discrepancies": 0}, layout
    report = await _report(stack, stack.keys["admin"])
    runs = {r["sub_mch_id"]: r for r in report["runs"]}  # type: ignore[attr-defined]
    assert (runs[SUB1]["status"], runs[SUB1]["bill_rows"], runs[SUB1]["ledger_rows"]) == ("ok", 3, 3)
    assert runs[SUB2]["status"] == "ok"  # no trades and "No Bill Exist": nothing to compare
    assert report["discrepancies"] == []


async def test_a_bill_with_an_extra_and_a_missing_trade_yields_exactly_those_two(stack: Stack) -> None:
    worker = stack.new_worker(NO_QUERIES, name="bills-only")
    first = await stack.create_payment(1000)
    await stack.pay(first)
    await stack.advance(60)
    last = await stack.create_payment(2500)
    await stack.pay(last)  # the day's last trade: the injected fault drops it from the bill
    assert [(await stack.payment(p["id"]))["status"] for p in (first, last)] == ["succeeded", "succeeded"]
    # Both of the sandbox's own bill injections, for this sub-merchant's bill only: they apply together.
    await stack.fault(endpoint="downloadbill", fault="bill_extra_trade", sub_mch_id=SUB1)
    await stack.fault(endpoint="downloadbill", fault="bill_missing_trade", sub_mch_id=SUB1)
    await stack.set_clock(NEXT_MORNING)
    await worker.run_until_idle()

    bills = await stack.journal("downloadbill")
    assert [(b["fields"].get("sub_mch_id"), b["fault"]) for b in bills if b["fault"]] == [
        (SUB1, "bill_extra_trade+bill_missing_trade")
    ]
    report = await _report(stack, stack.keys["admin"])
    found = sorted((d["kind"], d["out_trade_no"]) for d in report["discrepancies"])  # type: ignore[attr-defined]
    assert len(found) == 2
    assert found[0] == ("missing_in_bill", last["out_trade_no"])
    assert found[1][0] == "missing_in_ledger"
    assert found[1][1].startswith("PHANTOM")
    phantom = next(d for d in report["discrepancies"] if d["kind"] == "missing_in_ledger")  # type: ignore[attr-defined]
    assert (phantom["sub_mch_id"], phantom["bill"]["total_fee"], phantom["ledger"]) == (SUB1, 100, None)
    runs = {r["sub_mch_id"]: r for r in report["runs"]}  # type: ignore[attr-defined]
    assert (runs[SUB1]["status"], runs[SUB1]["discrepancies"]) == ("discrepancies", 2)
    assert (runs[SUB1]["bill_rows"], runs[SUB1]["ledger_rows"]) == (2, 2)  # one real row dropped, one phantom
    assert runs[SUB2]["status"] == "ok"
    # Nothing was edited: both payments stay as they were.
    assert [(await stack.payment(p["id"]))["status"] for p in (first, last)] == ["succeeded", "succeeded"]
    # A sub-merchant key sees only its own reconciliation.
    assert (await _report(stack, stack.keys[SUB2]))["discrepancies"] == []


async def test_a_payment_never_notified_and_a_trade_dropped_from_the_bill_are_both_reported(stack: Stack) -> None:
    # The same two discrepancies with a real extra trade: paid at WeChat, never heard of here.
    worker = stack.new_worker(NO_QUERIES, name="bills-only")
    unknown_here = await stack.create_payment(700)
    await stack.pay(unknown_here, notify="never")  # paid at WeChat, never told: the bill's extra trade
    known = await stack.create_payment(1000)
    await stack.advance(60)
    await stack.pay(known)  # the day's last trade: the fault drops it from the bill
    assert (await stack.payment(known["id"]))["status"] == "succeeded"
    await stack.fault(endpoint="downloadbill", fault="bill_missing_trade", sub_mch_id=SUB1)
    await stack.set_clock(NEXT_MORNING)
    await worker.run_until_idle()

    report = await _report(stack, stack.keys["admin"])
    found = [(d["kind"], d["out_trade_no"]) for d in report["discrepancies"]]  # type: ignore[attr-defined]
    assert sorted(found) == [
        ("missing_in_bill", known["out_trade_no"]),
        ("missing_in_ledger", unknown_here["out_trade_no"]),
    ]
    runs = {r["sub_mch_id"]: r for r in report["runs"]}  # type: ignore[attr-defined]
    assert (runs[SUB1]["status"], runs[SUB1]["discrepancies"]) == ("discrepancies", 2)
    # Nothing was edited: the payment WeChat has stays pending here until the active query says so.
    assert (await stack.payment(unknown_here["id"]))["status"] == "pending"
    # A sub-merchant key sees only its own reconciliation.
    assert (await _report(stack, stack.keys[SUB2]))["discrepancies"] == []


async def test_a_phantom_trade_in_the_bill_is_reported(stack: Stack) -> None:
    worker = stack.new_worker(NO_QUERIES, name="bills-only")
    payment = await stack.create_payment(1000)
    await stack.pay(payment)
    await stack.fault(endpoint="downloadbill", fault="bill_extra_trade", sub_mch_id=SUB1)
    await stack.set_clock(NEXT_MORNING)
    await worker.run_until_idle()
    report = await _report(stack, stack.keys[SUB1])
    (only,) = report["discrepancies"]  # type: ignore[misc]
    assert only["kind"] == "missing_in_ledger"
    assert only["out_trade_no"].startswith("PHANTOM")
    assert only["bill"]["total_fee"] == 100


async def test_the_reconciliation_api_needs_a_valid_key_and_a_date(stack: Stack) -> None:
    r = await stack.service.get(f"/v1/reconciliation/{DAY.isoformat()}")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = await stack.service.get("/v1/reconciliation/2026-3-2", headers=stack.headers())
    assert r.status_code == 400
    r = await stack.service.get(f"/v1/reconciliation/{DAY.isoformat()}", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
