"""The worker's Alembic revision creates exactly the tables ``minipay.server.worker.metadata`` describes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.server.db import create_engine
from minipay.server.migrations import alembic_config, current_revision, upgrade
from minipay.server.worker import metadata, reconciliation_discrepancies
from tests.server.worker.conftest import postgres_schema

pytestmark = pytest.mark.anyio

WORKER_TABLES = {"worker_jobs", "reconciliation_runs", "reconciliation_discrepancies"}


def single_head() -> str:
    """The one head of the revision history (Alembic refuses when the history has branched)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs = compare_metadata(context, metadata)
    # The service's tables and indexes show up as "remove_*" against the worker's metadata: not ours.
    return [diff for diff in diffs if _table_of(diff) in WORKER_TABLES]


def _table_of(diff: Any) -> str | None:
    if isinstance(diff, list):  # modify_* diffs come as a list of tuples
        diff = diff[0]
    obj = diff[1]
    if hasattr(obj, "table"):  # Index, Constraint
        return str(obj.table.name)
    if hasattr(obj, "name") and hasattr(obj, "columns"):  # Table
        return str(obj.name)
    # ("modify_type", schema, table_name, column_name, ...)
    return str(diff[2]) if len(diff) > 2 and isinstance(diff[2], str) else None


async def test_the_worker_revision_matches_the_worker_tables(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await upgrade(engine)
        assert await current_revision(engine) == single_head()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_worker_revision_matches_the_worker_tables_on_postgres() -> None:
    async with postgres_schema("worker_mig") as engine:
        await upgrade(engine)
        assert await current_revision(engine) == single_head()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []


async def _repeated_refund_discrepancies_are_removed_by_0006(engine: AsyncEngine) -> None:
    await upgrade(engine, "0005_drop_query_columns")
    d = reconciliation_discrepancies
    now = datetime(2026, 3, 2, 4, tzinfo=UTC)
    rows = [
        ("refund_missing_at_wechat", "R1"),  # kept (the first)
        ("refund_missing_at_wechat", "R1"),  # removed: it repeats the first
        ("refund_status_mismatch", "R1"),  # kept: another kind
        ("refund_missing_at_wechat", "R2"),  # kept: another refund
        ("missing_in_bill", None),  # a bill run's rows are not refund-job rows: both kept
        ("missing_in_bill", None),
    ]
    async with engine.begin() as conn:
        for kind, out_refund_no in rows:
            await conn.execute(
                insert(d).values(
                    bill_date=date(2026, 3, 2), sub_mch_id="1900000110", kind=kind,
                    out_refund_no=out_refund_no, detail="", created_at=now,
                )
            )  # fmt: skip
    await upgrade(engine)
    async with engine.connect() as conn:
        left = (await conn.execute(select(d.c.id, d.c.kind, d.c.out_refund_no).order_by(d.c.id))).all()
    assert [(row.id, row.kind, row.out_refund_no) for row in left] == [
        (1, "refund_missing_at_wechat", "R1"),
        (3, "refund_status_mismatch", "R1"),
        (4, "refund_missing_at_wechat", "R2"),
        (5, "missing_in_bill", None),
        (6, "missing_in_bill", None),
    ]
    async with engine.connect() as conn:
        with pytest.raises(IntegrityError):
            await conn.execute(
                insert(d).values(
                    bill_date=date(2026, 3, 2), sub_mch_id="1900000110", kind="refund_missing_at_wechat",
                    out_refund_no="R2", detail="", created_at=now,
                )
            )  # fmt: skip


async def test_0006_keeps_the_first_of_repeated_refund_job_discrepancies(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await _repeated_refund_discrepancies_are_removed_by_0006(engine)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_0006_keeps_the_first_of_repeated_refund_job_discrepancies_on_postgres() -> None:
    async with postgres_schema("worker_mig") as engine:
        await _repeated_refund_discrepancies_are_removed_by_0006(engine)
