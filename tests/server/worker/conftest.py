"""Fixtures of the worker tier: a manual clock and a database engine (SQLite, and PostgreSQL when up)."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from minipay.server import db
from minipay.server.uow import UnitOfWork, UnitOfWorkFactory
from minipay.server.worker import metadata

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_URL = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test"


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 3, 1, 4, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def units(engine: AsyncEngine) -> UnitOfWorkFactory:
    """Units of work over ``engine`` (what the queue and the reconciler take, like ``container.uow_factory``)."""
    return lambda: UnitOfWork(engine)


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip with a clear reason without PostgreSQL; fail instead under MINIPAY_REQUIRE_POSTGRES=1."""
    if postgres_reachable():
        return
    message = f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} (user postgres, database test)"
    if os.environ.get("MINIPAY_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " and MINIPAY_REQUIRE_POSTGRES=1")
    pytest.skip(message)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def _create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(db.metadata.create_all)
        await conn.run_sync(metadata.create_all)


async def _sqlite_engine(tmp_path: Path) -> AsyncEngine:
    # The service's engine factory: BEGIN IMMEDIATE, WAL, busy timeout (what production uses).
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}")
    await _create_tables(engine)
    return engine


@asynccontextmanager
async def postgres_schema(prefix: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty PostgreSQL schema of its own (``search_path``), dropped with everything in
    it afterwards: runs never see each other's rows, nor the service's tables."""
    require_postgres()
    schema = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_async_engine(PG_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        eng = await _sqlite_engine(tmp_path)
        yield eng
        await eng.dispose()
        return
    async with postgres_schema("worker_test") as eng:
        await _create_tables(eng)
        yield eng
