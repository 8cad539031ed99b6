"""The service's Alembic revisions build exactly the schema ``minipay.server.db.metadata`` describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from minipay.server.db import create_engine, metadata
from minipay.server.migrations import upgrade

pytestmark = pytest.mark.anyio


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    ours = set(metadata.tables)
    out = []
    for diff in compare_metadata(context, metadata):
        item = diff[0] if isinstance(diff, list) else diff
        obj = item[1]
        table = getattr(getattr(obj, "table", None), "name", None) or getattr(obj, "name", None)
        if obj is None or isinstance(obj, str):  # (kind, schema, table_name, ...) for columns
            table = item[2]
        if table in ours:
            out.append(diff)
    return out


async def test_the_migrations_match_the_service_tables(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
