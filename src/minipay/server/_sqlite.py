"""SQLite driver details for the service's engine (see :mod:`minipay.server.db`).

**Statements run on the event loop.** aiosqlite runs every call on a thread of its own, and through
SQLAlchemy's adapter one statement is four hand-offs between the event loop and that thread (open
cursor, execute, fetch, close); on a busy machine each costs more than the statement. The service's
statements are small, read a local file and, in WAL mode, neither wait for readers nor writers (a
reader reads its snapshot; this process has one writer, ``db.SQLiteEngine``) - so
:class:`InLoopDBAPI` runs them directly on the loop. The two things that can wait are kept off it:

- ``BEGIN IMMEDIATE`` is first tried without waiting; when another *process* holds the write lock it
  is retried in a thread, which waits up to the busy timeout while the loop serves other requests;
- ``fsync``: the writer runs with ``PRAGMA synchronous=NORMAL`` (a WAL commit is written, not
  synced) and :class:`WalSync` syncs the WAL in a thread - see below. Checkpoints (they sync too)
  run in that thread as well (``PRAGMA wal_checkpoint(PASSIVE)``), so the writer's automatic
  checkpoint seldom has anything left to do.

**Group commit.** A unit of work that committed gives the writer connection back, then waits for an
``fsync`` of the WAL that began after its commit (:meth:`WalSync.sync`). Commits that land while
one ``fsync`` runs share the next one: each unit of work is on disk before its caller hears of it,
as with ``synchronous=FULL``, at a fraction of one ``fsync`` each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from typing import Any

import aiosqlite
from sqlalchemy.util.concurrency import await_

__all__ = ["InLoopDBAPI", "LookupConnection", "WalSync", "begin_immediate"]


async def _done() -> None:
    return None


class _Cursor(sqlite3.Cursor):
    async def _async_soft_close(self) -> None:  # SQLAlchemy's async result handling asks for it
        return None

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        # SQLAlchemy's AsyncConnection.execute insists that the driver awaited something: a
        # coroutine that is already done costs two greenlet switches, not a trip round the loop.
        await_(_done())
        if sql == "BEGIN IMMEDIATE":
            connection = self.connection
            assert isinstance(connection, _Connection)
            connection.begin_immediate()
            return self
        super().execute(sql, parameters)
        return self

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _Cursor:
        await_(_done())
        super().executemany(sql, seq_of_parameters)
        return self


class _Connection(sqlite3.Connection):
    busy_ms = 5000

    def begin_immediate(self) -> None:
        """``BEGIN IMMEDIATE``: at once when the write lock is free, else waited for in a thread."""
        try:
            self.execute("PRAGMA busy_timeout=0")
            try:
                self.execute("BEGIN IMMEDIATE")
                return
            finally:
                self.execute(f"PRAGMA busy_timeout={self.busy_ms}")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        # Another process writes: wait for it (up to the busy timeout) in a thread, not on the loop.
        await_(asyncio.to_thread(self.execute, "BEGIN IMMEDIATE"))

    def cursor(self, factory: Any = None, server_side: bool = False) -> Any:
        return super().cursor(factory or _Cursor)

    @property
    def _connection(self) -> _Connection:  # what SQLAlchemy's aiosqlite dialect calls the driver connection
        return self


class InLoopDBAPI:
    """A DBAPI module for SQLAlchemy's ``sqlite+aiosqlite`` dialect (``create_async_engine(module=...)``)
    whose connections are :mod:`sqlite3` connections used on the event loop (see the module docstring)."""

    paramstyle = "qmark"
    has_stop = False  # no aiosqlite thread to stop: the dialect closes connections normally
    aiosqlite = aiosqlite  # the dialect reports this version
    sqlite = sqlite3
    sqlite_version = sqlite3.sqlite_version
    sqlite_version_info = sqlite3.sqlite_version_info
    Binary = sqlite3.Binary
    PARSE_COLNAMES = sqlite3.PARSE_COLNAMES
    PARSE_DECLTYPES = sqlite3.PARSE_DECLTYPES
    Error = sqlite3.Error
    DatabaseError = sqlite3.DatabaseError
    IntegrityError = sqlite3.IntegrityError
    NotSupportedError = sqlite3.NotSupportedError
    OperationalError = sqlite3.OperationalError
    ProgrammingError = sqlite3.ProgrammingError
    InterfaceError = sqlite3.InterfaceError
    InternalError = sqlite3.InternalError
    DataError = sqlite3.DataError
    Warning = sqlite3.Warning

    def connect(self, database: str, **kw: Any) -> _Connection:
        kw.pop("async_creator_fn", None)
        timeout = float(kw.pop("timeout", 5.0))
        kw["check_same_thread"] = False  # BEGIN IMMEDIATE may wait in a thread (one user at a time)
        conn = sqlite3.connect(database, timeout=timeout, factory=_Connection, **kw)
        assert isinstance(conn, _Connection)
        conn.busy_ms = int(timeout * 1000)
        return conn


class WalSync:
    """Group commit: ``await sync()`` returns once an ``fsync`` of the WAL that began after the call is done."""

    CHECKPOINT_EVERY = 1.0  # seconds, at most once per this, after a sync

    def __init__(self, database_path: str) -> None:
        self._path = database_path
        self._wal = database_path + "-wal"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: asyncio.Future[None] | None = None  # the next round, not started yet
        self._task: asyncio.Task[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._last_checkpoint = 0.0

    async def sync(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): start afresh
            self._loop, self._waiting, self._task = loop, None, None
        if self._waiting is None:
            self._waiting = loop.create_future()
        round_ = self._waiting
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._rounds())
        await asyncio.shield(round_)

    async def _rounds(self) -> None:
        while self._waiting is not None:
            round_, self._waiting = self._waiting, None  # everyone in it committed before this fsync starts
            try:
                await asyncio.to_thread(self._fsync)
            except Exception as exc:
                round_.set_exception(exc)
            else:
                round_.set_result(None)

    def _fsync(self) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:  # no WAL: every commit is checkpointed (and synced) already
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        now = time.monotonic()
        if now - self._last_checkpoint >= self.CHECKPOINT_EVERY:
            self._last_checkpoint = now
            self._checkpoint()

    def _checkpoint(self) -> None:
        # Copy committed WAL frames into the database without waiting for anyone; SQLite restarts
        # the WAL from the beginning once every frame is in the database.
        with contextlib.suppress(sqlite3.Error):
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None


class LookupConnection:
    """One read-only :mod:`sqlite3` connection for the process's key lookups (a payment by id, by
    ``out_trade_no``): opened at first use, then used synchronously on the event loop by every
    lookup. A lookup is one statement executed and fetched with no ``await`` in between, so
    lookups never interleave on it; in WAL mode a read never waits for the writer, and with
    ``query_only`` the connection cannot write. A unit of work of lookups needs no pooled
    connection at all: that checkout and check-in (two greenlet hand-offs and the pool's
    bookkeeping) cost more than the lookup."""

    def __init__(self, database_path: str, *, timeout: float) -> None:
        self._path = database_path
        self._timeout = timeout
        self._connection: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA query_only=ON")
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def begin_immediate(connection: Any) -> bool:
    """Run ``BEGIN IMMEDIATE`` on the driver connection under SQLAlchemy's ``connection`` directly
    (not through ``exec_driver_sql``: a statement's machinery, at every write transaction); False
    when it is not one of :class:`InLoopDBAPI`'s."""
    driver = connection.connection.driver_connection
    if not isinstance(driver, _Connection):
        return False
    driver.begin_immediate()
    return True
