"""The records written beside a state change: the append-only event log, the webhook outbox (an event
and its deliveries), and the idempotency keys of the API's mutating calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, literal, or_, select, true
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from minipay.server import db
from minipay.server.domain import new_id
from minipay.server.repositories._base import Repository, Transaction

__all__ = ["EventLog", "IdempotencyKeys", "Outbox", "deliveries_for"]

_INSERT_EVENT = insert(db.payment_events)
_INSERT_DELIVERY = insert(db.webhook_deliveries)
_INSERT_IDEMPOTENCY_KEY = insert(db.idempotency_keys)
# SQLite: one statement for "insert the event unless its key exists": the row's id back, or no row
# (PostgreSQL writes the event and its deliveries at once: _PUBLISH_WITH_DELIVERIES below).
_PUBLISH = (
    sqlite_dialect.insert(db.outbox_events)
    .on_conflict_do_nothing(index_elements=["event_key"])
    .returning(db.outbox_events.c.id)
)


def _live_endpoints_of(sub: str) -> Any:
    """The endpoints an event of the sub-merchant (parameter ``sub``) goes to: its own and the admin's
    (``sub_mch_id`` NULL), not deleted."""
    e = db.webhook_endpoints
    return and_(e.c.deleted_at.is_(None), or_(e.c.sub_mch_id.is_(None), e.c.sub_mch_id == bindparam(sub)))


_ENDPOINTS_FOR = select(db.webhook_endpoints.c.id).where(_live_endpoints_of("sub"))
_DELIVERY_COLUMNS = ("event_id", "endpoint_id", "status", "attempts", "next_attempt_at", "created_at", "updated_at")


def deliveries_for(event: Any, *, created_at: str, sub: str) -> Any:
    """PostgreSQL: the CTE that inserts one pending delivery per live endpoint of the sub-merchant
    (parameter ``sub``; the admin's endpoints too) for each row of ``event`` (a CTE returning the
    outbox event's ``id``), due at parameter ``created_at``."""
    e = db.webhook_endpoints
    now = bindparam(created_at, type_=db.outbox_events.c.created_at.type)
    endpoints = (
        select(event.c.id, e.c.id, literal("pending"), literal(0), now, now, now)
        .select_from(event.join(e, true()))
        .where(_live_endpoints_of(sub))
    )
    return insert(db.webhook_deliveries).from_select(_DELIVERY_COLUMNS, endpoints).cte("deliveries")


def _publish_with_deliveries() -> Any:
    """PostgreSQL: the outbox row and one delivery per endpoint of the sub-merchant in one statement
    (data-modifying CTEs), the event's id back, or no row when its key exists. It is what the three
    statements of :meth:`Outbox.publish` do, in one round trip instead of two or three."""
    t = db.outbox_events
    event = (
        postgresql_dialect.insert(t)
        .values({c.name: bindparam(c.name, type_=c.type) for c in t.columns})
        .on_conflict_do_nothing(index_elements=["event_key"])
        .returning(t.c.id)
        .cte("event")
    )
    return select(event.c.id).add_cte(deliveries_for(event, created_at="created_at", sub="sub"))


_PUBLISH_WITH_DELIVERIES = _publish_with_deliveries()
_IDEMPOTENCY_KEY = select(db.idempotency_keys).where(
    db.idempotency_keys.c.scope == bindparam("scope"), db.idempotency_keys.c.key == bindparam("key")
)


class EventLog(Repository):
    """The append-only ``payment_events`` log (never updated, never deleted).

    Appended rows are written together, in one statement, when the unit of work commits
    (:meth:`flush`), and dropped when it rolls back: a use case that logs two or three events pays
    one round trip for them. Nothing reads the log inside the transaction that writes it (the
    console reads it afterwards), so the order of the rows and their transaction are all that matter,
    and both are kept."""

    def __init__(self, uow: Transaction) -> None:
        super().__init__(uow)
        self._pending: list[dict[str, Any]] = []

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
        self._pending.append(
            {
                "payment_id": payment_id,
                "refund_id": refund_id,
                "sub_mch_id": sub_mch_id,
                "type": type,
                "source": source,
                "data": dict(data),  # as it is now, not as it may be at the commit
                "created_at": now,
            }
        )

    async def flush(self) -> None:
        """Write the rows appended since the last flush (the unit of work calls it before committing)."""
        if self._pending:
            await self.write(self.conn, self.take())

    def take(self) -> list[dict[str, Any]]:
        """The rows appended since the last flush, handed over to be written (a batched commit)."""
        rows, self._pending = self._pending, []
        return rows

    @staticmethod
    async def write(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        await conn.execute(_INSERT_EVENT, rows)

    def discard(self) -> None:
        """Forget the rows not written yet (the unit of work rolled back or ended without a commit)."""
        self._pending.clear()


class Outbox(Repository):
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
        batch = self._uow.batch
        if batch is not None:
            # Sent at the commit; an existing key then writes nothing, as here.
            batch.outbox.append(row)
            return event_id
        return event_id if await self.write(self.conn, row, postgres=self._uow.is_postgres) else None

    @staticmethod
    async def write(conn: AsyncConnection, row: dict[str, Any], *, postgres: bool) -> bool:
        """Insert the event ``row`` and its deliveries; False when its key exists (nothing written)."""
        event_id, sub_mch_id, now = row["id"], row["sub_mch_id"], row["created_at"]
        if postgres:
            found = await conn.execute(_PUBLISH_WITH_DELIVERIES, {**row, "sub": sub_mch_id})
            return found.first() is not None
        if (await conn.execute(_PUBLISH, row)).first() is None:
            return False  # the key exists: published already
        endpoints = (await conn.execute(_ENDPOINTS_FOR, {"sub": sub_mch_id})).all()
        if endpoints:
            await conn.execute(
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
        return True


class IdempotencyKeys(Repository):
    async def get(self, scope: str, key: str) -> RowMapping | None:
        return (await self.conn.execute(_IDEMPOTENCY_KEY, {"scope": scope, "key": key})).mappings().first()

    async def add(self, scope: str, key: str, request_hash: str, resource_id: str, now: datetime) -> None:
        await self.conn.execute(
            _INSERT_IDEMPOTENCY_KEY,
            {"scope": scope, "key": key, "request_hash": request_hash, "resource_id": resource_id, "created_at": now},
        )
