"""The job queue of the worker: jobs with leases, safe with any number of workers.

A claim gives the job a lease (``lease_expires_at``, measured on the injected clock) and a random
token. A worker that dies (SIGKILL, power loss) simply stops renewing; once the lease has expired
any worker may claim the job again. Every state change after a claim is fenced by the token, so a
worker that lost its lease cannot overwrite the work of the one that took over. Because a job can
therefore run more than once, every job handler is idempotent (see ``docs/worker.md``).

The SQL (``SKIP LOCKED`` on PostgreSQL, one atomic statement on SQLite) is the job repository's
(``uow.jobs``, ``minipay.server.repositories``); :class:`JobQueue` gives it the clock, the lease and
a transaction per operation.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from minipay.server.repositories import Job, JobStatus
from minipay.server.uow import UnitOfWork, UnitOfWorkFactory

__all__ = ["Clock", "Job", "JobQueue", "JobStatus"]


class Clock(Protocol):
    """Anything with ``now()`` returning an aware datetime (the service's clock, a virtual clock)."""

    def now(self) -> datetime: ...


class JobQueue:
    """The ``worker_jobs`` table as a queue; each call is a transaction of its own.

    >>> queue = JobQueue(container.uow_factory, clock)          # doctest: +SKIP
    >>> await queue.enqueue("payment.followup", "pay_123", {"payment_id": "pay_123"})  # doctest: +SKIP
    >>> jobs = await queue.claim("worker-1", limit=10)           # doctest: +SKIP
    """

    def __init__(
        self, uow_factory: UnitOfWorkFactory, clock: Clock, *, lease: timedelta = timedelta(seconds=60)
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("the lease must be positive")
        self._uow_factory = uow_factory
        self._clock = clock
        self.lease = lease

    # -- producing -------------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        max_attempts: int = 100,
        uow: UnitOfWork | None = None,
    ) -> bool:
        """Add a job unless one with the same ``(kind, key)`` exists. Returns True when added.

        Pass ``uow`` to enqueue inside the caller's unit of work (the job then appears only if the
        caller commits).
        """
        if uow is not None:
            return await uow.jobs.enqueue(
                kind, key, payload, now=self._clock.now(), run_at=run_at, max_attempts=max_attempts
            )
        async with self._uow_factory() as own:
            added = await own.jobs.enqueue(
                kind, key, payload, now=self._clock.now(), run_at=run_at, max_attempts=max_attempts
            )
            await own.commit()
        return added

    async def enqueue_many(self, jobs: Sequence[tuple[str, str, Mapping[str, Any], datetime | None]]) -> int:
        """Enqueue several jobs in one transaction; returns how many were new."""
        added = 0
        async with self._uow_factory() as uow:
            for kind, key, payload, run_at in jobs:
                added += await self.enqueue(kind, key, payload, run_at=run_at, uow=uow)
            await uow.commit()
        return added

    # -- consuming -------------------------------------------------------------------------------

    async def claim(self, owner: str, *, limit: int = 10, kinds: Sequence[str] | None = None) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``owner``, oldest ``run_at`` first."""
        now = self._clock.now()
        async with self._uow_factory() as uow:
            jobs = await uow.jobs.claim(
                owner,
                token=secrets.token_hex(16),
                now=now,
                lease_expires_at=now + self.lease,
                limit=limit,
                kinds=kinds,
            )
            await uow.commit()
        return jobs

    async def complete(self, job: Job, result: Mapping[str, Any] | None = None) -> bool:
        """Mark the job done. False when the lease was lost (another worker took the job over)."""
        async with self._uow_factory() as uow:
            done = await uow.jobs.complete(job, result, now=self._clock.now())
            await uow.commit()
        return done

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
        async with self._uow_factory() as uow:
            done = await uow.jobs.retry(
                job, run_at, now=self._clock.now(), error=error, payload=payload, count_attempt=count_attempt
            )
            await uow.commit()
        return done

    async def fail(self, job: Job, error: str) -> bool:
        """Give up on the job (it stays in the table, ``dead``, for an operator to look at)."""
        async with self._uow_factory() as uow:
            done = await uow.jobs.fail(job, error, now=self._clock.now())
            await uow.commit()
        return done

    async def extend(self, job: Job) -> bool:
        """Renew the lease of a long job (a heartbeat)."""
        now = self._clock.now()
        async with self._uow_factory() as uow:
            done = await uow.jobs.extend(job, now=now, lease_expires_at=now + self.lease)
            await uow.commit()
        return done

    # -- inspecting ------------------------------------------------------------------------------

    async def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The job row as a dict (for tests, the CLI and operators)."""
        async with self._uow_factory().reading() as uow:
            return await uow.jobs.get(kind, key)

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        async with self._uow_factory().reading() as uow:
            return await uow.jobs.counts()

    async def overview(self, *, dead_limit: int = 20) -> dict[str, Any]:
        """Queue health for operators: counts per kind and status, how late the most overdue
        pending job is (seconds, on the injected clock), jobs whose lease ran out, and the last
        ``dead`` jobs with their errors."""
        now = self._clock.now()
        async with self._uow_factory().reading() as uow:
            found = await uow.jobs.overview(now=now, dead_limit=dead_limit)
        oldest_due = found.oldest_due
        return {
            "now": now.isoformat(),
            "counts": found.counts,
            "overdue_seconds": max((now - oldest_due).total_seconds(), 0.0) if oldest_due is not None else 0.0,
            "stalled": found.stalled,
            "dead": [
                {
                    "kind": d["kind"],
                    "key": d["key"],
                    "attempts": d["attempts"],
                    "last_error": d["last_error"],
                    "finished_at": d["finished_at"].isoformat() if d["finished_at"] else None,
                }
                for d in found.dead
            ],
        }

    async def revive_dead(self, *, kind: str | None = None) -> int:
        """Give ``dead`` jobs a fresh start (after an operator fixed the cause); returns how many."""
        async with self._uow_factory() as uow:
            revived = await uow.jobs.revive_dead(now=self._clock.now(), kind=kind)
            await uow.commit()
        return revived

    async def next_run_at(self) -> datetime | None:
        """When the earliest pending job becomes due (None when nothing is pending)."""
        async with self._uow_factory().reading() as uow:
            return await uow.jobs.next_run_at()
