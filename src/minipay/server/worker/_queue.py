"""A database job queue with leases, safe with any number of workers.

* PostgreSQL: due rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and flipped to
  ``running`` in the same transaction, so two workers never claim the same row.
* SQLite: one ``UPDATE ... WHERE id IN (SELECT ...) RETURNING`` statement; SQLite has a single
  writer, so the statement is atomic against every other connection and process.

A claim gives the job a lease (``lease_expires_at``, measured on the injected clock) and a random
token. A worker that dies (SIGKILL, power loss) simply stops renewing; once the lease has expired
any worker may claim the job again. Every state change after a claim is fenced by the token, so a
worker that lost its lease cannot overwrite the work of the one that took over. Because a job can
therefore run more than once, every job handler is idempotent (see ``docs/worker.md``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minipay.server.worker._tables import worker_jobs

__all__ = ["Clock", "Job", "JobQueue", "JobStatus"]


class Clock(Protocol):
    """Anything with ``now()`` returning an aware datetime (the service's clock, a virtual clock)."""

    def now(self) -> datetime: ...


class JobStatus:
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job: what to do, and the lease that lets this worker report on it."""

    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    attempts: int  # including this one
    max_attempts: int
    run_at: datetime
    created_at: datetime
    lease_token: str
    lease_expires_at: datetime

    @classmethod
    def _from_row(cls, row: RowMapping) -> Job:
        return cls(
            id=int(row["id"]),
            kind=str(row["kind"]),
            key=str(row["key"]),
            payload=dict(row["payload"] or {}),
            attempts=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]),
            run_at=row["run_at"],
            created_at=row["created_at"],
            lease_token=str(row["lease_token"]),
            lease_expires_at=row["lease_expires_at"],
        )


class JobQueue:
    """The ``worker_jobs`` table as a queue.

    >>> queue = JobQueue(engine, clock)                          # doctest: +SKIP
    >>> await queue.enqueue("payment.followup", "pay_123", {"payment_id": "pay_123"})  # doctest: +SKIP
    >>> jobs = await queue.claim("worker-1", limit=10)           # doctest: +SKIP
    """

    def __init__(self, engine: AsyncEngine, clock: Clock, *, lease: timedelta = timedelta(seconds=60)) -> None:
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._engine = engine
        self._clock = clock
        self.lease = lease

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def _postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    # -- producing -------------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        max_attempts: int = 100,
        conn: AsyncConnection | None = None,
    ) -> bool:
        """Add a job unless one with the same ``(kind, key)`` exists. Returns True when added.

        Pass ``conn`` to enqueue inside the caller's transaction (the job then appears only if the
        caller commits).
        """
        now = self._clock.now()
        values = {
            "kind": kind,
            "key": key,
            "payload": dict(payload or {}),
            "status": JobStatus.PENDING,
            "run_at": run_at or now,
            "attempts": 0,
            "max_attempts": max_attempts,
            "created_at": now,
            "updated_at": now,
        }
        dialect_insert = postgresql.insert if self._postgres else sqlite.insert
        stmt = dialect_insert(worker_jobs).values(**values).on_conflict_do_nothing(index_elements=["kind", "key"])
        if conn is not None:
            result = await conn.execute(stmt)
            return bool(result.rowcount)
        async with self._engine.begin() as own:
            result = await own.execute(stmt)
            return bool(result.rowcount)

    async def enqueue_many(self, jobs: Sequence[tuple[str, str, Mapping[str, Any], datetime | None]]) -> int:
        """Enqueue several jobs in one transaction; returns how many were new."""
        added = 0
        async with self._engine.begin() as conn:
            for kind, key, payload, run_at in jobs:
                added += await self.enqueue(kind, key, payload, run_at=run_at, conn=conn)
        return added

    # -- consuming -------------------------------------------------------------------------------

    def _due(self, now: datetime) -> Any:
        t = worker_jobs.c
        return or_(
            and_(t.status == JobStatus.PENDING, t.run_at <= now),
            # A running job whose lease ran out belongs to a dead (or stuck) worker: take it over.
            and_(t.status == JobStatus.RUNNING, t.lease_expires_at <= now),
        )

    async def claim(self, owner: str, *, limit: int = 10, kinds: Sequence[str] | None = None) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``owner``, oldest ``run_at`` first."""
        now = self._clock.now()
        token = secrets.token_hex(16)
        t = worker_jobs.c
        where = self._due(now)
        if kinds:
            where = and_(where, t.kind.in_(list(kinds)))
        values = {
            "status": JobStatus.RUNNING,
            "attempts": t.attempts + 1,
            "lease_token": token,
            "lease_owner": owner[:128],
            "lease_expires_at": now + self.lease,
            "updated_at": now,
        }
        async with self._engine.begin() as conn:
            if self._postgres:
                ids_stmt = (
                    select(t.id).where(where).order_by(t.run_at, t.id).limit(limit).with_for_update(skip_locked=True)
                )
                ids = list((await conn.execute(ids_stmt)).scalars())
                if not ids:
                    return []
                stmt = update(worker_jobs).where(t.id.in_(ids)).values(**values).returning(*worker_jobs.c)
            else:
                due_ids = select(t.id).where(where).order_by(t.run_at, t.id).limit(limit).scalar_subquery()
                stmt = update(worker_jobs).where(t.id.in_(due_ids), where).values(**values).returning(*worker_jobs.c)
            rows = (await conn.execute(stmt)).mappings().all()
        jobs = [Job._from_row(row) for row in rows]
        jobs.sort(key=lambda j: (j.run_at, j.id))
        return jobs

    async def _finish(self, job: Job, values: dict[str, Any]) -> bool:
        t = worker_jobs.c
        values["updated_at"] = self._clock.now()
        stmt = (
            update(worker_jobs)
            .where(t.id == job.id, t.lease_token == job.lease_token, t.status == JobStatus.RUNNING)
            .values(**values)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def complete(self, job: Job, result: Mapping[str, Any] | None = None) -> bool:
        """Mark the job done. False when the lease was lost (another worker took the job over)."""
        now = self._clock.now()
        return await self._finish(
            job,
            {
                "status": JobStatus.DONE,
                "result": dict(result) if result is not None else None,
                "finished_at": now,
                "lease_token": None,
                "lease_expires_at": None,
            },
        )

    async def retry(
        self,
        job: Job,
        run_at: datetime,
        *,
        error: str | None = None,
        payload: Mapping[str, Any] | None = None,
        count_attempt: bool = True,
    ) -> bool:
        """Put the job back to run again at ``run_at`` (with an updated ``payload`` if given).

        ``count_attempt=False`` is for planned follow-ups (a query that found the payment still
        pending): those do not use up ``max_attempts``, which only counts failures.
        """
        values: dict[str, Any] = {
            "status": JobStatus.PENDING,
            "run_at": run_at,
            "last_error": error,
            "lease_token": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if payload is not None:
            values["payload"] = dict(payload)
        if not count_attempt:
            values["attempts"] = worker_jobs.c.attempts - 1
        return await self._finish(job, values)

    async def fail(self, job: Job, error: str) -> bool:
        """Give up on the job (it stays in the table, ``dead``, for an operator to look at)."""
        return await self._finish(
            job,
            {
                "status": JobStatus.DEAD,
                "last_error": error,
                "finished_at": self._clock.now(),
                "lease_token": None,
                "lease_expires_at": None,
            },
        )

    async def extend(self, job: Job) -> bool:
        """Renew the lease of a long job (a heartbeat)."""
        t = worker_jobs.c
        now = self._clock.now()
        stmt = (
            update(worker_jobs)
            .where(t.id == job.id, t.lease_token == job.lease_token, t.status == JobStatus.RUNNING)
            .values(lease_expires_at=now + self.lease, updated_at=now)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    # -- inspecting ------------------------------------------------------------------------------

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The job row as a dict (for tests, the CLI and operators)."""
        t = worker_jobs.c
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(worker_jobs).where(t.kind == kind, t.key == key))).mappings().first()
        return dict(row) if row is not None else None

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        t = worker_jobs.c
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.status, func.count()).group_by(t.status))).all()
        return {str(status): int(n) for status, n in rows}

    async def overview(self, *, dead_limit: int = 20) -> dict[str, Any]:
        """Queue health for operators: counts per kind and status, how late the most overdue
        pending job is (seconds, on the injected clock), jobs whose lease ran out, and the last
        ``dead`` jobs with their errors."""
        t = worker_jobs.c
        now = self._clock.now()
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.kind, t.status, func.count()).group_by(t.kind, t.status))).all()
            oldest_due = (
                await conn.execute(select(func.min(t.run_at)).where(t.status == JobStatus.PENDING, t.run_at <= now))
            ).scalar_one_or_none()
            stalled = (
                await conn.execute(select(func.count()).where(t.status == JobStatus.RUNNING, t.lease_expires_at <= now))
            ).scalar_one()
            dead = (
                (
                    await conn.execute(
                        select(t.kind, t.key, t.attempts, t.last_error, t.finished_at)
                        .where(t.status == JobStatus.DEAD)
                        .order_by(t.finished_at.desc(), t.id.desc())
                        .limit(dead_limit)
                    )
                )
                .mappings()
                .all()
            )
        counts: dict[str, dict[str, int]] = {}
        for kind, status, n in rows:
            counts.setdefault(str(kind), {})[str(status)] = int(n)
        return {
            "now": now.isoformat(),
            "counts": counts,
            "overdue_seconds": max((now - oldest_due).total_seconds(), 0.0) if oldest_due is not None else 0.0,
            "stalled": int(stalled),
            "dead": [
                {
                    "kind": d["kind"],
                    "key": d["key"],
                    "attempts": d["attempts"],
                    "last_error": d["last_error"],
                    "finished_at": d["finished_at"].isoformat() if d["finished_at"] else None,
                }
                for d in dead
            ],
        }

    async def revive_dead(self, *, kind: str | None = None) -> int:
        """Give ``dead`` jobs a fresh start (after an operator fixed the cause); returns how many."""
        t = worker_jobs.c
        now = self._clock.now()
        stmt = update(worker_jobs).where(t.status == JobStatus.DEAD)
        if kind is not None:
            stmt = stmt.where(t.kind == kind)
        stmt = stmt.values(status=JobStatus.PENDING, attempts=0, run_at=now, finished_at=None, updated_at=now)
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return int(result.rowcount or 0)

    async def next_run_at(self) -> datetime | None:
        """When the earliest pending job becomes due (None when nothing is pending)."""
        t = worker_jobs.c
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(select(func.min(t.run_at)).where(t.status == JobStatus.PENDING))
            ).scalar_one_or_none()
        # ``min`` keeps the column type, so the value comes back aware (UTC) on every dialect.
        assert value is None or isinstance(value, datetime)
        return value
