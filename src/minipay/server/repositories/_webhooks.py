"""The webhook repository: endpoints, the outbox events as the API shows them, and the deliveries with
their leases, attempts and each endpoint's circuit breaker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from minipay.server import db
from minipay.server.repositories._base import Repository

__all__ = ["WebhookRepository"]


def _scoped(sub_mch_id: str | None) -> Any:
    """Endpoints not deleted, of ``sub_mch_id`` (every key's, for the admin's None)."""
    t = db.webhook_endpoints
    return (
        t.c.deleted_at.is_(None) if sub_mch_id is None else and_(t.c.deleted_at.is_(None), t.c.sub_mch_id == sub_mch_id)
    )


class WebhookRepository(Repository):
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

    # -- the console's view of deliveries

    async def recent_deliveries(self, *, sub_mch_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest deliveries (to ``sub_mch_id``'s endpoints, when given) with their event's type and
        payment, the endpoint's URL and owner, and the last attempt's status code."""
        d, e, w = db.webhook_deliveries, db.outbox_events, db.webhook_endpoints
        query = (
            select(
                d.c.id,
                d.c.status,
                d.c.attempts,
                d.c.last_status_code,
                d.c.next_attempt_at,
                d.c.updated_at,
                e.c.type,
                e.c.payment_id,
                w.c.url,
                w.c.sub_mch_id,
            )
            .select_from(d.join(e, e.c.id == d.c.event_id).join(w, w.c.id == d.c.endpoint_id))
            .order_by(d.c.id.desc())
            .limit(limit)
        )
        if sub_mch_id is not None:
            query = query.where(w.c.sub_mch_id == sub_mch_id)
        return [dict(r) for r in (await self.conn.execute(query)).mappings().all()]

    async def retry_failed(self, delivery_id: int, *, sub_mch_id: str | None, now: datetime) -> bool:
        """Schedule a ``failed`` (given up) delivery to one of ``sub_mch_id``'s endpoints (any, for
        None) again now; False when there is no such delivery."""
        d, w = db.webhook_deliveries, db.webhook_endpoints
        endpoint_ids = select(w.c.id)
        if sub_mch_id is not None:
            endpoint_ids = endpoint_ids.where(w.c.sub_mch_id == sub_mch_id)
        query = (
            update(d)
            .where(d.c.id == delivery_id, d.c.status == "failed", d.c.endpoint_id.in_(endpoint_ids))
            .values(status="pending", next_attempt_at=now, locked_until=None, updated_at=now)
        )
        return bool((await self.conn.execute(query)).rowcount)
