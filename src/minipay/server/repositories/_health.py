"""The health probes' queries: the readiness ping, and the worker's and webhooks' backlog behind ``/metrics``."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, text

from minipay.server import db
from minipay.server.repositories._base import Repository

__all__ = ["BacklogRows", "HealthQueries"]

_PING = text("SELECT 1")


class BacklogRows(NamedTuple):
    oldest_due_job: datetime | None  # run_at of the oldest pending job that is due
    jobs_due: int
    deliveries_due: int  # pending webhook deliveries whose next attempt is now or past
    oldest_pending_delivery: datetime | None  # created_at of the oldest pending delivery


class HealthQueries(Repository):
    async def ping(self) -> None:
        """One round trip to the database (raises when it is down)."""
        await self.conn.execute(_PING)

    async def backlog(self, now: datetime) -> BacklogRows:
        j, d = db.worker_jobs.c, db.webhook_deliveries.c
        oldest_job, due = (
            await self.conn.execute(
                select(func.min(j.run_at), func.count()).where(j.status == "pending", j.run_at <= now)
            )
        ).one()
        backlog = (
            await self.conn.execute(select(func.count()).where(d.status == "pending", d.next_attempt_at <= now))
        ).scalar_one()
        oldest_delivery = (
            await self.conn.execute(select(func.min(d.created_at)).where(d.status == "pending"))
        ).scalar_one_or_none()
        return BacklogRows(oldest_job, int(due), int(backlog), oldest_delivery)
