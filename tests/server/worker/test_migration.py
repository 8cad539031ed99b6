"""The worker's Alembic revision creates exactly the tables ``minipay.server.worker.metadata`` describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from minipay.server.db import create_engine
from minipay.server.migrations import current_revision, upgrade
from minipay.server.worker import metadata

pytestmark = pytest.mark.anyio

WORKER_TABLES = {"worker_jobs", "reconciliation_runs", "reconciliation_discrepancies"}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs = compare_metadata(context, metadata)
    mine = []
    for diff in diffs:
        # Tables of the service show up as "remove_table" against the worker's metadata: not ours.
        if isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name not in WORKER_TABLES:
            continue
        mine.append(diff)
    return mine


async def test_the_worker_revision_matches_the_worker_tables(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await upgrade(engine)
        assert await current_revision(engine) == "0002_worker"
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
