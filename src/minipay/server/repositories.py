"""The repositories of the unit of work: the SQL for payments, refunds, the event log, the outbox,
idempotency keys and webhooks (endpoints, events, deliveries), over SQLAlchemy Core (async)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from minipay.server import db
from minipay.server.domain import (
    MONEY_OUT_FAILURES,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    new_id,
)
from minipay.server.logs import bind

__all__ = [
    "ConcurrentUpdate",
    "EventLog",
    "IdempotencyKeys",
    "Outbox",
    "PaymentRepository",
    "RefundRepository",
    "Transaction",
    "WebhookRepository",
]


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


class Transaction(Protocol):
    """What a repository needs of its unit of work: the connection of the transaction, and which
    database it is."""

    @property
    def conn(self) -> AsyncConnection: ...

    @property
    def is_postgres(self) -> bool: ...


class _Repo:
    def __init__(self, uow: Transaction) -> None:
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


def _scoped(sub_mch_id: str | None) -> Any:
    """Endpoints not deleted, of ``sub_mch_id`` (every key's, for the admin's None)."""
    t = db.webhook_endpoints
    return (
        t.c.deleted_at.is_(None) if sub_mch_id is None else and_(t.c.deleted_at.is_(None), t.c.sub_mch_id == sub_mch_id)
    )


class WebhookRepository(_Repo):
    """Webhook endpoints, the outbox events as the API shows them, and the deliveries with their
    attempts and each endpoint's circuit breaker."""

    # -- endpoints

    async def count_endpoints(self, sub_mch_id: str | None) -> int:
        """The key's endpoints (not deleted); serialised per key on PostgreSQL until the transaction
        ends (SQLite's ``BEGIN IMMEDIATE`` already makes it the only writer), so a count and the insert
        after it cannot be passed by a concurrent one."""
        t = db.webhook_endpoints
        if self._uow.is_postgres:
            lock_key = f"minipay.webhook_endpoints:{sub_mch_id or ''}"
            await self.conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(lock_key))))
        owner = t.c.sub_mch_id.is_(None) if sub_mch_id is None else t.c.sub_mch_id == sub_mch_id
        return int(
            (
                await self.conn.execute(select(func.count()).select_from(t).where(owner, t.c.deleted_at.is_(None)))
            ).scalar_one()
        )

    async def add_endpoint(self, values: dict[str, Any]) -> None:
        await self.conn.execute(insert(db.webhook_endpoints).values(**values))

    async def endpoints(self, sub_mch_id: str | None) -> Sequence[RowMapping]:
        t = db.webhook_endpoints
        return (await self.conn.execute(select(t).where(_scoped(sub_mch_id)).order_by(t.c.created_at))).mappings().all()

    async def delete_endpoint(self, endpoint_id: str, *, sub_mch_id: str | None, now: datetime) -> bool:
        t = db.webhook_endpoints
        result = await self.conn.execute(
            update(t).where(t.c.id == endpoint_id, _scoped(sub_mch_id)).values(deleted_at=now)
        )
        return bool(result.rowcount == 1)

    # -- events and their delivery log

    async def event(self, event_id: str, *, sub_mch_id: str | None) -> RowMapping | None:
        e = db.outbox_events
        query = select(e).where(e.c.id == event_id)
        if sub_mch_id is not None:
            query = query.where(e.c.sub_mch_id == sub_mch_id)
        return (await self.conn.execute(query)).mappings().first()

    async def events(self, *, sub_mch_id: str | None, payment_id: str | None, limit: int) -> Sequence[RowMapping]:
        e = db.outbox_events
        query = select(e).order_by(e.c.created_at.desc(), e.c.id.desc()).limit(limit)
        if sub_mch_id is not None:
            query = query.where(e.c.sub_mch_id == sub_mch_id)
        if payment_id is not None:
            query = query.where(e.c.payment_id == payment_id)
        return (await self.conn.execute(query)).mappings().all()

    async def deliveries(
        self, event_id: str, *, sub_mch_id: str | None
    ) -> list[tuple[RowMapping, Sequence[RowMapping]]]:
        """Every delivery of an event (to ``sub_mch_id``'s own endpoints, when given) with its attempts."""
        d, a, w = db.webhook_deliveries, db.webhook_attempts, db.webhook_endpoints
        query = select(d).where(d.c.event_id == event_id).order_by(d.c.id)
        if sub_mch_id is not None:
            query = query.join(w, w.c.id == d.c.endpoint_id).where(w.c.sub_mch_id == sub_mch_id)
        out = []
        for row in (await self.conn.execute(query)).mappings().all():
            tries = (
                (await self.conn.execute(select(a).where(a.c.delivery_id == row["id"]).order_by(a.c.id)))
                .mappings()
                .all()
            )
            out.append((row, tries))
        return out

    # -- delivery

    async def claim(
        self,
        now: datetime,
        limit: int,
        until: datetime,
        *,
        per_endpoint: int | None = None,
        room: Mapping[str, int] | None = None,
    ) -> Sequence[RowMapping]:
        """Lease (``locked_until=until``) up to ``limit`` due deliveries, at most ``per_endpoint`` to
        one endpoint (less its ``room`` entry: what is in flight already), none to an endpoint whose
        breaker is open; the leased ones with their event and endpoint, oldest due first."""
        d, e, w = db.webhook_deliveries, db.outbox_events, db.webhook_endpoints
        room = room or {}
        full = [endpoint for endpoint, free in room.items() if free <= 0]
        due_where = [
            d.c.status == "pending",
            d.c.next_attempt_at <= now,
            or_(d.c.locked_until.is_(None), d.c.locked_until <= now),
        ]
        candidates = (
            select(d.c.id, d.c.endpoint_id)
            .join(w, w.c.id == d.c.endpoint_id)
            .where(*due_where, or_(w.c.open_until.is_(None), w.c.open_until <= now))
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit if per_endpoint is None else max(limit * 4, 100))
        )
        if full:
            candidates = candidates.where(d.c.endpoint_id.not_in(full))
        chosen: list[int] = []
        taken: dict[str, int] = {}
        for delivery_id, endpoint_id in (await self.conn.execute(candidates)).all():
            if per_endpoint is not None:
                allowed = min(per_endpoint, room.get(endpoint_id, per_endpoint))
                if taken.get(endpoint_id, 0) >= allowed:
                    continue
            taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
            chosen.append(delivery_id)
            if len(chosen) >= limit:
                break
        if not chosen:
            return []
        locking = select(d.c.id).where(d.c.id.in_(chosen), *due_where)
        if self._uow.is_postgres:
            locking = locking.with_for_update(skip_locked=True)  # another process may be claiming them
        ids = [row[0] for row in (await self.conn.execute(locking)).all()]
        if not ids:
            return []
        await self.conn.execute(update(d).where(d.c.id.in_(ids)).values(locked_until=until, updated_at=now))
        return (
            (
                await self.conn.execute(
                    select(
                        d.c.id,
                        d.c.endpoint_id,
                        d.c.attempts,
                        e.c.id.label("event_id"),
                        e.c.type,
                        e.c.created_at,
                        e.c.data,
                        w.c.url,
                        w.c.secret,
                        w.c.deleted_at,
                    )
                    .join(e, e.c.id == d.c.event_id)
                    .join(w, w.c.id == d.c.endpoint_id)
                    .where(d.c.id.in_(ids))
                    .order_by(d.c.next_attempt_at, d.c.id)
                )
            )
            .mappings()
            .all()
        )

    async def finish_attempt(self, delivery_id: int, lease: datetime, values: dict[str, Any]) -> bool:
        """Update a delivery after an attempt, fenced by its lease: False when the lease ran out and
        someone else claimed the row (it is theirs then)."""
        d = db.webhook_deliveries
        fenced = await self.conn.execute(
            update(d).where(d.c.id == delivery_id, d.c.locked_until == lease).values(**values)
        )
        return bool(fenced.rowcount == 1)

    async def log_attempt(
        self, delivery_id: int, *, at: datetime, status_code: int | None, error: str | None, duration_ms: int
    ) -> None:
        await self.conn.execute(
            insert(db.webhook_attempts).values(
                delivery_id=delivery_id,
                attempted_at=at,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
            )
        )

    async def close_breaker(self, endpoint_id: str) -> None:
        w = db.webhook_endpoints
        await self.conn.execute(update(w).where(w.c.id == endpoint_id).values(failure_streak=0, open_until=None))

    async def count_failure(self, endpoint_id: str) -> int:
        """One more consecutive failure of the endpoint; the streak so far."""
        w = db.webhook_endpoints
        await self.conn.execute(update(w).where(w.c.id == endpoint_id).values(failure_streak=w.c.failure_streak + 1))
        return int((await self.conn.execute(select(w.c.failure_streak).where(w.c.id == endpoint_id))).scalar_one())

    async def open_breaker(self, endpoint_id: str, until: datetime) -> None:
        w = db.webhook_endpoints
        await self.conn.execute(update(w).where(w.c.id == endpoint_id).values(open_until=until))
