"""out_trade_no unique per sub-merchant

Revision ID: 0003_out_trade_no_per_sub
Revises: 0002_worker
Create Date: 2026-12-04 23:00:00

A caller-supplied ``out_trade_no`` was unique per institution (``mch_id``): one sub-merchant's key got
409 for another sub-merchant's number, and so learnt it. WeChat scopes it to the sub-merchant in
institution mode; so does the constraint now. Existing rows satisfy the new, weaker constraint.
"""

from __future__ import annotations

from alembic import op

revision = "0003_out_trade_no_per_sub"
down_revision = "0002_worker"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_payments_mch_id_out_trade_no", type_="unique")
        batch_op.create_unique_constraint(
            "uq_payments_mch_id_sub_mch_id_out_trade_no", ["mch_id", "sub_mch_id", "out_trade_no"]
        )


def downgrade() -> None:
    # Fails if two sub-merchants share an out_trade_no by then: that data cannot go back.
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_payments_mch_id_sub_mch_id_out_trade_no", type_="unique")
        batch_op.create_unique_constraint("uq_payments_mch_id_out_trade_no", ["mch_id", "out_trade_no"])
