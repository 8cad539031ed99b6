"""payments, refunds: drop next_query_at and query_attempts (the worker's jobs schedule queries)

Revision ID: 0005_drop_query_columns
Revises: 0004_webhook_breaker
Create Date: 2026-12-05 12:00:00

The first service scheduled WeChat queries on the payment and refund rows themselves; the worker's
``worker_jobs`` queue replaced that, and nothing read or wrote these columns any more.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import minipay.server.db

revision = "0005_drop_query_columns"
down_revision = "0004_webhook_breaker"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("payments", "refunds"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_status_next_query_at")
            batch_op.drop_column("query_attempts")
            batch_op.drop_column("next_query_at")


def downgrade() -> None:
    for table in ("payments", "refunds"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("next_query_at", minipay.server.db.UTCDateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column("query_attempts", sa.Integer(), nullable=False, server_default="0"))
            batch_op.create_index(f"ix_{table}_status_next_query_at", ["status", "next_query_at"], unique=False)
