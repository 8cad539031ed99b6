"""PostgreSQL driver details for the service's engine (see :mod:`minipay.server.db`).

**A pool of driver connections for statements that run alone.** The busiest statements of the
service run one at a time in autocommit, outside any transaction: a key lookup (the API's
``GET /v1/payments/{id}``, a notification's duplicate check) and the one statement a unit of work
that writes at commit sends (``repositories._batch``). Such a statement needs a connection for one
round trip and leaves nothing behind on it, so the pool that lends it can be very simple, and it
has to be cheap: measured in one process on uvloop, 16 concurrent lookups of a payment by id cost
~107 µs of CPU each through the service's unit of work on SQLAlchemy's pool, ~81 µs on asyncpg's
own pool (check-in without its reset query; most of the cost is the pool: a task to shield each
check-in, a timer per idle connection, a wrapper object per checkout), ~70 µs on asyncpg's pool
tuned further, and ~28 µs on a list of idle connections. :class:`StatementPool` is that list.

- Connections are made on demand (up to ``max_size``) with the engine's own connect arguments and
  the JSON codecs SQLAlchemy's dialect sets up, so a row reads exactly as through SQLAlchemy.
- Checkout takes the most recently used idle connection; a caller finding none (and the pool full)
  waits, first come first served, up to ``acquire_timeout`` seconds (:class:`TimeoutError`).
- Each new connection runs the warm-up steps registered with :func:`warm_up` before it is first
  lent: the first statement a PostgreSQL backend plans loads the table's catalogue entries and
  statistics, which under load took tens of milliseconds (seen: a 59 ms bind), on a request's path
  otherwise. :meth:`StatementPool.fill` opens the whole pool at once (the service does at start-up).
- Check-in sends nothing. A connection is closed instead of kept when it was closed under its
  statement, when its statement failed other than by the server's answer or was cancelled, when it
  is somehow in a transaction, or when the pool was told the database lost its sessions
  (:meth:`StatementPool.expire`). A connection idle longer than ``max_idle`` seconds is closed.

Transactions (``SELECT ... FOR UPDATE``, the worker's queue, reconciliation) stay on SQLAlchemy's
pool. When a statement finds its session gone (the database restarted), both pools renew every
connection they hold (``db.PgEngine.connections_lost``), as SQLAlchemy does on a disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, Dialect

__all__ = ["StatementPool", "warm_up"]

#: Seconds a connection may stay idle in the pool before it is closed.
MAX_IDLE = 300.0

#: A step run on each new connection before it is lent: (connection, dialect) -> awaitable.
WarmUp = Callable[[asyncpg.Connection, Dialect], Awaitable[object]]

_WARM_UPS: list[WarmUp] = []


def warm_up(step: WarmUp) -> None:
    """Run ``step(connection, dialect)`` on every connection a statement pool opens from now on,
    before it is first lent: a statement the busy paths run, with values that match no row, so that
    the backend has planned it (and loaded what planning needs) before a request waits on it. A step
    the server refuses (its table not made yet, say) is skipped; the connection is lent all the same."""
    _WARM_UPS.append(step)


class StatementPool:
    """Connections for statements that run alone in autocommit: :meth:`acquire`, then
    :meth:`release` (see the module docstring).

    Its connections belong to the event loop that made them: used from another loop the pool
    refuses (as SQLAlchemy's own pool fails there) until it is closed (``engine.dispose()``);
    then the next statement opens it again on the loop it runs on.
    """

    def __init__(
        self, url: URL, dialect: Dialect, *, max_size: int, acquire_timeout: float, max_idle: float = MAX_IDLE
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        _, params = dialect.create_connect_args(url)
        # Options of SQLAlchemy's asyncpg adapter, not of asyncpg.connect.
        for name in ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"):
            params.pop(name, None)
        self._connect_args = params
        self._dialect = dialect
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.max_idle = max_idle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: deque[tuple[asyncpg.Connection, float]] = deque()  # (connection, idle since)
        self._in_use: set[asyncpg.Connection] = set()
        self._stale: set[asyncpg.Connection] = set()  # in use when the pool was expired
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._size = 0  # connections open or being opened

    def __repr__(self) -> str:  # the connect arguments hold the password: never shown
        return f"<StatementPool size={self._size} max_size={self.max_size}>"

    def stats(self) -> dict[str, int]:
        """Connections open (or being opened), idle, in use; callers waiting for one."""
        return {
            "size": self._size,
            "idle": len(self._idle),
            "in_use": len(self._in_use),
            "waiting": sum(1 for waiter in self._waiters if not waiter.done()),
            "max_size": self.max_size,
        }

    async def acquire(self) -> asyncpg.Connection:
        """A connection for one statement; give it back with :meth:`release`.

        Raises ``TimeoutError`` when none is free within ``acquire_timeout`` seconds, and what
        ``asyncpg.connect`` raises when a new one cannot be made."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._adopt(loop)
        idle = self._idle
        while idle:
            connection, since = idle.pop()
            if connection.is_closed() or time.monotonic() - since > self.max_idle:
                self._drop(connection)
                continue
            self._in_use.add(connection)
            return connection
        if self._size < self.max_size:
            return await self._open()
        waiter: asyncio.Future[asyncpg.Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.acquire_timeout):
                handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection (or a free place) just as the wait ended: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._size -= 1
                    self._hand_on_place()
                else:
                    self.release(handed)
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        if handed is None:  # a place freed by a closed connection: open one in it
            self._size -= 1
            return await self._open()
        return handed  # in use since release() handed it over

    def release(self, connection: asyncpg.Connection, *, discard: bool = False) -> None:
        """Give back a connection from :meth:`acquire`; ``discard`` closes it instead (its
        statement failed in a way that leaves its state unknown, or was cancelled)."""
        if discard or connection in self._stale or connection.is_closed() or connection.is_in_transaction():
            self._in_use.discard(connection)
            self._stale.discard(connection)
            self._drop(connection)
            return
        if self._loop is None:  # closed meanwhile
            self._in_use.discard(connection)
            self._drop(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                # Still in use (by the waiter, once it runs): an expire() or close() meanwhile
                # marks it stale like any other connection out.
                waiter.set_result(connection)
                return
        self._in_use.discard(connection)
        now = time.monotonic()
        idle = self._idle
        idle.append((connection, now))
        while idle and now - idle[0][1] > self.max_idle:  # the least recently used first
            self._drop(idle.popleft()[0])

    async def fill(self) -> int:
        """Open connections (warmed up) until the pool holds ``max_size``, all at once, and keep them
        idle; how many were opened. Raises what the first connection that could not be made raised,
        after keeping the ones that could."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._adopt(loop)
        wanted = self.max_size - self._size
        if wanted <= 0:
            return 0
        opened = await asyncio.gather(*(self._open() for _ in range(wanted)), return_exceptions=True)
        failures = [result for result in opened if isinstance(result, BaseException)]
        for result in opened:
            if not isinstance(result, BaseException):
                self.release(result)
        if failures:
            raise failures[0]
        return wanted

    def expire(self) -> None:
        """The database lost its sessions: close the idle connections, and the ones in use when
        they come back."""
        while self._idle:
            self._drop(self._idle.popleft()[0])
        self._stale |= self._in_use

    async def close(self) -> None:
        """Close the idle connections now and the ones in use when they come back; callers
        waiting for a connection get an ``asyncpg.InterfaceError``."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the statement pool was closed"))
        self._waiters.clear()
        idle = [connection for connection, _ in self._idle]
        self._idle.clear()
        self._size -= len(idle)
        self._stale |= self._in_use
        if loop is asyncio.get_running_loop():
            await asyncio.gather(*(connection.close(timeout=5) for connection in idle), return_exceptions=True)
        elif not loop.is_closed() and not loop.is_running():
            for connection in idle:
                connection.terminate()
        # Otherwise their loop is running elsewhere or is gone: nothing here can close them.

    # -- inside ---------------------------------------------------------------------------------

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            # Its connections are bound to the loop they were made on, as SQLAlchemy's are.
            raise RuntimeError(
                "the engine's connections belong to another event loop: dispose of the engine on "
                "its loop (await engine.dispose()) before using it on another"
            )
        # Closed (or never opened): open on this loop. Connections still out from before the close
        # are stale and closed when they come back, never lent again.
        self._loop = loop

    async def _open(self) -> asyncpg.Connection:
        self._size += 1
        try:
            connection = await asyncpg.connect(**self._connect_args)
        except BaseException as error:
            self._size -= 1
            self._hand_on_place()
            if isinstance(error, TimeoutError):  # asyncpg's connect timeout, not a wait for the pool
                raise ConnectionError("timed out connecting to the database") from error
            raise
        try:
            await self._init(connection)
        except BaseException:
            self._drop(connection)
            raise
        self._in_use.add(connection)
        return connection

    async def _init(self, connection: asyncpg.Connection) -> None:
        # The codecs SQLAlchemy's dialect sets up on each of its connections (JSON decoded with the
        # engine's json_deserializer), so a row reads the same on either pool.
        adapted = SimpleNamespace(_connection=connection)
        await self._dialect.setup_asyncpg_json_codec(adapted)  # type: ignore[attr-defined]
        await self._dialect.setup_asyncpg_jsonb_codec(adapted)  # type: ignore[attr-defined]
        for step in _WARM_UPS:
            # Refused (no such table yet): planned at its first real use instead.
            with contextlib.suppress(asyncpg.PostgresError):
                await step(connection, self._dialect)

    def _drop(self, connection: asyncpg.Connection) -> None:
        """Close a connection of the pool and free its place (for a waiter, if any)."""
        if not connection.is_closed():
            connection.terminate()
        self._size -= 1
        self._hand_on_place()

    def _hand_on_place(self) -> None:
        # A waiter takes the freed place (None: "open one") and counts it as its own.
        while self._waiters and self._loop is not None:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return
