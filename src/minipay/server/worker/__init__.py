"""The worker: closes the loops the service opens (active queries, expiry, refund follow-up,
webhook delivery) and reconciles WeChat's daily bills with the ledger.

See ``docs/worker.md``. Jobs live in the ``worker_jobs`` table and are leased, so any number of
workers may run against one PostgreSQL database; every job is idempotent.
"""

from __future__ import annotations

from minipay.server.db import (
    reconciliation_discrepancies,
    reconciliation_runs,
    worker_jobs,
)
from minipay.server.db import worker_metadata as metadata
from minipay.server.worker._backoff import ACTIVE_QUERY, JOB_ERROR, REFUND_QUERY, Backoff, Schedule
from minipay.server.worker._compare import (
    DISCREPANCY_KINDS,
    REFUND_JOB_KINDS,
    Discrepancy,
    RefundRecord,
    TradeRecord,
    compare,
)
from minipay.server.worker._queue import Clock, Job, JobQueue, JobStatus
from minipay.server.worker._reconcile import (
    BillData,
    BillNotReady,
    BillSource,
    ClientBillSource,
    Reconciler,
    RunRecord,
    bill_data_from_rows,
    china_day_bounds,
)
from minipay.server.worker._worker import (
    BILL_RECONCILE,
    PAYMENT_FOLLOWUP,
    REFUND_FOLLOWUP,
    TickSummary,
    Worker,
    WorkerConfig,
)

__all__ = [
    "ACTIVE_QUERY",
    "BILL_RECONCILE",
    "DISCREPANCY_KINDS",
    "JOB_ERROR",
    "PAYMENT_FOLLOWUP",
    "REFUND_FOLLOWUP",
    "REFUND_JOB_KINDS",
    "REFUND_QUERY",
    "Backoff",
    "BillData",
    "BillNotReady",
    "BillSource",
    "ClientBillSource",
    "Clock",
    "Discrepancy",
    "Job",
    "JobQueue",
    "JobStatus",
    "Reconciler",
    "RefundRecord",
    "RunRecord",
    "Schedule",
    "TickSummary",
    "TradeRecord",
    "Worker",
    "WorkerConfig",
    "bill_data_from_rows",
    "china_day_bounds",
    "compare",
    "metadata",
    "reconciliation_discrepancies",
    "reconciliation_runs",
    "worker_jobs",
]
