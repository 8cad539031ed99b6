"""reconciliation_discrepancies: one row per refund and refund-job kind (a partial unique index)

Revision ID: 0006_refund_job_discrepancy_once
Revises: 0005_drop_query_columns
Create Date: 2026-12-06 03:00:00

The refund follow-up job records a discrepancy of a refund once per kind. It used to check for an
existing row and then insert, so two workers following the same refund at once (a job taken over
from a worker thought dead) could both insert. The unique index makes "once" the database's rule;
rows that repeated an earlier one are removed first (the earliest of each is kept).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_refund_job_discrepancy_once"
down_revision = "0005_drop_query_columns"
branch_labels = None
depends_on = None

# Written out, not imported: a revision describes the schema as it was when it was written.
_ROWS = sa.text("kind IN ('refund_status_mismatch', 'refund_missing_at_wechat')")
_REPEATS = sa.text(
    "DELETE FROM reconciliation_discrepancies"
    " WHERE kind IN ('refund_status_mismatch', 'refund_missing_at_wechat') AND id NOT IN ("
    "   SELECT MIN(id) FROM reconciliation_discrepancies"
    "   WHERE kind IN ('refund_status_mismatch', 'refund_missing_at_wechat')"
    "   GROUP BY kind, sub_mch_id, out_refund_no"
    " )"
)


def upgrade() -> None:
    op.execute(_REPEATS)
    op.create_index(
        "uq_reconciliation_discrepancies_refund_job",
        "reconciliation_discrepancies",
        ["kind", "sub_mch_id", "out_refund_no"],
        unique=True,
        sqlite_where=_ROWS,
        postgresql_where=_ROWS,
    )


def downgrade() -> None:
    op.drop_index("uq_reconciliation_discrepancies_refund_job", table_name="reconciliation_discrepancies")
