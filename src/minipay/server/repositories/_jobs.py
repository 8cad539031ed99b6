"""The job repository: the worker's ``worker_jobs`` queue (enqueue, claim with a lease, fenced updates,
inspection) and the payments and refunds that have no follow-up job yet.

Claiming is safe with any number of workers:

* PostgreSQL: due rows are selected ``FOR UPDATE SKIP LOCKED`` and flipped to ``running`` in the same
  transaction, so two workers never claim the same row.
* SQLite: one ``UPDATE ... WHERE id IN (SELECT ...) RETURNING`` statement; SQLite has a single
  writer, so the statement is atomic against every other connection and process.

Every update after a claim is fenced by the claim's token (and ``status = 'running'``): a worker that
lost its lease cannot overwrite the work of the one that took over.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from minipay.server import db
from minipay.server.repositories._base import Repository

__all__ = ["Job", "JobRepository", "JobStatus", "QueueOverview", "job_from_row"]

_jobs = db.worker_jobs


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


def job_from_row(row: RowMapping) -> Job:
    """A :class:`Job` from a claimed ``worker_jobs`` row."""
    return Job(
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


@dataclass(frozen=True, slots=True)
class QueueOverview:
    """The queue's health as the rows say it (see ``JobQueue.overview``)."""

    counts: dict[str, dict[str, int]]  # kind -> status -> jobs
    oldest_due: datetime | None  # run_at of the most overdue pending job
    stalled: int  # running jobs whose lease ran out
    dead: Sequence[RowMapping]  # kind, key, attempts, last_error, finished_at: the newest first


def _due(now: datetime) -> Any:
    t = _jobs.c
    return or_(
        and_(t.status == JobStatus.PENDING, t.run_at <= now),
        # A running job whose lease ran out belongs to a dead (or stuck) worker: take it over.
        and_(t.status == JobStatus.RUNNING, t.lease_expires_at <= now),
    )


class JobRepository(Repository):
    """``worker_jobs``: one row per logical job, ``(kind, key)`` unique."""

    # -- producing

    async def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        now: datetime,
        run_at: datetime | None = None,
        max_attempts: int = 100,
    ) -> bool:
        """Add a job unless one with the same ``(kind, key)`` exists (in this transaction: the job
        exists once it commits). True when added."""
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
        dialect_insert = postgresql.insert if self._uow.is_postgres else sqlite.insert
        stmt = dialect_insert(_jobs).values(**values).on_conflict_do_nothing(index_elements=["kind", "key"])
        return bool((await self.conn.execute(stmt)).rowcount)

    async def unscheduled_payments(
        self, kind: str, *, statuses: Collection[str], limit: int
    ) -> list[tuple[str, datetime]]:
        """``(id, created_at)`` of payments in ``statuses`` without a job of ``kind`` keyed by their id,
        oldest first."""
        p, j = db.payments, _jobs
        no_job = ~exists().where(and_(j.c.kind == kind, j.c.key == p.c.id))
        query = (
            select(p.c.id, p.c.created_at)
            .where(p.c.status.in_(sorted(str(s) for s in statuses)), no_job)
            .order_by(p.c.created_at)
            .limit(limit)
        )
        return [(str(pid), created_at) for pid, created_at in (await self.conn.execute(query)).all()]

    async def unscheduled_refunds(self, kind: str, *, limit: int) -> list[tuple[str, datetime]]:
        """``(id, created_at)`` of refunds without a job of ``kind`` keyed by their id, oldest first."""
        r, j = db.refunds, _jobs
        no_job = ~exists().where(and_(j.c.kind == kind, j.c.key == r.c.id))
        query = select(r.c.id, r.c.created_at).where(no_job).order_by(r.c.created_at).limit(limit)
        return [(str(rid), created_at) for rid, created_at in (await self.conn.execute(query)).all()]

    # -- consuming

    async def claim(
        self,
        owner: str,
        *,
        token: str,
        now: datetime,
        lease_expires_at: datetime,
        limit: int,
        kinds: Sequence[str] | None = None,
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``owner`` under ``token``, oldest ``run_at`` first."""
        t = _jobs.c
        where = _due(now)
        if kinds:
            where = and_(where, t.kind.in_(list(kinds)))
        values = {
            "status": JobStatus.RUNNING,
            "attempts": t.attempts + 1,
            "lease_token": token,
            "lease_owner": owner[:128],
            "lease_expires_at": lease_expires_at,
            "updated_at": now,
        }
        if self._uow.is_postgres:
            ids_stmt = select(t.id).where(where).order_by(t.run_at, t.id).limit(limit).with_for_update(skip_locked=True)
            ids = list((await self.conn.execute(ids_stmt)).scalars())
            if not ids:
                return []
            stmt = update(_jobs).where(t.id.in_(ids)).values(**values).returning(*_jobs.c)
        else:
            due_ids = select(t.id).where(where).order_by(t.run_at, t.id).limit(limit).scalar_subquery()
            stmt = update(_jobs).where(t.id.in_(due_ids), where).values(**values).returning(*_jobs.c)
        rows = (await self.conn.execute(stmt)).mappings().all()
        jobs = [job_from_row(row) for row in rows]
        jobs.sort(key=lambda j: (j.run_at, j.id))
        return jobs

    async def _fenced(self, job: Job, values: dict[str, Any]) -> bool:
        t = _jobs.c
        stmt = (
            update(_jobs)
            .where(t.id == job.id, t.lease_token == job.lease_token, t.status == JobStatus.RUNNING)
            .values(**values)
        )
        return bool((await self.conn.execute(stmt)).rowcount)

    async def complete(self, job: Job, result: Mapping[str, Any] | None, *, now: datetime) -> bool:
        """Mark the job done. False when the lease was lost (another worker took the job over)."""
        return await self._fenced(
            job,
            {
                "status": JobStatus.DONE,
                "result": dict(result) if result is not None else None,
                "finished_at": now,
                "lease_token": None,
                "lease_expires_at": None,
                "updated_at": now,
            },
        )

    async def retry(
        self,
        job: Job,
        run_at: datetime,
        *,
        now: datetime,
        error: str | None = None,
        payload: Mapping[str, Any] | None = None,
        count_attempt: bool = True,
    ) -> bool:
        """Put the job back to run again at ``run_at`` (with ``payload`` if given); ``count_attempt=False``
        gives back the attempt its claim counted. False when the lease was lost."""
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
            values["attempts"] = _jobs.c.attempts - 1
        values["updated_at"] = now
        return await self._fenced(job, values)

    async def fail(self, job: Job, error: str, *, now: datetime) -> bool:
        """Leave the job ``dead`` with its last error. False when the lease was lost."""
        return await self._fenced(
            job,
            {
                "status": JobStatus.DEAD,
                "last_error": error,
                "finished_at": now,
                "lease_token": None,
                "lease_expires_at": None,
                "updated_at": now,
            },
        )

    async def extend(self, job: Job, *, now: datetime, lease_expires_at: datetime) -> bool:
        """Renew the lease of a running job. False when the lease was lost."""
        return await self._fenced(job, {"lease_expires_at": lease_expires_at, "updated_at": now})

    # -- inspecting and operating

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The job row as a dict."""
        t = _jobs.c
        row = (await self.conn.execute(select(_jobs).where(t.kind == kind, t.key == key))).mappings().first()
        return dict(row) if row is not None else None

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        t = _jobs.c
        rows = (await self.conn.execute(select(t.status, func.count()).group_by(t.status))).all()
        return {str(status): int(n) for status, n in rows}

    async def overview(self, *, now: datetime, dead_limit: int) -> QueueOverview:
        """Counts per kind and status, the most overdue pending job, the stalled jobs, the last dead ones."""
        t = _jobs.c
        rows = (await self.conn.execute(select(t.kind, t.status, func.count()).group_by(t.kind, t.status))).all()
        oldest_due = (
            await self.conn.execute(select(func.min(t.run_at)).where(t.status == JobStatus.PENDING, t.run_at <= now))
        ).scalar_one_or_none()
        stalled = (
            await self.conn.execute(
                select(func.count()).where(t.status == JobStatus.RUNNING, t.lease_expires_at <= now)
            )
        ).scalar_one()
        dead = (
            (
                await self.conn.execute(
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
        return QueueOverview(counts=counts, oldest_due=oldest_due, stalled=int(stalled), dead=dead)

    async def revive_dead(self, *, now: datetime, kind: str | None = None) -> int:
        """Give ``dead`` jobs (of ``kind``, or all) a fresh start now; returns how many."""
        t = _jobs.c
        stmt = update(_jobs).where(t.status == JobStatus.DEAD)
        if kind is not None:
            stmt = stmt.where(t.kind == kind)
        stmt = stmt.values(status=JobStatus.PENDING, attempts=0, run_at=now, finished_at=None, updated_at=now)
        return int((await self.conn.execute(stmt)).rowcount or 0)

    async def next_run_at(self) -> datetime | None:
        """When the earliest pending job becomes due (None when nothing is pending)."""
        t = _jobs.c
        value = (
            await self.conn.execute(select(func.min(t.run_at)).where(t.status == JobStatus.PENDING))
        ).scalar_one_or_none()
        # ``min`` keeps the column type, so the value comes back aware (UTC) on every dialect.
        assert value is None or isinstance(value, datetime)
        return value
