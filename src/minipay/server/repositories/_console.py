"""The console's read model: the payments page's filters, a payment's event log and outbox events, and
the overview's aggregates; always scoped to the caller (``scope`` None = the admin key, every
sub-merchant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import RowMapping

from minipay.server import db
from minipay.server.repositories._base import Repository

__all__ = ["Attention", "ConsoleQueries", "PaymentFilter"]


class PaymentFilter:
    """The payments list's filters (every one optional; an empty one filters nothing)."""

    def __init__(
        self,
        *,
        status: str | None = None,
        sub_mch_id: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
    ) -> None:
        self.status = status
        self.sub_mch_id = sub_mch_id
        self.created_gte = created_gte
        self.created_lt = created_lt
        self.out_trade_no = out_trade_no
        self.transaction_id = transaction_id


@dataclass(frozen=True, slots=True)
class Attention:
    """The overview's counters: refunds not final, discrepancies of 30 days, paid volume per currency."""

    refunds_pending: int
    discrepancies: int
    volume: list[tuple[str, int, int]]  # (currency, payments, amount in minor units)


class ConsoleQueries(Repository):
    async def payment_events(self, payment_id: str) -> list[dict[str, Any]]:
        """The payment's ``payment_events`` (its own and its refunds'), oldest first."""
        e = db.payment_events
        query = select(e).where(e.c.payment_id == payment_id).order_by(e.c.created_at, e.c.id)
        return [dict(r) for r in (await self.conn.execute(query)).mappings().all()]

    async def payment_outbox_events(self, payment_id: str) -> list[RowMapping]:
        """The webhook events emitted for the payment, oldest first."""
        e = db.outbox_events
        query = select(e).where(e.c.payment_id == payment_id).order_by(e.c.created_at, e.c.id)
        return list((await self.conn.execute(query)).mappings().all())

    async def payment_counts(
        self, *, scope: str | None, created_gte: datetime, hourly: bool
    ) -> dict[str, tuple[int, int]]:
        """Payments created since ``created_gte`` and how many of them were paid, per UTC hour
        (``"2026-03-02 04"``) or day (``"2026-03-02"``); buckets without payments are absent."""
        t = db.payments
        column = t.c.created_at
        if self._uow.is_postgres:
            label = func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24" if hourly else "YYYY-MM-DD")
        else:
            label = func.strftime("%Y-%m-%d %H" if hourly else "%Y-%m-%d", column)  # SQLite keeps UTC, naive
        bucket = label.label("bucket")
        query = (
            select(
                bucket,
                func.count().label("total"),
                func.sum(case((t.c.paid_at.is_not(None), 1), else_=0)).label("paid"),
            )
            .where(column >= created_gte)
            .group_by(bucket)
        )
        if scope is not None:
            query = query.where(t.c.sub_mch_id == scope)
        return {row.bucket: (int(row.total), int(row.paid or 0)) for row in await self.conn.execute(query)}

    async def attention(self, *, scope: str | None, now: datetime) -> Attention:
        """Refunds not final yet, discrepancies of the last 30 days, and paid volume per currency (30 days)."""
        r, p, d = db.refunds, db.payments, db.reconciliation_discrepancies
        refunds_q = select(func.count()).select_from(r).where(r.c.status.in_(["pending", "processing"]))
        disc_q = select(func.count()).select_from(d).where(d.c.bill_date >= (now - timedelta(days=30)).date())
        volume_q = (
            select(p.c.currency, func.count(), func.sum(p.c.amount))
            .where(p.c.paid_at.is_not(None), p.c.created_at >= now - timedelta(days=30))
            .group_by(p.c.currency)
            .order_by(p.c.currency)
        )
        if scope is not None:
            refunds_q = refunds_q.where(r.c.sub_mch_id == scope)
            disc_q = disc_q.where(d.c.sub_mch_id == scope)
            volume_q = volume_q.where(p.c.sub_mch_id == scope)
        refunds_pending = int((await self.conn.execute(refunds_q)).scalar_one())
        discrepancies = int((await self.conn.execute(disc_q)).scalar_one())
        volume = [(str(c), int(n), int(s or 0)) for c, n, s in await self.conn.execute(volume_q)]
        return Attention(refunds_pending=refunds_pending, discrepancies=discrepancies, volume=volume)
