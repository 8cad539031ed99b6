"""The worker: closes the loops the service opens (active queries, expiry, refund follow-up,
webhook delivery) and reconciles WeChat's daily bills with the ledger.

See ``docs/worker.md``. Jobs live in the ``worker_jobs`` table and are leased, so any number of
workers may run against one PostgreSQL database; every job is idempotent.
"""

from __future__ import annotations

from minipay.server.worker._backoff import ACTIVE_QUERY, JOB_ERROR, REFUND_QUERY, Backoff, Schedule
from minipay.server.worker._compare import DISCREPANCY_KINDS, Discrepancy, RefundRecord, TradeRecord, compare
from minipay.server.worker._queue import Clock, Job, JobQueue, JobStatus
from minipay.server.worker._tables import (
    metadata,
    reconciliation_discrepancies,
    reconciliation_runs,
    worker_jobs,
)

__all__ = [
    "ACTIVE_QUERY",
    "DISCREPANCY_KINDS",
    "JOB_ERROR",
    "REFUND_QUERY",
    "Backoff",
    "Clock",
    "Discrepancy",
    "Job",
    "JobQueue",
    "JobStatus",
    "RefundRecord",
    "Schedule",
    "TradeRecord",
    "compare",
    "metadata",
    "reconciliation_discrepancies",
    "reconciliation_runs",
    "worker_jobs",
]
