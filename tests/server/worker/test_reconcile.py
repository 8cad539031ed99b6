"""Reconciliation against a real ledger: bills round-trip through the protocol's renderer and parser."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.protocol import CHINA_TZ, BillRow, parse_bill, render_bill
from minipay.server.domain import Payment, PaymentStatus, Refund, RefundStatus
from minipay.server.settings import SubMerchantSettings
from minipay.server.uow import UnitOfWork
from minipay.server.worker import (
    REFUND_JOB_KINDS,
    BillData,
    Reconciler,
    bill_data_from_rows,
    reconciliation_discrepancies,
)
from tests.server.worker.conftest import ManualClock, units

pytestmark = pytest.mark.anyio

SUB = SubMerchantSettings(
    sub_mch_id="1900000110", sub_appid="wx1234567890abcdef", app_secret=SecretStr("x" * 32), currency="HKD"
)
DAY = date(2026, 3, 1)
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=CHINA_TZ)


def _payment(n: int, amount: int, *, paid_at: datetime | None, status: PaymentStatus) -> Payment:
    return Payment(
        id=f"pay_{n}",
        institution="default",
        appid="wx8888888888888888",
        mch_id="1900000109",
        sub_mch_id=SUB.sub_mch_id,
        sub_appid=SUB.sub_appid,
        out_trade_no=f"ORDER{n}",
        amount=amount,
        currency="HKD",
        description="coffee",
        openid="o-alice",
        client_ip="127.0.0.1",
        created_at=(paid_at or NOON) - timedelta(minutes=1),
        updated_at=paid_at or NOON,
        status=status,
        transaction_id=f"42000000{n:02d}" if paid_at else None,
        paid_at=paid_at,
    )


async def _ledger(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as uow:
        await uow.payments.add(_payment(1, 1000, paid_at=NOON, status=PaymentStatus.PARTIALLY_REFUNDED))
        await uow.payments.add(_payment(2, 2500, paid_at=NOON + timedelta(hours=1), status=PaymentStatus.SUCCEEDED))
        # Paid just after midnight China time: the next day's bill, not this one.
        await uow.payments.add(
            _payment(3, 700, paid_at=datetime(2026, 3, 1, 16, 0, 1, tzinfo=UTC), status=PaymentStatus.SUCCEEDED)
        )
        await uow.payments.add(_payment(4, 900, paid_at=None, status=PaymentStatus.PENDING))
        await uow.refunds.add(
            Refund(
                id="re_1",
                payment_id="pay_1",
                sub_mch_id=SUB.sub_mch_id,
                mch_id="1900000109",
                out_refund_no="REFUND1",
                amount=300,
                currency="HKD",
                created_at=NOON + timedelta(hours=2),
                updated_at=NOON + timedelta(hours=2),
                status=RefundStatus.SUCCEEDED,
                refund_id="5000000001",
            )
        )
        await uow.commit()


def _trade_row(no: str, tid: str, amount: int, when: datetime) -> BillRow:
    return BillRow(
        transaction_time=when,
        sub_mch_id=SUB.sub_mch_id,
        transaction_id=tid,
        out_trade_no=no,
        trade_state="SUCCESS",
        fee_type="HKD",
        total_fee=amount,
        refund_id="0",
        out_refund_no="0",
        refund_fee=0,
    )


def _refund_row() -> BillRow:
    return BillRow(
        transaction_time=NOON + timedelta(hours=2),
        sub_mch_id=SUB.sub_mch_id,
        transaction_id="4200000001",
        out_trade_no="ORDER1",
        trade_state="REFUND",
        fee_type="HKD",
        total_fee=0,
        refund_id="5000000001",
        out_refund_no="REFUND1",
        refund_fee=300,
        refund_status="SUCCESS",
    )


class FakeBills:
    """A bill source serving rendered bill text (what the sandbox would send), parsed like the SDK does."""

    def __init__(self, rows: list[BillRow] | None, *, body: bytes | None = None) -> None:
        self.body = render_bill(rows) if rows is not None else body
        self.calls = 0

    async def download(self, sub: SubMerchantSettings, bill_date: date) -> BillData | None:
        self.calls += 1
        if self.body is None:
            return None
        return bill_data_from_rows(parse_bill(self.body).rows, sub.sub_mch_id)


MATCHING = [
    _trade_row("ORDER1", "4200000001", 1000, NOON),
    _trade_row("ORDER2", "4200000002", 2500, NOON + timedelta(hours=1)),
    _refund_row(),
]


async def test_a_bill_that_matches_the_ledger_gives_no_discrepancy(engine: AsyncEngine, clock: ManualClock) -> None:
    await _ledger(engine)
    reconciler = Reconciler(units(engine), clock, FakeBills(MATCHING))
    run = await reconciler.reconcile(SUB, DAY)
    assert (run.status, run.bill_rows, run.ledger_rows, run.discrepancy_count) == ("ok", 3, 3, 0)
    report = await reconciler.report(DAY)
    assert report["runs"][0]["status"] == "ok"
    assert report["discrepancies"] == []


async def test_the_documented_domestic_partner_layout_reconciles_clean(engine: AsyncEngine, clock: ManualClock) -> None:
    """The spec's Chinese ALL layout (fixture: the MATCHING bill's trades, fees to 5 decimals)."""
    await _ledger(engine)
    body = (Path(__file__).parents[2] / "fixtures" / "domestic_partner_bill.csv").read_bytes()
    reconciler = Reconciler(units(engine), clock, FakeBills(None, body=body))
    run = await reconciler.reconcile(SUB, DAY)
    assert (run.status, run.bill_rows, run.ledger_rows, run.discrepancy_count) == ("ok", 3, 3, 0)
    # the same bill with one payment changed is caught: the layout is really read, not skipped
    changed = body.replace(b"`25.00,`0.00,`0,`0", b"`24.00,`0.00,`0,`0")
    assert changed != body
    run = await Reconciler(units(engine), clock, FakeBills(None, body=changed)).reconcile(SUB, DAY, replace=True)
    assert run.discrepancy_count == 1


async def test_an_extra_and_a_missing_trade_give_exactly_those_two_discrepancies(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    await _ledger(engine)
    rows = [MATCHING[0], _trade_row("PHANTOM1", "4200000099", 100, NOON), MATCHING[2]]  # ORDER2 missing
    reconciler = Reconciler(units(engine), clock, FakeBills(rows))
    run = await reconciler.reconcile(SUB, DAY)
    assert (run.status, run.discrepancy_count) == ("discrepancies", 2)
    report = await reconciler.report(DAY)
    assert [(d["kind"], d["out_trade_no"]) for d in report["discrepancies"]] == [
        ("missing_in_bill", "ORDER2"),
        ("missing_in_ledger", "PHANTOM1"),
    ]
    assert report["discrepancies"][1]["bill"]["total_fee"] == 100


async def test_reconciling_again_never_duplicates_rows(engine: AsyncEngine, clock: ManualClock) -> None:
    await _ledger(engine)
    bills = FakeBills([MATCHING[0]])
    reconciler = Reconciler(units(engine), clock, bills)
    first = await reconciler.reconcile(SUB, DAY)
    again = await reconciler.reconcile(SUB, DAY)  # a job taken over from a killed worker
    assert again == first
    assert bills.calls == 1
    replaced = await reconciler.reconcile(SUB, DAY, replace=True)  # `minipay reconcile --date`
    assert replaced.discrepancy_count == first.discrepancy_count == 2
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(reconciliation_discrepancies))).scalar_one()
    assert count == 2


async def test_refund_job_discrepancies_are_recorded_once_and_survive_a_replaced_run(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    await _ledger(engine)
    reconciler = Reconciler(units(engine), clock, FakeBills([MATCHING[0]]))
    await reconciler.reconcile(SUB, DAY)
    first = await reconciler.record_refund_missing(SUB.sub_mch_id, "ref_1", "REFUND1", "50300000001", "processing")
    again = await reconciler.record_refund_missing(SUB.sub_mch_id, "ref_1", "REFUND1", "50300000001", "processing")
    assert (first, again) == (True, False)
    await reconciler.record_refund_conflict(SUB.sub_mch_id, "ref_1", "REFUND1", "succeeded", "REFUNDCLOSE")
    replaced = await reconciler.reconcile(SUB, DAY, replace=True)  # `minipay reconcile --date` keeps them
    found = (await reconciler.report(DAY))["discrepancies"]
    assert len(found) == replaced.discrepancy_count + 2
    from_refund_job = [(d["kind"], d["out_refund_no"], d["refund_id"]) for d in found]
    assert [k for k in from_refund_job if k[0] in REFUND_JOB_KINDS] == [
        ("refund_missing_at_wechat", "REFUND1", "50300000001"),
        ("refund_status_mismatch", "REFUND1", None),
    ]


async def test_two_workers_following_one_refund_at_once_record_its_discrepancy_once(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """A job taken over from a worker thought dead runs twice at once: the first unit of work has
    added the row and not committed yet when the second tries (on PostgreSQL the second waits on the
    unique index, on SQLite for the writer), and the second adds nothing."""

    async def add(uow: UnitOfWork) -> bool:
        return await uow.reconciliation.add_refund_discrepancy_once(
            "refund_missing_at_wechat",
            SUB.sub_mch_id,
            "REFUND1",
            bill_date=DAY,
            refund_id="50300000001",
            ledger={"refund": "ref_1"},
            bill={"refund_status": "REFUNDNOTEXIST"},
            detail="missing at WeChat",
            now=clock.now(),
        )

    async def second() -> bool:
        async with UnitOfWork(engine) as uow:
            added = await add(uow)
            await uow.commit()
        return added

    async with UnitOfWork(engine) as first:
        first_added = await add(first)
        later = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not later.done()  # waiting for the first transaction
        await first.commit()
    assert (first_added, await later) == (True, False)
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(reconciliation_discrepancies))).scalar_one()
    assert count == 1
    with pytest.raises(ValueError, match="not a refund-job discrepancy kind"):
        async with UnitOfWork(engine) as uow:
            await uow.reconciliation.add_refund_discrepancy_once(
                "missing_in_bill", SUB.sub_mch_id, "REFUND1", bill_date=DAY, refund_id=None,
                ledger={}, bill={}, detail="", now=clock.now(),
            )  # fmt: skip


async def test_no_bill_with_payments_in_the_ledger_reports_them_missing(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    await _ledger(engine)
    run = await Reconciler(units(engine), clock, FakeBills(None)).reconcile(SUB, DAY)
    assert (run.status, run.bill_rows, run.discrepancy_count) == ("discrepancies", 0, 3)


async def test_a_day_without_trades_and_without_a_bill_is_clean(engine: AsyncEngine, clock: ManualClock) -> None:
    run = await Reconciler(units(engine), clock, FakeBills(None)).reconcile(SUB, DAY - timedelta(days=1))
    assert (run.status, run.discrepancy_count) == ("ok", 0)


async def test_a_sub_merchant_key_sees_only_its_own_report(engine: AsyncEngine, clock: ManualClock) -> None:
    await _ledger(engine)
    reconciler = Reconciler(units(engine), clock, FakeBills([]))
    await reconciler.reconcile(SUB, DAY)
    assert len((await reconciler.report(DAY, [SUB.sub_mch_id]))["discrepancies"]) == 3
    other = await reconciler.report(DAY, ["1900000111"])
    assert other == {"date": "2026-03-01", "runs": [], "discrepancies": []}
