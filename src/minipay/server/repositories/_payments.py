"""The payment and refund repositories: load (optionally locked), insert, and save with a version check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from minipay.server import db
from minipay.server.domain import MONEY_OUT_FAILURES, Payment, Refund, RefundStatus
from minipay.server.logs import bind
from minipay.server.repositories._base import (
    PAYMENT_FIELDS,
    PAYMENT_SAVED_FIELDS,
    REFUND_FIELDS,
    ConcurrentUpdate,
    Repository,
    payment_from_row,
    refund_from_row,
)
from minipay.server.repositories._gather import GatheredLookups
from minipay.server.repositories._pg import PgStatement

__all__ = ["PaymentRepository", "RefundRepository"]

# The hot statements are built once and get their values as parameters: a statement built with
# ``.values(...)`` embeds them, and SQLAlchemy then computes a cache key over every value each time.
_INSERT_PAYMENT = insert(db.payments)
_SAVE_PAYMENT = update(db.payments).where(
    db.payments.c.id == bindparam("b_id"), db.payments.c.version == bindparam("b_version")
)
_INSERT_REFUND = insert(db.refunds)
_SAVE_REFUND = update(db.refunds).where(
    db.refunds.c.id == bindparam("b_id"), db.refunds.c.version == bindparam("b_version")
)


def _lookups(table: Any, *columns: str, by_sub: bool = True) -> dict[tuple[bool, bool], Any]:
    """The select of one row of ``table`` by ``columns`` (parameters named after them), with (unless
    ``by_sub`` is false) or without ``sub_mch_id`` and ``FOR UPDATE``: the shapes a repository's ``get``
    needs, built once."""
    base = select(table).where(*(table.c[name] == bindparam(name) for name in columns))
    shapes = {
        (False, False): base,
        (False, True): base.with_for_update(),  # rendered on PostgreSQL; SQLite already holds the write lock
    }
    if by_sub:
        by_sub_mch = base.where(table.c.sub_mch_id == bindparam("sub_mch_id"))
        shapes |= {(True, False): by_sub_mch, (True, True): by_sub_mch.with_for_update()}
    return shapes


# By id, the sub-merchant is checked on the row found, never in the SQL: PostgreSQL plans a prepared
# statement once for any values after a few runs (a generic plan), and while the table's statistics
# are still those of an almost empty table (before autovacuum analyses it) it costs "id = $1 AND
# sub_mch_id = $2" the same through the primary key or through ix_payments_sub_mch_id_created_at, and
# may take the latter: every lookup then reads all the sub-merchant's payments (seen: 3,000 rows a
# GET, a quarter of the throughput). On the primary key alone the plan is one index probe whatever
# the statistics say. (By out_trade_no the unique key holds all three columns: no such choice.)
_PAYMENT_BY_ID = _lookups(db.payments, "id", by_sub=False)
_PAYMENT_BY_OUT_TRADE_NO = _lookups(db.payments, "mch_id", "out_trade_no")
_REFUND_BY_ID = _lookups(db.refunds, "id", by_sub=False)
_REFUND_BY_OUT_REFUND_NO = _lookups(db.refunds, "mch_id", "out_refund_no")
# The lookups of a read-only unit of work on PostgreSQL (a notification's duplicate check, the API's
# GET) run on the driver itself (repositories._pg), and so do those of a unit of work of lookups on
# either database (uow.UnitOfWork.lookup).
_ON_THE_DRIVER = {
    id(q): PgStatement(q)
    for lookups in (_PAYMENT_BY_ID, _PAYMENT_BY_OUT_TRADE_NO, _REFUND_BY_ID, _REFUND_BY_OUT_REFUND_NO)
    for q in lookups.values()
}


def _on_the_driver(query: Any) -> PgStatement:
    return _ON_THE_DRIVER[id(query)]


# Payments and refunds by id or by their unique keys, in a unit of work of lookups on PostgreSQL
# (the API's reads, a notification's duplicate check): the keys asked for in one turn of the event
# loop are read with one statement (repositories._gather).
_GATHERED = {
    id(query): GatheredLookups(table, columns, _on_the_driver(query))
    for table, query, columns in (
        (db.payments, _PAYMENT_BY_ID[False, False], ("id",)),
        (db.refunds, _REFUND_BY_ID[False, False], ("id",)),
        (db.payments, _PAYMENT_BY_OUT_TRADE_NO[True, False], ("mch_id", "sub_mch_id", "out_trade_no")),
        (db.refunds, _REFUND_BY_OUT_REFUND_NO[False, False], ("mch_id", "out_refund_no")),
    )
}


async def _lookup(repository: Repository, query: Any, params: dict[str, Any]) -> Mapping[Any, Any] | None:
    """The row of a lookup, however the unit of work reads: by itself (a unit of work of lookups),
    on the driver (read-only on PostgreSQL), or through SQLAlchemy."""
    uow = repository.transaction
    if uow.lookups_only:
        return await uow.lookup(_on_the_driver(query), params, gathered=_GATHERED.get(id(query)))
    if uow.autocommit:
        return await _on_the_driver(query).fetchrow(repository.conn, params)
    row: Mapping[Any, Any] | None = (await repository.conn.execute(query, params)).mappings().first()
    return row


def _values(entity: Payment | Refund, names: Sequence[str]) -> dict[str, Any]:
    out = {name: getattr(entity, name) for name in names}
    if "status" in out:
        out["status"] = str(out["status"])
    return out


class PaymentRepository(Repository):
    async def add(self, payment: Payment) -> None:
        """Insert a new payment (in a unit of work that writes at commit: then, and the unique
        keys' ``IntegrityError`` comes from the commit)."""
        values = _values(payment, PAYMENT_FIELDS)
        batch = self._uow.batch
        if batch is not None:
            batch.adds.append(values)
        else:
            await self.add_values(self.conn, values)
        bind(payment_id=payment.id, out_trade_no=payment.out_trade_no)

    @staticmethod
    async def add_values(conn: AsyncConnection, values: dict[str, Any]) -> None:
        """The insert of :meth:`add`, with its values."""
        await conn.execute(_INSERT_PAYMENT, values)

    async def get(self, payment_id: str, *, sub_mch_id: str | None = None, for_update: bool = False) -> Payment | None:
        # The sub-merchant checked on the row (see _PAYMENT_BY_ID). Locked, another sub-merchant's row
        # stays locked until the caller's transaction ends: it finds nothing and rolls back.
        return await self._one(_PAYMENT_BY_ID[False, for_update], {"id": payment_id}, sub_mch_id)

    async def get_by_out_trade_no(
        self, mch_id: str, out_trade_no: str, *, sub_mch_id: str, for_update: bool = False
    ) -> Payment | None:
        """The payment of that sub-merchant with that ``out_trade_no`` (unique per sub-merchant)."""
        query = _PAYMENT_BY_OUT_TRADE_NO[True, for_update]
        return await self._one(query, {"mch_id": mch_id, "out_trade_no": out_trade_no, "sub_mch_id": sub_mch_id})

    async def _one(self, query: Any, params: dict[str, Any], sub_mch_id: str | None = None) -> Payment | None:
        row: Mapping[Any, Any] | None = await _lookup(self, query, params)
        if row is None or (sub_mch_id is not None and row["sub_mch_id"] != sub_mch_id):
            return None
        # Every later log line of this request or job is about this payment.
        bind(payment_id=row["id"], out_trade_no=row["out_trade_no"])
        return payment_from_row(row)

    async def save(self, payment: Payment) -> None:
        """Write every field a payment may change (``domain.PAYMENT_FIXED_FIELDS`` never do) if, and only
        if, nobody changed the row since it was read (in a unit of work that writes at commit: then,
        and ``ConcurrentUpdate`` comes from the commit)."""
        values = _values(payment, PAYMENT_SAVED_FIELDS)
        values["version"] = payment.version + 1
        values["b_id"], values["b_version"] = payment.id, payment.version
        batch = self._uow.batch
        if batch is not None:
            batch.saves.append((payment, values))
            return
        await self.save_values(self.conn, payment, values)
        payment.version += 1

    @staticmethod
    async def save_values(conn: AsyncConnection, payment: Payment, values: dict[str, Any]) -> None:
        """The conditional update of :meth:`save`, with its values."""
        result = await conn.execute(_SAVE_PAYMENT, values)
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"payment {payment.id} changed concurrently")

    async def search(
        self,
        *,
        sub_mch_id: str | None,
        status: str | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 20,
    ) -> list[Payment]:
        """Newest first; ``after`` is the (created_at, id) of the last row of the previous page.
        ``sub_mch_id`` None is every sub-merchant; every other ``None`` filters nothing."""
        t = db.payments
        query = select(t)
        if sub_mch_id is not None:
            query = query.where(t.c.sub_mch_id == sub_mch_id)
        if status is not None:
            query = query.where(t.c.status == status)
        if out_trade_no is not None:
            query = query.where(t.c.out_trade_no == out_trade_no)
        if transaction_id is not None:
            query = query.where(t.c.transaction_id == transaction_id)
        if created_gte is not None:
            query = query.where(t.c.created_at >= created_gte)
        if created_lt is not None:
            query = query.where(t.c.created_at < created_lt)
        if after is not None:
            created, pid = after
            query = query.where(or_(t.c.created_at < created, and_(t.c.created_at == created, t.c.id < pid)))
        query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        rows = (await self.conn.execute(query)).mappings().all()
        return [payment_from_row(r) for r in rows]


class RefundRepository(Repository):
    async def add(self, refund: Refund) -> None:
        await self.conn.execute(_INSERT_REFUND, _values(refund, REFUND_FIELDS))
        bind(refund_id=refund.id, out_refund_no=refund.out_refund_no, payment_id=refund.payment_id)

    async def get(self, refund_id: str, *, sub_mch_id: str | None = None, for_update: bool = False) -> Refund | None:
        # The sub-merchant checked on the row, as for payments (see _PAYMENT_BY_ID).
        return await self._one(_REFUND_BY_ID[False, for_update], {"id": refund_id}, sub_mch_id)

    async def get_by_out_refund_no(self, mch_id: str, out_refund_no: str, *, for_update: bool = False) -> Refund | None:
        query = _REFUND_BY_OUT_REFUND_NO[False, for_update]
        return await self._one(query, {"mch_id": mch_id, "out_refund_no": out_refund_no})

    async def _one(self, query: Any, params: dict[str, Any], sub_mch_id: str | None = None) -> Refund | None:
        row: Mapping[Any, Any] | None = await _lookup(self, query, params)
        if row is None or (sub_mch_id is not None and row["sub_mch_id"] != sub_mch_id):
            return None
        bind(refund_id=row["id"], out_refund_no=row["out_refund_no"], payment_id=row["payment_id"])
        return refund_from_row(row)

    async def for_payment(self, payment_id: str) -> list[Refund]:
        """The payment's refunds, oldest first."""
        r = db.refunds
        query = select(r).where(r.c.payment_id == payment_id).order_by(r.c.created_at, r.c.id)
        return [refund_from_row(r) for r in (await self.conn.execute(query)).mappings().all()]

    async def reserved_amount(self, payment_id: str) -> int:
        """Sum of refunds that are not failed, or failed with the money still out (``CHANGE``): what is
        no longer refundable."""
        r = db.refunds
        query = select(func.coalesce(func.sum(r.c.amount), 0)).where(
            r.c.payment_id == payment_id,
            or_(r.c.status != str(RefundStatus.FAILED), r.c.failure_code.in_(sorted(MONEY_OUT_FAILURES))),
        )
        return int((await self.conn.execute(query)).scalar_one())

    async def save(self, refund: Refund) -> None:
        values = _values(refund, REFUND_FIELDS)
        values.pop("id")
        values["version"] = refund.version + 1
        values["b_id"], values["b_version"] = refund.id, refund.version
        result = await self.conn.execute(_SAVE_REFUND, values)
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"refund {refund.id} changed concurrently")
        refund.version += 1
