"""Unit of work and repositories over SQLAlchemy Core (async).

One :class:`UnitOfWork` is one database transaction::

    async with uow_factory() as uow:
        payment = await uow.payments.get(pid, for_update=True)
        ...
        await uow.payments.save(payment)     # conditional on the version read
        await uow.commit()

``save`` raises :class:`ConcurrentUpdate` when another transaction changed the row meanwhile; the
service layer retries the whole unit (``retrying``). Leaving the block without ``commit`` rolls back.

Work that only reads uses ``async with uow_factory().reading() as uow:``: no write transaction (on
SQLite no ``BEGIN IMMEDIATE``, so it never waits for the single writer; on PostgreSQL no
``BEGIN``/``ROLLBACK`` round trips). Each statement reads the latest committed state, as under
PostgreSQL's default READ COMMITTED.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minipay.server import db, tracing
from minipay.server.domain import (
    MONEY_OUT_FAILURES,
    DomainEvent,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    new_id,
)
from minipay.server.logs import bind

__all__ = ["ConcurrentUpdate", "UnitOfWork", "UnitOfWorkFactory", "retrying"]

T = TypeVar("T")


class ConcurrentUpdate(Exception):
    """The row changed under us (version check failed, unique race, serialization failure): retry."""


_PAYMENT_FIELDS = [f.name for f in dataclasses.fields(Payment) if f.name != "events"]
_REFUND_FIELDS = [f.name for f in dataclasses.fields(Refund) if f.name != "events"]


def _payment_from_row(row: RowMapping) -> Payment:
    values = {name: row[name] for name in _PAYMENT_FIELDS}
    values["status"] = PaymentStatus(values["status"])
    values["metadata"] = dict(values["metadata"] or {})
    return Payment(**values)


def _refund_from_row(row: RowMapping) -> Refund:
    values = {name: row[name] for name in _REFUND_FIELDS}
    values["status"] = RefundStatus(values["status"])
    return Refund(**values)


# The hot statements are built once and get their values as parameters: a statement built with
# ``.values(...)`` embeds them, and SQLAlchemy then computes a cache key over every value each time.
_INSERT_PAYMENT = insert(db.payments)
_SAVE_PAYMENT = update(db.payments).where(
    db.payments.c.id == bindparam("b_id"), db.payments.c.version == bindparam("b_version")
)
_INSERT_EVENT = insert(db.payment_events)
_INSERT_REFUND = insert(db.refunds)
_SAVE_REFUND = update(db.refunds).where(
    db.refunds.c.id == bindparam("b_id"), db.refunds.c.version == bindparam("b_version")
)
_INSERT_DELIVERY = insert(db.webhook_deliveries)
_INSERT_IDEMPOTENCY_KEY = insert(db.idempotency_keys)
# One statement for "insert the event unless its key exists": the row's id back, or no row.
_PUBLISH = {
    name: dialect.insert(db.outbox_events)
    .on_conflict_do_nothing(index_elements=["event_key"])
    .returning(db.outbox_events.c.id)
    for name, dialect in (("sqlite", sqlite_dialect), ("postgresql", postgresql_dialect))
}
_ENDPOINTS_FOR = select(db.webhook_endpoints.c.id).where(
    db.webhook_endpoints.c.deleted_at.is_(None),
    or_(db.webhook_endpoints.c.sub_mch_id.is_(None), db.webhook_endpoints.c.sub_mch_id == bindparam("sub")),
)
_IDEMPOTENCY_KEY = select(db.idempotency_keys).where(
    db.idempotency_keys.c.scope == bindparam("scope"), db.idempotency_keys.c.key == bindparam("key")
)


def _lookups(table: Any, *columns: str) -> dict[tuple[bool, bool], Any]:
    """The select of one row of ``table`` by ``columns`` (parameters named after them), with or without
    ``sub_mch_id`` and ``FOR UPDATE``: the four shapes a repository's ``get`` needs, built once."""
    base = select(table).where(*(table.c[name] == bindparam(name) for name in columns))
    by_sub = base.where(table.c.sub_mch_id == bindparam("sub_mch_id"))
    return {
        (False, False): base,
        (False, True): base.with_for_update(),  # rendered on PostgreSQL; SQLite already holds the write lock
        (True, False): by_sub,
        (True, True): by_sub.with_for_update(),
    }


_PAYMENT_BY_ID = _lookups(db.payments, "id")
_PAYMENT_BY_OUT_TRADE_NO = _lookups(db.payments, "mch_id", "out_trade_no")
_REFUND_BY_ID = _lookups(db.refunds, "id")
_REFUND_BY_OUT_REFUND_NO = _lookups(db.refunds, "mch_id", "out_refund_no")


def _values(entity: Payment | Refund, names: Sequence[str]) -> dict[str, Any]:
    out = {name: getattr(entity, name) for name in names}
    if "status" in out:
        out["status"] = str(out["status"])
    return out


class _Repo:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    @property
    def conn(self) -> AsyncConnection:
        return self._uow.conn


class PaymentRepository(_Repo):
    async def add(self, payment: Payment) -> None:
        await self.conn.execute(_INSERT_PAYMENT, _values(payment, _PAYMENT_FIELDS))
        bind(payment_id=payment.id, out_trade_no=payment.out_trade_no)

    async def get(self, payment_id: str, *, sub_mch_id: str | None = None, for_update: bool = False) -> Payment | None:
        query = _PAYMENT_BY_ID[sub_mch_id is not None, for_update]
        return await self._one(query, {"id": payment_id, "sub_mch_id": sub_mch_id})

    async def get_by_out_trade_no(
        self, mch_id: str, out_trade_no: str, *, sub_mch_id: str, for_update: bool = False
    ) -> Payment | None:
        """The payment of that sub-merchant with that ``out_trade_no`` (unique per sub-merchant)."""
        query = _PAYMENT_BY_OUT_TRADE_NO[True, for_update]
        return await self._one(query, {"mch_id": mch_id, "out_trade_no": out_trade_no, "sub_mch_id": sub_mch_id})

    async def _one(self, query: Any, params: dict[str, Any]) -> Payment | None:
        row = (await self.conn.execute(query, params)).mappings().first()
        if row is None:
            return None
        # Every later log line of this request or job is about this payment.
        bind(payment_id=row["id"], out_trade_no=row["out_trade_no"])
        return _payment_from_row(row)

    async def save(self, payment: Payment) -> None:
        """Write every field if, and only if, nobody changed the row since it was read."""
        values = _values(payment, _PAYMENT_FIELDS)
        values.pop("id")
        values["version"] = payment.version + 1
        values["b_id"], values["b_version"] = payment.id, payment.version
        result = await self.conn.execute(_SAVE_PAYMENT, values)
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"payment {payment.id} changed concurrently")
        payment.version += 1

    async def search(
        self,
        *,
        sub_mch_id: str | None,
        status: str | None = None,
        out_trade_no: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 20,
    ) -> list[Payment]:
        """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
        t = db.payments
        query = select(t)
        if sub_mch_id is not None:
            query = query.where(t.c.sub_mch_id == sub_mch_id)
        if status is not None:
            query = query.where(t.c.status == status)
        if out_trade_no is not None:
            query = query.where(t.c.out_trade_no == out_trade_no)
        if created_gte is not None:
            query = query.where(t.c.created_at >= created_gte)
        if created_lt is not None:
            query = query.where(t.c.created_at < created_lt)
        if after is not None:
            created, pid = after
            query = query.where(or_(t.c.created_at < created, and_(t.c.created_at == created, t.c.id < pid)))
        query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        rows = (await self.conn.execute(query)).mappings().all()
        return [_payment_from_row(r) for r in rows]

    async def due_for_query(self, now: datetime, limit: int = 100) -> list[Payment]:
        """Open payments whose ``next_query_at`` has come (for the worker's active query)."""
        t = db.payments
        query = (
            select(t)
            .where(t.c.status.in_(["created", "pending"]), t.c.next_query_at.is_not(None), t.c.next_query_at <= now)
            .order_by(t.c.next_query_at)
            .limit(limit)
        )
        return [_payment_from_row(r) for r in (await self.conn.execute(query)).mappings().all()]


class RefundRepository(_Repo):
    async def add(self, refund: Refund) -> None:
        await self.conn.execute(_INSERT_REFUND, _values(refund, _REFUND_FIELDS))
        bind(refund_id=refund.id, out_refund_no=refund.out_refund_no, payment_id=refund.payment_id)

    async def get(self, refund_id: str, *, sub_mch_id: str | None = None, for_update: bool = False) -> Refund | None:
        query = _REFUND_BY_ID[sub_mch_id is not None, for_update]
        return await self._one(query, {"id": refund_id, "sub_mch_id": sub_mch_id})

    async def get_by_out_refund_no(self, mch_id: str, out_refund_no: str, *, for_update: bool = False) -> Refund | None:
        query = _REFUND_BY_OUT_REFUND_NO[False, for_update]
        return await self._one(query, {"mch_id": mch_id, "out_refund_no": out_refund_no})

    async def _one(self, query: Any, params: dict[str, Any]) -> Refund | None:
        row = (await self.conn.execute(query, params)).mappings().first()
        if row is None:
            return None
        bind(refund_id=row["id"], out_refund_no=row["out_refund_no"], payment_id=row["payment_id"])
        return _refund_from_row(row)

    async def for_payment(self, payment_id: str) -> list[Refund]:
        query = select(db.refunds).where(db.refunds.c.payment_id == payment_id).order_by(db.refunds.c.created_at)
        return [_refund_from_row(r) for r in (await self.conn.execute(query)).mappings().all()]

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
        values = _values(refund, _REFUND_FIELDS)
        values.pop("id")
        values["version"] = refund.version + 1
        values["b_id"], values["b_version"] = refund.id, refund.version
        result = await self.conn.execute(_SAVE_REFUND, values)
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"refund {refund.id} changed concurrently")
        refund.version += 1

    async def due_for_query(self, now: datetime, limit: int = 100) -> list[Refund]:
        t = db.refunds
        query = (
            select(t)
            .where(t.c.status.in_(["pending", "processing"]), t.c.next_query_at.is_not(None), t.c.next_query_at <= now)
            .order_by(t.c.next_query_at)
            .limit(limit)
        )
        return [_refund_from_row(r) for r in (await self.conn.execute(query)).mappings().all()]


class EventLog(_Repo):
    """The append-only ``payment_events`` log (never updated, never deleted)."""

    async def append(
        self,
        *,
        type: str,
        source: str,
        data: dict[str, Any],
        now: datetime,
        payment_id: str | None = None,
        refund_id: str | None = None,
        sub_mch_id: str | None = None,
    ) -> None:
        await self.conn.execute(
            _INSERT_EVENT,
            {
                "payment_id": payment_id,
                "refund_id": refund_id,
                "sub_mch_id": sub_mch_id,
                "type": type,
                "source": source,
                "data": data,
                "created_at": now,
            },
        )


class Outbox(_Repo):
    """Webhook events, written in the transaction of the state change; one row per ``event_key``."""

    async def publish(
        self,
        *,
        key: str,
        type: str,
        sub_mch_id: str,
        data: dict[str, Any],
        now: datetime,
        payment_id: str | None = None,
        refund_id: str | None = None,
    ) -> str | None:
        """Insert the event and its deliveries; returns the event id, or None when ``key`` exists already."""
        event_id = new_id("evt")
        row = {
            "id": event_id,
            "event_key": key,
            "type": type,
            "sub_mch_id": sub_mch_id,
            "payment_id": payment_id,
            "refund_id": refund_id,
            "data": data,
            "created_at": now,
        }
        if (await self.conn.execute(_PUBLISH[self.conn.dialect.name], row)).first() is None:
            return None  # the key exists: published already
        endpoints = (await self.conn.execute(_ENDPOINTS_FOR, {"sub": sub_mch_id})).all()
        if endpoints:
            await self.conn.execute(
                _INSERT_DELIVERY,
                [
                    {
                        "event_id": event_id,
                        "endpoint_id": endpoint_id,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for (endpoint_id,) in endpoints
                ],
            )
        return event_id


class IdempotencyKeys(_Repo):
    async def get(self, scope: str, key: str) -> RowMapping | None:
        return (await self.conn.execute(_IDEMPOTENCY_KEY, {"scope": scope, "key": key})).mappings().first()

    async def add(self, scope: str, key: str, request_hash: str, resource_id: str, now: datetime) -> None:
        await self.conn.execute(
            _INSERT_IDEMPOTENCY_KEY,
            {"scope": scope, "key": key, "request_hash": request_hash, "resource_id": resource_id, "created_at": now},
        )


def _uow_attributes(uow: UnitOfWork) -> dict[str, Any]:
    return {"db.system": uow.engine.dialect.name, "db.read_only": uow.read_only}


class UnitOfWork:
    """One transaction with its repositories. Use as ``async with``; call ``commit()`` to keep the work."""

    def __init__(self, engine: AsyncEngine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self._conn: AsyncConnection | None = None
        self._committed = False
        self._span: Any = None
        self.payments = PaymentRepository(self)
        self.refunds = RefundRepository(self)
        self.events = EventLog(self)
        self.outbox = Outbox(self)
        self.idempotency = IdempotencyKeys(self)

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not active: use `async with uow:`")
        return self._conn

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def reading(self) -> Self:
        """Make this a read-only unit of work (before ``async with``): see the module docstring."""
        self.read_only = True
        return self

    async def __aenter__(self) -> Self:
        self._span = tracing.start_span("db.unit_of_work", _uow_attributes(self)) if tracing.enabled() else None
        if self.read_only:
            conn = await db.reader_engine(self.engine).connect()
            if self.is_postgres:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
            return self
        self._conn = await self.engine.connect()
        await self._conn.begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()
            if self._span is not None:
                tracing.end_span(self._span, exc)
        if self._committed and isinstance(self.engine, db.SQLiteEngine):
            # The writer connection is back in the pool (the next writer goes on); the caller hears
            # of the work once it is on disk.
            self._committed = False
            await self.engine.sync()

    async def commit(self) -> None:
        """Commit; statements after it run in a new transaction (begun at the first one)."""
        if self.read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        await self.conn.commit()
        self._committed = True

    async def rollback(self) -> None:
        await self.conn.rollback()

    async def record(
        self,
        events: list[DomainEvent],
        *,
        source: str,
        sub_mch_id: str,
        now: datetime,
        payment_id: str | None,
        refund_id: str | None = None,
        webhook_data: dict[str, Any] | None = None,
    ) -> None:
        """Append the entity's new events to the log; publish the webhook ones to the outbox (same transaction)."""
        for ev in events:
            await self.events.append(
                type=ev.type,
                source=source,
                data=dict(ev.data),
                now=now,
                payment_id=payment_id,
                refund_id=refund_id,
                sub_mch_id=sub_mch_id,
            )
            if ev.webhook is not None and ev.key is not None:
                await self.outbox.publish(
                    key=ev.key,
                    type=ev.webhook,
                    sub_mch_id=sub_mch_id,
                    data=dict(webhook_data or {}),
                    now=now,
                    payment_id=payment_id,
                    refund_id=refund_id,
                )
        events.clear()


UnitOfWorkFactory = Callable[[], UnitOfWork]


async def retrying(factory: UnitOfWorkFactory, work: Callable[[UnitOfWork], Awaitable[T]], *, attempts: int = 8) -> T:
    """Run ``work`` in a fresh unit of work, again when a concurrent writer won (``ConcurrentUpdate``,
    a unique-key race, a PostgreSQL serialization failure or deadlock)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            async with factory() as uow:
                return await work(uow)
        except ConcurrentUpdate as exc:
            last = exc
        except IntegrityError as exc:
            last = exc
        except DBAPIError as exc:
            code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(
                getattr(exc, "orig", None), "pgcode", None
            )
            if code not in ("40001", "40P01"):
                raise
            last = exc
    raise ConcurrentUpdate(f"gave up after {attempts} attempts") from last
