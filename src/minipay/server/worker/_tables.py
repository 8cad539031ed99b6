"""The worker's own tables (its Alembic revision creates them; see ``docs/worker.md``).

They live on their own :class:`~sqlalchemy.MetaData`: the worker only *reads* the service's tables
(``minipay.server.db``) and changes payments and refunds only through the service's use cases.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from minipay.server.db import UTCDateTime

__all__ = [
    "metadata",
    "reconciliation_discrepancies",
    "reconciliation_runs",
    "worker_jobs",
]


# BIGINT on PostgreSQL, INTEGER PRIMARY KEY (the rowid alias, auto-incremented) on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

#: The job queue. One row per logical job: ``(kind, key)`` is unique, so enqueueing twice is a no-op.
worker_jobs = Table(
    "worker_jobs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    # pending -> running -> done | pending (retry) | dead (gave up)
    Column("status", String(16), nullable=False),
    Column("run_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_token", String(64), nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    UniqueConstraint("kind", "key", name="uq_worker_jobs_kind_key"),
    Index("ix_worker_jobs_status_run_at", "status", "run_at"),
)

#: One reconciliation of one sub-merchant's bill for one China-time day.
reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("bill_date", Date, nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    # ok (no differences) | discrepancies | no_bill | error
    Column("status", String(16), nullable=False),
    Column("bill_rows", Integer, nullable=False),
    Column("ledger_rows", Integer, nullable=False),
    Column("discrepancy_count", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    UniqueConstraint("bill_date", "sub_mch_id", name="uq_reconciliation_runs_date_sub_mch"),
)

#: Every difference between a bill and the ledger. Append-only: nothing here edits money.
reconciliation_discrepancies = Table(
    "reconciliation_discrepancies",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("bill_date", Date, nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("out_trade_no", String(32), nullable=True),
    Column("transaction_id", String(32), nullable=True),
    Column("out_refund_no", String(64), nullable=True),
    Column("refund_id", String(32), nullable=True),
    Column("bill", JSON, nullable=True),
    Column("ledger", JSON, nullable=True),
    Column("detail", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_reconciliation_discrepancies_date", "bill_date", "sub_mch_id"),
)
