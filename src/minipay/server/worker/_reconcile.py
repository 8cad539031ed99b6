"""Reconciliation: download a sub-merchant's bill of one China-time day, compare it with the ledger,
and record the run and every discrepancy. Money is never edited here (research B5).

The ledger of day D (China time, 00:00-24:00) for a sub-merchant is:

* payments whose ``paid_at`` (WeChat's ``time_end``) falls on D and that are paid here
  (``succeeded``, ``partially_refunded``, ``refunded``; ``paid_after_close`` ones included);
* refunds created on D that WeChat accepted (``processing`` or ``succeeded``; a ``PROCESSING`` row in
  the bill counts as submitted, spec 13.2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.protocol import CHINA_TZ, BillRow, CommunicationError
from minipay.server import db
from minipay.server.settings import Settings, SubMerchantSettings
from minipay.server.worker._compare import REFUND_JOB_KINDS, Discrepancy, RefundRecord, TradeRecord, compare
from minipay.server.worker._queue import Clock
from minipay.server.worker._tables import reconciliation_discrepancies, reconciliation_runs

__all__ = [
    "BillData",
    "BillNotReady",
    "BillSource",
    "ClientBillSource",
    "Reconciler",
    "RunRecord",
    "bill_data_from_rows",
    "china_day_bounds",
]

PAID_STATUSES = ("succeeded", "partially_refunded", "refunded")
ACCEPTED_REFUND_STATUSES = ("processing", "succeeded")


class BillNotReady(Exception):
    """WeChat is still building the bill ("Bill Creating"): try again later."""


@dataclass(frozen=True, slots=True)
class BillData:
    """A parsed bill of one day and one sub-merchant."""

    trades: Sequence[TradeRecord]
    refunds: Sequence[RefundRecord]
    rows: int


class BillSource(Protocol):
    """Where bills come from. ``None`` means WeChat has no bill for that day ("No Bill Exist")."""

    async def download(self, sub: SubMerchantSettings, bill_date: date) -> BillData | None: ...


@dataclass(frozen=True, slots=True)
class RunRecord:
    bill_date: date
    sub_mch_id: str
    status: str  # ok | discrepancies | error | not_ready (the last is never stored)
    bill_rows: int
    ledger_rows: int
    discrepancy_count: int
    error: str | None = None


def china_day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[00:00, 24:00)`` of ``day`` in China time, as aware datetimes."""
    start = datetime.combine(day, time(0), tzinfo=CHINA_TZ)
    return start, start + timedelta(days=1)


class Reconciler:
    """Runs and stores reconciliations; reads them back for the API and the CLI."""

    def __init__(self, engine: AsyncEngine, clock: Clock, bill_source: BillSource) -> None:
        self._engine = engine
        self._clock = clock
        self._bills = bill_source

    async def ledger(self, sub_mch_id: str, day: date) -> tuple[list[TradeRecord], list[RefundRecord]]:
        """The ledger side of day ``day`` for one sub-merchant."""
        start, end = china_day_bounds(day)
        p, r = db.payments, db.refunds
        async with self._engine.connect() as conn:
            pay_rows = (
                await conn.execute(
                    select(p.c.out_trade_no, p.c.transaction_id, p.c.amount, p.c.currency).where(
                        p.c.sub_mch_id == sub_mch_id,
                        p.c.status.in_(PAID_STATUSES),
                        p.c.paid_at >= start,
                        p.c.paid_at < end,
                    )
                )
            ).all()
            refund_rows = (
                await conn.execute(
                    select(p.c.out_trade_no, r.c.out_refund_no, r.c.refund_id, r.c.amount, r.c.currency)
                    .select_from(r.join(p, p.c.id == r.c.payment_id))
                    .where(
                        r.c.sub_mch_id == sub_mch_id,
                        r.c.status.in_(ACCEPTED_REFUND_STATUSES),
                        r.c.created_at >= start,
                        r.c.created_at < end,
                    )
                )
            ).all()
        trades = [TradeRecord(sub_mch_id, no, tid, int(amount), cur) for no, tid, amount, cur in pay_rows]
        refunds = [
            RefundRecord(sub_mch_id, no, rno, rid, int(amount), cur) for no, rno, rid, amount, cur in refund_rows
        ]
        return trades, refunds

    async def reconcile(self, sub: SubMerchantSettings, day: date, *, replace: bool = False) -> RunRecord:
        """Reconcile one day of one sub-merchant and store the result.

        Idempotent: with ``replace=False`` an existing run of that day is returned as is (a job taken
        over from a killed worker does not duplicate rows). ``replace=True`` (``minipay reconcile``)
        recomputes and replaces the previous run and its discrepancy rows in one transaction.
        """
        if not replace:
            existing = await self.run(sub.sub_mch_id, day)
            if existing is not None:
                return existing
        started = self._clock.now()
        try:
            bill = await self._bills.download(sub, day)
        except BillNotReady:
            return RunRecord(day, sub.sub_mch_id, "not_ready", 0, 0, 0)
        trades, refunds = await self.ledger(sub.sub_mch_id, day)
        found = compare(bill.trades if bill else (), trades, bill.refunds if bill else (), refunds)
        record = RunRecord(
            bill_date=day,
            sub_mch_id=sub.sub_mch_id,
            status="discrepancies" if found else "ok",
            bill_rows=bill.rows if bill else 0,
            ledger_rows=len(trades) + len(refunds),
            discrepancy_count=len(found),
        )
        try:
            await self._store(record, found, started, replace=replace)
        except IntegrityError:
            # Another worker stored the same run first (unique per day and sub-merchant).
            existing = await self.run(sub.sub_mch_id, day)
            if existing is None:
                raise
            return existing
        return record

    async def _store(
        self, record: RunRecord, found: Sequence[Discrepancy], started: datetime, *, replace: bool
    ) -> None:
        now = self._clock.now()
        runs, disc = reconciliation_runs, reconciliation_discrepancies
        async with self._engine.begin() as conn:
            if replace:
                await conn.execute(
                    delete(disc).where(
                        disc.c.bill_date == record.bill_date,
                        disc.c.sub_mch_id == record.sub_mch_id,
                        disc.c.kind.not_in(REFUND_JOB_KINDS),  # those come from the refund job, not a bill
                    )
                )
                await conn.execute(
                    delete(runs).where(runs.c.bill_date == record.bill_date, runs.c.sub_mch_id == record.sub_mch_id)
                )
            await conn.execute(
                insert(runs).values(
                    bill_date=record.bill_date,
                    sub_mch_id=record.sub_mch_id,
                    status=record.status,
                    bill_rows=record.bill_rows,
                    ledger_rows=record.ledger_rows,
                    discrepancy_count=record.discrepancy_count,
                    error=record.error,
                    started_at=started,
                    finished_at=now,
                )
            )
            if found:
                await conn.execute(
                    insert(disc),
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

    async def record_refund_conflict(
        self, sub_mch_id: str, refund_id: str, out_refund_no: str, local: str, wechat: str
    ) -> None:
        """A refund that is final here disagrees with WeChat's refund query: record it once, change nothing."""
        await self._record_refund_discrepancy(
            "refund_status_mismatch",
            sub_mch_id,
            out_refund_no,
            ledger={"refund": refund_id, "status": local},
            bill={"refund_status": wechat},
            detail=f"refund {out_refund_no} is {local} here but WeChat's refund query says {wechat}",
        )

    async def record_refund_missing(
        self, sub_mch_id: str, refund_id: str, out_refund_no: str, wechat_refund_id: str | None, local: str
    ) -> bool:
        """A refund WeChat accepted (it gave us ``wechat_refund_id``) that its refund query answers
        ``REFUNDNOTEXIST``: record it once, change nothing. True when this call recorded it."""
        return await self._record_refund_discrepancy(
            "refund_missing_at_wechat",
            sub_mch_id,
            out_refund_no,
            refund_id=wechat_refund_id,
            ledger={"refund": refund_id, "status": local, "refund_id": wechat_refund_id},
            bill={"refund_status": "REFUNDNOTEXIST"},
            detail=(
                f"refund {out_refund_no} was accepted by WeChat (refund_id {wechat_refund_id}) and is {local} "
                "here, but WeChat's refund query answers REFUNDNOTEXIST"
            ),
        )

    async def _record_refund_discrepancy(
        self,
        kind: str,
        sub_mch_id: str,
        out_refund_no: str,
        *,
        ledger: Mapping[str, Any],
        bill: Mapping[str, Any],
        detail: str,
        refund_id: str | None = None,
    ) -> bool:
        if kind not in REFUND_JOB_KINDS:
            raise ValueError(f"not a refund-job discrepancy kind: {kind!r}")
        now = self._clock.now()
        disc = reconciliation_discrepancies
        async with self._engine.begin() as conn:
            already = (
                await conn.execute(
                    select(disc.c.id).where(
                        disc.c.kind == kind,
                        disc.c.sub_mch_id == sub_mch_id,
                        disc.c.out_refund_no == out_refund_no,
                    )
                )
            ).first()
            if already is not None:  # followed again, or the job ran twice (taken over from a dead worker)
                return False
            await conn.execute(
                insert(disc).values(
                    bill_date=now.astimezone(CHINA_TZ).date(),
                    sub_mch_id=sub_mch_id,
                    kind=kind,
                    out_refund_no=out_refund_no,
                    refund_id=refund_id,
                    ledger=dict(ledger),
                    bill=dict(bill),
                    detail=detail,
                    created_at=now,
                )
            )
        return True

    # -- reading -----------------------------------------------------------------------------------

    async def run(self, sub_mch_id: str, day: date) -> RunRecord | None:
        runs = reconciliation_runs
        async with self._engine.connect() as conn:
            row = (
                (await conn.execute(select(runs).where(and_(runs.c.bill_date == day, runs.c.sub_mch_id == sub_mch_id))))
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

    async def report(self, day: date, sub_mch_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """The JSON of ``GET /v1/reconciliation/{date}``; ``sub_mch_ids=None`` means every sub-merchant."""
        runs, disc = reconciliation_runs, reconciliation_discrepancies
        run_q = select(runs).where(runs.c.bill_date == day).order_by(runs.c.sub_mch_id)
        disc_q = select(disc).where(disc.c.bill_date == day).order_by(disc.c.sub_mch_id, disc.c.id)
        if sub_mch_ids is not None:
            run_q = run_q.where(runs.c.sub_mch_id.in_(list(sub_mch_ids)))
            disc_q = disc_q.where(disc.c.sub_mch_id.in_(list(sub_mch_ids)))
        async with self._engine.connect() as conn:
            run_rows = (await conn.execute(run_q)).mappings().all()
            disc_rows = (await conn.execute(disc_q)).mappings().all()
        return {
            "date": day.isoformat(),
            "runs": [
                {
                    "sub_mch_id": row["sub_mch_id"],
                    "status": row["status"],
                    "bill_rows": row["bill_rows"],
                    "ledger_rows": row["ledger_rows"],
                    "discrepancies": row["discrepancy_count"],
                    "started_at": row["started_at"].isoformat(),
                    "finished_at": row["finished_at"].isoformat(),
                    "error": row["error"],
                }
                for row in run_rows
            ],
            "discrepancies": [
                {
                    "id": row["id"],
                    "sub_mch_id": row["sub_mch_id"],
                    "kind": row["kind"],
                    "out_trade_no": row["out_trade_no"],
                    "transaction_id": row["transaction_id"],
                    "out_refund_no": row["out_refund_no"],
                    "refund_id": row["refund_id"],
                    "bill": row["bill"],
                    "ledger": row["ledger"],
                    "detail": row["detail"],
                    "created_at": row["created_at"].isoformat(),
                }
                for row in disc_rows
            ],
        }


def _is_bill_creating(exc: CommunicationError) -> bool:
    text = " ".join(str(x) for x in (exc, getattr(exc, "err_code_des", ""), getattr(exc, "return_msg", "")))
    return "creating" in text.lower()


class ClientBillSource:
    """Bills through the SDK (``bills.download``), one client per institution, built from ``Settings``.

    ``client_for`` reuses the service gateway's clients (``ClientGateway.client_for``); otherwise the
    source builds its own, and ``transport`` lets tests talk to an in-process sandbox
    (``httpx2.ASGITransport(sandbox_app)``).
    """

    def __init__(
        self, settings: Settings, *, client_for: Callable[[str], Any] | None = None, transport: Any = None
    ) -> None:
        self._settings = settings
        self._client_for = client_for
        self._transport = transport
        self._clients: dict[str, Any] = {}

    def _client(self, sub: SubMerchantSettings) -> Any:
        from minipay.client import AsyncClient

        if self._client_for is not None:
            return self._client_for(sub.sub_mch_id)

        inst = self._settings.institution(sub.institution)
        client = self._clients.get(inst.name)
        if client is None:
            client = AsyncClient(
                appid=inst.appid,
                mch_id=inst.mch_id,
                api_key=inst.key(),
                sign_type=inst.sign_type,
                region=inst.region,
                base_url=inst.base_url,
                transport=self._transport,
            )
            self._clients[inst.name] = client
        return client

    async def download(self, sub: SubMerchantSettings, bill_date: date) -> BillData | None:
        client = self._client(sub)
        try:
            bill = await client.bills.download(bill_date=bill_date, sub_mch_id=sub.sub_mch_id)
        except CommunicationError as exc:
            if _is_bill_creating(exc):
                raise BillNotReady(str(exc)) from exc
            raise
        if not bill.rows:
            return None
        return bill_data_from_rows(bill.rows, sub.sub_mch_id)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def bill_data_from_rows(rows: Sequence[BillRow], sub_mch_id: str) -> BillData:
    """Turn parsed bill rows (``minipay.protocol.parse_bill``) into comparable records.

    ``SUCCESS`` rows are payments, ``REFUND`` rows (or rows carrying a refund number) are refunds;
    rows of another sub-merchant (an institution-wide bill) are left out.
    """
    trades: list[TradeRecord] = []
    refunds: list[RefundRecord] = []
    mine = [row for row in rows if (row.sub_mch_id or sub_mch_id) == sub_mch_id]
    for row in mine:
        currency = row.fee_type or ""
        out_trade_no = row.out_trade_no or ""
        is_refund = row.trade_state == "REFUND" or (row.out_refund_no not in (None, "", "0"))
        if is_refund:
            refunds.append(
                RefundRecord(
                    sub_mch_id=sub_mch_id,
                    out_trade_no=out_trade_no,
                    out_refund_no=row.out_refund_no or "",
                    refund_id=row.refund_id if row.refund_id not in (None, "", "0") else None,
                    refund_fee=row.refund_fee or 0,
                    fee_type=currency,
                )
            )
        elif row.trade_state == "SUCCESS":
            trades.append(
                TradeRecord(
                    sub_mch_id=sub_mch_id,
                    out_trade_no=out_trade_no,
                    transaction_id=row.transaction_id or None,
                    total_fee=row.total_fee or 0,
                    fee_type=currency,
                )
            )
    return BillData(trades=trades, refunds=refunds, rows=len(mine))
