"""Fixtures of the end-to-end tier: the whole system in one process (see ``stack.py``), on SQLite and
on PostgreSQL (each test in a schema of its own)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.stack import Stack, running_stack
from tests.server.worker.conftest import PG_URL, require_postgres


@asynccontextmanager
async def open_stack(database: str, tmp_path: Path, **options: Any) -> AsyncIterator[Stack]:
    """The whole system on ``database`` (``sqlite`` or ``postgres``: a schema of its own);
    ``options`` go to ``running_stack`` (e.g. ``sandbox_config``)."""
    if database == "sqlite":
        async with running_stack(f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}", **options) as s:
            yield s
        return
    require_postgres()
    schema = f"e2e_{secrets.token_hex(4)}"
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        async with running_stack(PG_URL, engine=engine, **options) as s:
            yield s
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(request.param, tmp_path) as s:
        yield s
