"""The SQLite engine pools its connections but still has exactly one writer per process.

Writers (units of work, ``engine.begin()`` as the job queue uses it) queue for the single writer
connection and run one after the other; read-only units of work use the reader pool and neither
wait for the writer nor can write.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.server import db
from minipay.server.uow import UnitOfWork

pytestmark = pytest.mark.anyio


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE marks (who TEXT NOT NULL, what TEXT NOT NULL)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_concurrent_writers_never_interleave(engine: AsyncEngine) -> None:
    spans: dict[str, tuple[float, float]] = {}

    async def uow_writer(name: str) -> None:
        async with UnitOfWork(engine) as uow:
            start = time.monotonic()
            await uow.conn.execute(text("INSERT INTO marks VALUES (:w, 'start')"), {"w": name})
            await asyncio.sleep(0.05)  # other writers get every chance to run now
            await uow.conn.execute(text("INSERT INTO marks VALUES (:w, 'end')"), {"w": name})
            await uow.commit()
            spans[name] = (start, time.monotonic())

    async def queue_style_writer(name: str) -> None:
        async with engine.begin() as conn:
            start = time.monotonic()
            await conn.execute(text("INSERT INTO marks VALUES (:w, 'start')"), {"w": name})
            await asyncio.sleep(0.05)
            await conn.execute(text("INSERT INTO marks VALUES (:w, 'end')"), {"w": name})
            spans[name] = (start, time.monotonic())  # it commits at the end of the block, still holding the writer

    await asyncio.gather(uow_writer("a"), uow_writer("b"), queue_style_writer("c"), uow_writer("d"))

    ordered = sorted(spans.values())
    for (_, end), (next_start, _) in itertools.pairwise(ordered):
        assert end <= next_start, "two write transactions overlapped"
    async with UnitOfWork(engine).reading() as uow:
        rows = (await uow.conn.execute(text("SELECT who, what FROM marks ORDER BY rowid"))).all()
    # In the table too: every writer's start is immediately followed by its own end.
    assert len(rows) == 8
    for first, second in zip(rows[0::2], rows[1::2], strict=True):
        assert first.who == second.who
        assert (first.what, second.what) == ("start", "end")


async def test_readers_do_not_wait_for_the_writer_and_cannot_write(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as writer:
        await writer.conn.execute(text("INSERT INTO marks VALUES ('w', 'uncommitted')"))
        # The writer holds the write lock; a read-only unit of work still answers at once,
        # with the last committed state.
        async with asyncio.timeout(2):
            async with UnitOfWork(engine).reading() as reader:
                count = (await reader.conn.execute(text("SELECT count(*) FROM marks"))).scalar_one()
        assert count == 0
        await writer.commit()
    async with UnitOfWork(engine).reading() as reader:
        assert (await reader.conn.execute(text("SELECT count(*) FROM marks"))).scalar_one() == 1
        with pytest.raises(OperationalError, match="readonly"):
            await reader.conn.execute(text("INSERT INTO marks VALUES ('r', 'x')"))
        with pytest.raises(RuntimeError):
            await reader.commit()


async def test_the_writer_connection_is_reused(engine: AsyncEngine) -> None:
    seen = set()
    for _ in range(3):
        async with UnitOfWork(engine) as uow:
            raw = await uow.conn.get_raw_connection()
            seen.add(id(raw.driver_connection))
    assert len(seen) == 1
    assert engine.sync_engine.pool.size() == 1


async def test_commits_wait_for_a_shared_fsync_that_started_after_them(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(engine, db.SQLiteEngine)
    assert engine.wal is not None
    rounds: list[tuple[float, float]] = []
    real_fsync = engine.wal._fsync

    def slow_fsync() -> None:
        start = time.monotonic()
        real_fsync()
        time.sleep(0.05)
        rounds.append((start, time.monotonic()))

    monkeypatch.setattr(engine.wal, "_fsync", slow_fsync)
    committed: dict[str, float] = {}
    returned: dict[str, float] = {}

    async def writer(name: str) -> None:
        async with UnitOfWork(engine) as uow:
            await uow.conn.execute(text("INSERT INTO marks VALUES (:w, 'x')"), {"w": name})
            await uow.commit()
            committed[name] = time.monotonic()
        returned[name] = time.monotonic()

    names = [f"w{i}" for i in range(8)]
    await asyncio.gather(*(writer(n) for n in names))
    # Every writer returned only after an fsync that began after its commit had finished ...
    for name in names:
        assert any(committed[name] <= start and end <= returned[name] for start, end in rounds), name
    # ... and the eight commits shared far fewer fsyncs than eight.
    assert 1 <= len(rounds) <= 3


async def test_statements_run_on_the_loop_and_a_locked_database_is_awaited_off_it(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    import sqlite3
    import threading

    async with UnitOfWork(engine).reading() as uow:
        raw = await uow.conn.get_raw_connection()
        raw.driver_connection.create_function("thread_ident", 0, threading.get_ident)
        ident = (await uow.conn.execute(text("SELECT thread_ident()"))).scalar_one()
    assert ident == threading.get_ident()  # no hand-off to a thread of its own

    # Another process holds the write lock: our writer waits for it without blocking the loop.
    other = sqlite3.connect(tmp_path / "pool.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        done = asyncio.Event()

        async def write() -> None:
            async with UnitOfWork(engine) as uow:
                await uow.conn.execute(text("INSERT INTO marks VALUES ('late', 'x')"))
                await uow.commit()
            done.set()

        task = asyncio.create_task(write())
        ticks = 0
        for _ in range(10):
            started = time.monotonic()
            await asyncio.sleep(0.01)
            assert time.monotonic() - started < 0.5  # the loop keeps running
            ticks += 1
        assert not done.is_set()
    finally:
        other.execute("COMMIT")
        other.close()
    async with asyncio.timeout(10):
        await task
    assert ticks == 10
    async with UnitOfWork(engine).reading() as uow:
        assert (await uow.conn.execute(text("SELECT count(*) FROM marks"))).scalar_one() == 1
