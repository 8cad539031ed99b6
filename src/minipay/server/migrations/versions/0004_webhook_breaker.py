"""webhook endpoints: circuit breaker state, index by sub-merchant

Revision ID: 0004_webhook_breaker
Revises: 0003_out_trade_no_per_sub
Create Date: 2026-12-04 23:00:00

``failure_streak`` counts an endpoint's consecutive failed attempts; past a threshold the breaker
opens (``open_until``) and none of its deliveries is claimed until then, with a growing pause.
The index serves the per-key endpoint cap and the outbox's endpoint lookup.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import minipay.server.db

revision = "0004_webhook_breaker"
down_revision = "0003_out_trade_no_per_sub"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure_streak", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("open_until", minipay.server.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_webhook_endpoints_sub_mch_id", ["sub_mch_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_endpoints_sub_mch_id")
        batch_op.drop_column("open_until")
        batch_op.drop_column("failure_streak")
