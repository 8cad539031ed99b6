"""Read models of the console: plain SQL over the service's tables, always scoped to the caller
(``sub_mch_id`` None = the admin key, every sub-merchant)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select

from minipay.server import db
from minipay.server.domain import Payment, Refund
from minipay.server.repositories import _payment_from_row, _refund_from_row
from minipay.server.uow import UnitOfWorkFactory
from minipay.server.webhooks import delivery_log

__all__ = ["PaymentFilter", "payment_events", "payment_refunds", "payment_webhooks", "search_payments"]


class PaymentFilter:
    """The payments list's filters (every one optional)."""

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


async def search_payments(
    uow_factory: UnitOfWorkFactory,
    *,
    scope: str | None,
    filters: PaymentFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Payment]:
    """Newest first, ``limit`` rows after the (created_at, id) anchor of the previous page."""
    t = db.payments
    query = select(t)
    if scope is not None:
        query = query.where(t.c.sub_mch_id == scope)
    if filters.sub_mch_id:
        query = query.where(t.c.sub_mch_id == filters.sub_mch_id)
    if filters.status:
        query = query.where(t.c.status == filters.status)
    if filters.out_trade_no:
        query = query.where(t.c.out_trade_no == filters.out_trade_no)
    if filters.transaction_id:
        query = query.where(t.c.transaction_id == filters.transaction_id)
    if filters.created_gte is not None:
        query = query.where(t.c.created_at >= filters.created_gte)
    if filters.created_lt is not None:
        query = query.where(t.c.created_at < filters.created_lt)
    if after is not None:
        created, pid = after
        query = query.where(or_(t.c.created_at < created, and_(t.c.created_at == created, t.c.id < pid)))
    query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
    async with uow_factory() as uow:
        rows = (await uow.conn.execute(query)).mappings().all()
    return [_payment_from_row(r) for r in rows]


async def payment_events(uow_factory: UnitOfWorkFactory, payment_id: str) -> list[dict[str, Any]]:
    """The payment's ``payment_events`` (its own and its refunds'), oldest first."""
    e = db.payment_events
    query = select(e).where(e.c.payment_id == payment_id).order_by(e.c.created_at, e.c.id)
    async with uow_factory() as uow:
        return [dict(r) for r in (await uow.conn.execute(query)).mappings().all()]


async def payment_refunds(uow_factory: UnitOfWorkFactory, payment_id: str) -> list[Refund]:
    r = db.refunds
    query = select(r).where(r.c.payment_id == payment_id).order_by(r.c.created_at, r.c.id)
    async with uow_factory() as uow:
        return [_refund_from_row(row) for row in (await uow.conn.execute(query)).mappings().all()]


async def payment_webhooks(
    uow_factory: UnitOfWorkFactory, payment_id: str, *, scope: str | None
) -> list[dict[str, Any]]:
    """The webhook events emitted for the payment, each with its deliveries and their attempts."""
    e = db.outbox_events
    query = select(e).where(e.c.payment_id == payment_id).order_by(e.c.created_at, e.c.id)
    async with uow_factory() as uow:
        rows = (await uow.conn.execute(query)).mappings().all()
    return [
        {
            "id": row["id"],
            "type": row["type"],
            "created_at": row["created_at"],
            "deliveries": await delivery_log(uow_factory, row["id"], sub_mch_id=scope),
        }
        for row in rows
    ]
