"""PostgreSQL driver details for the service's engine (see :mod:`minipay.server.db`).

**A pool of driver connections for statements that run alone.** The busiest statements of the
service run one at a time in autocommit, outside any transaction: a key lookup (the API's
``GET /v1/payments/{id}``, a notification's duplicate check) and the one statement a unit of work
that writes at commit sends (``repositories._batch``). Through SQLAlchemy's pool each of them paid
for a checkout and a check-in (an ``AsyncConnection``, the pool's events, two greenlet hand-offs):
measured on one process, ~105 µs of CPU a lookup against ~75 µs on asyncpg's own pool, and under
load on two processes a bare app doing only the lookup ran 0.41x of a bare GET on asyncpg's pool
against 0.25x through SQLAlchemy's. :class:`StatementPool` is that asyncpg pool, beside the
engine's: connections made with the engine's own connect arguments and JSON codecs (so a row reads
exactly as through SQLAlchemy), checked in without asyncpg's reset query (``RESET ALL``, ``UNLISTEN
*``, ...: a round trip per statement). Nothing run on these connections changes session state; a
connection that is somehow still in a transaction is rolled back at check-in all the same (asyncpg
does that before a pool's own reset).

Transactions (``SELECT ... FOR UPDATE``, the worker's queue, reconciliation) stay on SQLAlchemy's
pool. When a statement finds its session gone (the database restarted), both pools renew every
connection they hold (one failure, not one per pooled connection), as SQLAlchemy does on a
disconnect.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, Dialect

__all__ = ["StatementPool"]


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool's check-in: nothing to reset (see the module docstring)."""


class StatementPool:
    """asyncpg's pool for statements that run alone in autocommit, opened on first use.

    Its connections belong to the event loop that made them: used from another loop the pool
    refuses (as SQLAlchemy's own pool fails there) until it is closed (``engine.dispose()``);
    then the next statement opens it again on the loop it runs on.
    """

    def __init__(self, url: URL, dialect: Dialect, *, max_size: int, acquire_timeout: float) -> None:
        _, params = dialect.create_connect_args(url)
        # Options of SQLAlchemy's asyncpg adapter, not of asyncpg.connect.
        for name in ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"):
            params.pop(name, None)
        self._connect = params
        self._dialect = dialect
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    def __repr__(self) -> str:  # the connect arguments hold the password: never shown
        return f"<StatementPool max_size={self.max_size} open={self._pool is not None}>"

    async def pool(self) -> asyncpg.Pool:
        """The open pool (opened on first use, on the running event loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._pool is not None:
                # Its connections are bound to the loop they were made on, as SQLAlchemy's are.
                raise RuntimeError(
                    "the engine's connections belong to another event loop: dispose of the engine on "
                    "its loop (await engine.dispose()) before using it on another"
                )
            self._loop, self._opening = loop, asyncio.Lock()
        elif self._pool is not None:
            return self._pool
        assert self._opening is not None
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    min_size=0,
                    max_size=self.max_size,
                    init=self._init,
                    reset=_keep_session,
                    **self._connect,
                )
        return self._pool

    async def _init(self, connection: asyncpg.Connection) -> None:
        # The codecs SQLAlchemy's dialect sets up on each of its connections (JSON decoded with the
        # engine's json_deserializer), so a row reads the same on either pool.
        adapted = SimpleNamespace(_connection=connection)
        await self._dialect.setup_asyncpg_json_codec(adapted)  # type: ignore[attr-defined]
        await self._dialect.setup_asyncpg_jsonb_codec(adapted)  # type: ignore[attr-defined]

    async def expire(self) -> None:
        """Replace every connection at its next use (the database lost them all)."""
        if self._pool is not None:
            await self._pool.expire_connections()

    async def close(self) -> None:
        """Close every connection (on the pool's own event loop; from another one they are
        dropped, as the loop they belong to cannot run their goodbyes)."""
        pool, loop, self._pool, self._loop = self._pool, self._loop, None, None
        if pool is None:
            return
        if loop is asyncio.get_running_loop():
            await pool.close()
        elif loop is not None and not loop.is_closed() and not loop.is_running():
            pool.terminate()

    def stats(self) -> dict[str, Any]:
        """Connections open and idle (0 and 0 before the first statement)."""
        pool = self._pool
        if pool is None:
            return {"size": 0, "idle": 0, "max_size": self.max_size}
        return {"size": pool.get_size(), "idle": pool.get_idle_size(), "max_size": self.max_size}
