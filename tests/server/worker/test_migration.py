"""The worker's Alembic revision creates exactly the tables ``minipay.server.worker.metadata`` describes."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from minipay.server.db import create_engine
from minipay.server.migrations import alembic_config, current_revision, upgrade
from minipay.server.worker import metadata
from tests.server.worker.conftest import PG_URL, require_postgres

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
    require_postgres()
    schema = f"worker_mig_{secrets.token_hex(4)}"
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        await upgrade(engine)
        assert await current_revision(engine) == single_head()
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()
