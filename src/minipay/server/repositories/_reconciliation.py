"""The reconciliation repository: the ledger side of a bill day, the stored runs and their
discrepancies (``reconciliation_runs``, ``reconciliation_discrepancies``). Nothing here edits money."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import RowMapping

from minipay.server import db
from minipay.server.repositories._base import Repository

__all__ = [
    "DiscrepancyRow",
    "LedgerPayment",
    "LedgerRefund",
    "ReconciliationRepository",
    "RunRecord",
]

_runs, _disc = db.reconciliation_runs, db.reconciliation_discrepancies
# A refund-job discrepancy unless that refund has one of that kind: the row's id back, or no row.
_ADD_REFUND_DISCREPANCY = {
    name: dialect.insert(_disc)
    .on_conflict_do_nothing(
        index_elements=[_disc.c.kind, _disc.c.sub_mch_id, _disc.c.out_refund_no],
        index_where=db.REFUND_JOB_ROWS,
    )
    .returning(_disc.c.id)
    for name, dialect in (("sqlite", sqlite_dialect), ("postgresql", postgresql_dialect))
}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One reconciliation of one sub-merchant's bill day."""

    bill_date: date
    sub_mch_id: str
    status: str  # ok | discrepancies | error | not_ready (the last is never stored)
    bill_rows: int
    ledger_rows: int
    discrepancy_count: int
    error: str | None = None


class DiscrepancyRow(Protocol):
    """What is stored of a difference between a bill and the ledger (``worker.Discrepancy`` is one)."""

    @property
    def sub_mch_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def out_trade_no(self) -> str | None: ...
    @property
    def transaction_id(self) -> str | None: ...
    @property
    def out_refund_no(self) -> str | None: ...
    @property
    def refund_id(self) -> str | None: ...
    @property
    def bill(self) -> Mapping[str, Any] | None: ...
    @property
    def ledger(self) -> Mapping[str, Any] | None: ...
    @property
    def detail(self) -> str: ...


class LedgerPayment(NamedTuple):
    out_trade_no: str
    transaction_id: str | None
    amount: int
    currency: str


class LedgerRefund(NamedTuple):
    out_trade_no: str  # its payment's
    out_refund_no: str
    refund_id: str | None
    amount: int
    currency: str


def _scoped(column: Any, sub_mch_ids: Sequence[str] | None) -> Any:
    return None if sub_mch_ids is None else column.in_(list(sub_mch_ids))


class ReconciliationRepository(Repository):
    # -- the ledger

    async def ledger_payments(
        self, sub_mch_id: str, *, statuses: Collection[str], paid_gte: datetime, paid_lt: datetime
    ) -> list[LedgerPayment]:
        """The sub-merchant's payments in ``statuses`` paid (WeChat's ``time_end``) in ``[paid_gte, paid_lt)``."""
        p = db.payments
        query = select(p.c.out_trade_no, p.c.transaction_id, p.c.amount, p.c.currency).where(
            p.c.sub_mch_id == sub_mch_id,
            p.c.status.in_(sorted(str(s) for s in statuses)),
            p.c.paid_at >= paid_gte,
            p.c.paid_at < paid_lt,
        )
        return [LedgerPayment(no, tid, int(amount), cur) for no, tid, amount, cur in (await self.conn.execute(query))]

    async def ledger_refunds(
        self, sub_mch_id: str, *, statuses: Collection[str], created_gte: datetime, created_lt: datetime
    ) -> list[LedgerRefund]:
        """The sub-merchant's refunds in ``statuses`` created in ``[created_gte, created_lt)``."""
        p, r = db.payments, db.refunds
        query = (
            select(p.c.out_trade_no, r.c.out_refund_no, r.c.refund_id, r.c.amount, r.c.currency)
            .select_from(r.join(p, p.c.id == r.c.payment_id))
            .where(
                r.c.sub_mch_id == sub_mch_id,
                r.c.status.in_(sorted(str(s) for s in statuses)),
                r.c.created_at >= created_gte,
                r.c.created_at < created_lt,
            )
        )
        return [
            LedgerRefund(no, rno, rid, int(amount), cur)
            for no, rno, rid, amount, cur in (await self.conn.execute(query))
        ]

    # -- runs

    async def run(self, sub_mch_id: str, day: date) -> RunRecord | None:
        row = (
            (
                await self.conn.execute(
                    select(_runs).where(and_(_runs.c.bill_date == day, _runs.c.sub_mch_id == sub_mch_id))
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        return RunRecord(
            bill_date=row["bill_date"],
            sub_mch_id=row["sub_mch_id"],
            status=row["status"],
            bill_rows=row["bill_rows"],
            ledger_rows=row["ledger_rows"],
            discrepancy_count=row["discrepancy_count"],
            error=row["error"],
        )

    async def store_run(
        self,
        record: RunRecord,
        found: Sequence[DiscrepancyRow],
        *,
        started_at: datetime,
        now: datetime,
        replace: bool,
        keep_kinds: Collection[str] = (),
    ) -> None:
        """Insert the run and its discrepancies. ``replace``: first delete the day's run and its
        discrepancies (but those of ``keep_kinds``, which no bill run recorded). Raises
        ``IntegrityError`` when the day's run exists (and ``replace`` is False)."""
        if replace:
            await self.conn.execute(
                delete(_disc).where(
                    _disc.c.bill_date == record.bill_date,
                    _disc.c.sub_mch_id == record.sub_mch_id,
                    _disc.c.kind.not_in(list(keep_kinds)),
                )
            )
            await self.conn.execute(
                delete(_runs).where(_runs.c.bill_date == record.bill_date, _runs.c.sub_mch_id == record.sub_mch_id)
            )
        await self.conn.execute(
            insert(_runs).values(
                bill_date=record.bill_date,
                sub_mch_id=record.sub_mch_id,
                status=record.status,
                bill_rows=record.bill_rows,
                ledger_rows=record.ledger_rows,
                discrepancy_count=record.discrepancy_count,
                error=record.error,
                started_at=started_at,
                finished_at=now,
            )
        )
        if found:
            await self.conn.execute(
                insert(_disc),
                [
                    {
                        "bill_date": record.bill_date,
                        "sub_mch_id": d.sub_mch_id,
                        "kind": d.kind,
                        "out_trade_no": d.out_trade_no,
                        "transaction_id": d.transaction_id,
                        "out_refund_no": d.out_refund_no,
                        "refund_id": d.refund_id,
                        "bill": dict(d.bill) if d.bill is not None else None,
                        "ledger": dict(d.ledger) if d.ledger is not None else None,
                        "detail": d.detail,
                        "created_at": now,
                    }
                    for d in found
                ],
            )

    async def add_refund_discrepancy_once(
        self,
        kind: str,
        sub_mch_id: str,
        out_refund_no: str,
        *,
        bill_date: date,
        refund_id: str | None,
        ledger: Mapping[str, Any],
        bill: Mapping[str, Any],
        detail: str,
        now: datetime,
    ) -> bool:
        """Record a discrepancy of a refund unless one of that ``kind`` exists for it; True when added.

        One statement (``INSERT … ON CONFLICT DO NOTHING`` on the table's unique index of refund-job
        rows): two workers following the same refund at once add one row, never two."""
        if kind not in db.REFUND_JOB_KINDS:
            raise ValueError(f"not a refund-job discrepancy kind: {kind!r}")
        row = {
            "bill_date": bill_date,
            "sub_mch_id": sub_mch_id,
            "kind": kind,
            "out_refund_no": out_refund_no,
            "refund_id": refund_id,
            "ledger": dict(ledger),
            "bill": dict(bill),
            "detail": detail,
            "created_at": now,
        }
        added = await self.conn.execute(_ADD_REFUND_DISCREPANCY[self.conn.dialect.name], row)
        return added.first() is not None

    # -- reading a day

    async def runs_of_day(self, day: date, *, sub_mch_ids: Sequence[str] | None = None) -> Sequence[RowMapping]:
        """The day's runs (of ``sub_mch_ids``; every sub-merchant's for None), by sub-merchant."""
        query = select(_runs).where(_runs.c.bill_date == day).order_by(_runs.c.sub_mch_id)
        scope = _scoped(_runs.c.sub_mch_id, sub_mch_ids)
        if scope is not None:
            query = query.where(scope)
        return (await self.conn.execute(query)).mappings().all()

    async def discrepancies_of_day(
        self, day: date, *, sub_mch_ids: Sequence[str] | None = None, with_payment_id: bool = False
    ) -> Sequence[RowMapping]:
        """The day's discrepancies (of ``sub_mch_ids``; all for None), by sub-merchant then as recorded;
        ``with_payment_id`` adds ``payment_id``, the id of the payment with that ``out_trade_no`` when known."""
        query = select(_disc)
        if with_payment_id:
            p = db.payments
            query = select(_disc, p.c.id.label("payment_id")).select_from(
                _disc.outerjoin(p, (p.c.out_trade_no == _disc.c.out_trade_no) & (p.c.sub_mch_id == _disc.c.sub_mch_id))
            )
        query = query.where(_disc.c.bill_date == day).order_by(_disc.c.sub_mch_id, _disc.c.id)
        scope = _scoped(_disc.c.sub_mch_id, sub_mch_ids)
        if scope is not None:
            query = query.where(scope)
        return (await self.conn.execute(query)).mappings().all()

    async def recent_runs(self, *, sub_mch_ids: Sequence[str] | None = None, limit: int) -> Sequence[RowMapping]:
        """The newest runs first (by bill day, then sub-merchant)."""
        query = select(_runs).order_by(_runs.c.bill_date.desc(), _runs.c.sub_mch_id).limit(limit)
        scope = _scoped(_runs.c.sub_mch_id, sub_mch_ids)
        if scope is not None:
            query = query.where(scope)
        return (await self.conn.execute(query)).mappings().all()
