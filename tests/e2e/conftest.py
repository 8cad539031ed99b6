"""Fixtures of the end-to-end tier: the whole system in one process (see ``stack.py``), on SQLite and
on PostgreSQL (each test in a schema of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Stack, running_stack
from tests.server.worker.conftest import PG_URL, postgres_schema


@asynccontextmanager
async def open_stack(database: str, tmp_path: Path, **options: Any) -> AsyncIterator[Stack]:
    """The whole system on ``database`` (``sqlite`` or ``postgres``: a schema of its own);
    ``options`` go to ``running_stack`` (e.g. ``sandbox_config``)."""
    if database == "sqlite":
        async with running_stack(f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}", **options) as s:
            yield s
        return
    async with postgres_schema("e2e") as engine, running_stack(PG_URL, engine=engine, **options) as s:
        yield s


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(request.param, tmp_path) as s:
        yield s
