"""worker tables: job queue and reconciliation

Revision ID: 0002_worker
Revises: 0001_initial
Create Date: 2026-11-27 21:30:00

Owned by the worker engineer (``minipay.server.worker``); the service owns ``0001_initial``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import minipay.server.db

revision = "0002_worker"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "worker_jobs",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_at", minipay.server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", minipay.server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", minipay.server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", minipay.server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", minipay.server.db.UTCDateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("kind", "key", name="uq_worker_jobs_kind_key"),
    )
    op.create_index("ix_worker_jobs_status_run_at", "worker_jobs", ["status", "run_at"])
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("bill_date", sa.Date(), nullable=False),
        sa.Column("sub_mch_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bill_rows", sa.Integer(), nullable=False),
        sa.Column("ledger_rows", sa.Integer(), nullable=False),
        sa.Column("discrepancy_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", minipay.server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", minipay.server.db.UTCDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("bill_date", "sub_mch_id", name="uq_reconciliation_runs_date_sub_mch"),
    )
    op.create_table(
        "reconciliation_discrepancies",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("bill_date", sa.Date(), nullable=False),
        sa.Column("sub_mch_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("out_trade_no", sa.String(length=32), nullable=True),
        sa.Column("transaction_id", sa.String(length=32), nullable=True),
        sa.Column("out_refund_no", sa.String(length=64), nullable=True),
        sa.Column("refund_id", sa.String(length=32), nullable=True),
        sa.Column("bill", sa.JSON(), nullable=True),
        sa.Column("ledger", sa.JSON(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", minipay.server.db.UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reconciliation_discrepancies_date", "reconciliation_discrepancies", ["bill_date", "sub_mch_id"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_discrepancies_date", table_name="reconciliation_discrepancies")
    op.drop_table("reconciliation_discrepancies")
    op.drop_table("reconciliation_runs")
    op.drop_index("ix_worker_jobs_status_run_at", table_name="worker_jobs")
    op.drop_table("worker_jobs")
