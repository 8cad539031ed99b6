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

from sqlalchemy.exc import IntegrityError

from minipay.protocol import CHINA_TZ, BillRow, CommunicationError
from minipay.server.adapters import ClientGateway
from minipay.server.repositories import RunRecord
from minipay.server.settings import Settings, SubMerchantSettings
from minipay.server.uow import UnitOfWorkFactory
from minipay.server.worker._compare import REFUND_JOB_KINDS, Discrepancy, RefundRecord, TradeRecord, compare
from minipay.server.worker._queue import Clock

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


def china_day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[00:00, 24:00)`` of ``day`` in China time, as aware datetimes."""
    start = datetime.combine(day, time(0), tzinfo=CHINA_TZ)
    return start, start + timedelta(days=1)


class Reconciler:
    """Runs and stores reconciliations; reads them back for the API and the CLI."""

    def __init__(self, uow_factory: UnitOfWorkFactory, clock: Clock, bill_source: BillSource) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._bills = bill_source

    async def ledger(self, sub_mch_id: str, day: date) -> tuple[list[TradeRecord], list[RefundRecord]]:
        """The ledger side of day ``day`` for one sub-merchant."""
        start, end = china_day_bounds(day)
        async with self._uow_factory().reading() as uow:
            payments = await uow.reconciliation.ledger_payments(
                sub_mch_id, statuses=PAID_STATUSES, paid_gte=start, paid_lt=end
            )
            refunds = await uow.reconciliation.ledger_refunds(
                sub_mch_id, statuses=ACCEPTED_REFUND_STATUSES, created_gte=start, created_lt=end
            )
        return (
            [TradeRecord(sub_mch_id, p.out_trade_no, p.transaction_id, p.amount, p.currency) for p in payments],
            [
                RefundRecord(sub_mch_id, r.out_trade_no, r.out_refund_no, r.refund_id, r.amount, r.currency)
                for r in refunds
            ],
        )

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
        async with self._uow_factory() as uow:
            # The refund job's kinds come from the refund job, not a bill: a replaced run keeps them.
            await uow.reconciliation.store_run(
                record, found, started_at=started, now=now, replace=replace, keep_kinds=REFUND_JOB_KINDS
            )
            await uow.commit()

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
        now = self._clock.now()
        async with self._uow_factory() as uow:
            # Once: the refund is followed again, or the job ran twice (taken over from a dead worker).
            added = await uow.reconciliation.add_refund_discrepancy_once(
                kind,
                sub_mch_id,
                out_refund_no,
                bill_date=now.astimezone(CHINA_TZ).date(),
                refund_id=refund_id,
                ledger=ledger,
                bill=bill,
                detail=detail,
                now=now,
            )
            await uow.commit()
        return added

    # -- reading -----------------------------------------------------------------------------------

    async def run(self, sub_mch_id: str, day: date) -> RunRecord | None:
        async with self._uow_factory().reading() as uow:
            return await uow.reconciliation.run(sub_mch_id, day)

    async def report(self, day: date, sub_mch_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """The JSON of ``GET /v1/reconciliation/{date}``; ``sub_mch_ids=None`` means every sub-merchant."""
        async with self._uow_factory().reading() as uow:
            run_rows = await uow.reconciliation.runs_of_day(day, sub_mch_ids=sub_mch_ids)
            disc_rows = await uow.reconciliation.discrepancies_of_day(day, sub_mch_ids=sub_mch_ids)
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
    source opens a :class:`~minipay.server.adapters.ClientGateway` of its own, so its clients are built
    exactly as the service's are (certificate, CA, failover hosts, timeouts), and closes it in
    :meth:`aclose`. ``transport`` lets tests talk to an in-process sandbox
    (``httpx2.ASGITransport(sandbox_app)``).
    """

    def __init__(
        self, settings: Settings, *, client_for: Callable[[str], Any] | None = None, transport: Any = None
    ) -> None:
        self._settings = settings
        self._client_for = client_for
        self._transport = transport
        self._gateway: ClientGateway | None = None

    def _client(self, sub: SubMerchantSettings) -> Any:
        if self._client_for is None:
            self._gateway = ClientGateway(self._settings, transport=self._transport)
            self._client_for = self._gateway.client_for
        return self._client_for(sub.sub_mch_id)

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
        """Close the clients this source opened (a gateway's own clients are the gateway's to close)."""
        if self._gateway is not None:
            gateway, self._gateway, self._client_for = self._gateway, None, None
            await gateway.aclose()


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
