"""Statements run on the asyncpg connection itself (PostgreSQL), for the busiest paths.

In a py-spy profile of first-time notifications, running their two statements through SQLAlchemy's
async engine was ~40% of the process. :class:`PgStatement` is a
:class:`~minipay.server.repositories._driver.DriverStatement` run with ``asyncpg.Connection.fetchrow``:
on the connection SQLAlchemy checked out (:meth:`PgStatement.fetchrow`), or alone on a connection of
the engine's statement pool (:meth:`PgStatement.fetchrow_alone`, ``minipay.server._postgres``).

Only for statements that need no transaction of SQLAlchemy's: a unit of work in autocommit (a
read-only unit of work on PostgreSQL, a key lookup, or the one statement of a batch sent at commit,
``repositories._batch``); inside a transaction begun by SQLAlchemy the adapter sends ``BEGIN`` only
with its own first statement. Errors are raised as SQLAlchemy's (``IntegrityError``,
``OperationalError`` with the connection invalidated, ``DBAPIError``), with the asyncpg error as
``orig`` (its ``sqlstate`` is what ``uow.retrying`` looks at).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minipay.server import db
from minipay.server._postgres import warm_up
from minipay.server.repositories._driver import Compiled, DriverStatement

__all__ = ["PgStatement"]


class PgStatement(DriverStatement):
    """A Core statement, compiled once for the connection's dialect, run on an asyncpg connection."""

    def warm_up(self, params: Mapping[str, Any]) -> None:
        """Run this statement with ``params`` (values that match no row) on each new connection of
        a statement pool before it is lent (``_postgres.warm_up``): planned there, not on a request's
        path. Only for a statement that changes nothing."""
        fixed = dict(params)

        async def step(connection: asyncpg.Connection, dialect: Dialect) -> None:
            compiled = self.compiled(dialect)
            await connection.fetch(compiled.sql, *compiled.arguments(fixed))

        warm_up(step)

    async def fetchrow(self, conn: AsyncConnection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The statement's first row (column name -> value, as SQLAlchemy would give it), or None,
        on the asyncpg connection of ``conn`` (checked out of SQLAlchemy's pool)."""
        compiled = self.compiled(conn.dialect)
        args = compiled.arguments(params)
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            record = await driver.fetchrow(compiled.sql, *args)
        except Exception as error:
            raised, fate = _failure(compiled.sql, params, error, closed=driver.is_closed())
            if fate == _LOST:
                await _lost(conn, raw, error)
            elif fate == _BROKEN:
                await conn.invalidate(error)  # never handed out again
            raise raised from error
        return None if record is None else compiled.row(record)

    async def fetchrow_alone(self, engine: AsyncEngine, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The same, run alone in autocommit: on a connection of the engine's statement pool
        (``db.PgEngine.statements``), or, for an engine made elsewhere, on one of SQLAlchemy's pool
        taken for this statement. Failures are raised as :meth:`fetchrow` raises them, a connection
        that could not be made or waited for as SQLAlchemy's pool raises that."""
        if not isinstance(engine, db.PgEngine):
            async with engine.connect() as conn:
                # Nothing else runs on this connection (a statement of SQLAlchemy's would begin a
                # transaction that closing the connection rolls back).
                return await self.fetchrow(conn, params)
        compiled = self.compiled(engine.dialect)
        records = await self._alone(engine, compiled, params, many=False)
        return None if not records else compiled.row(records[0])

    async def fetch_alone(self, engine: db.PgEngine, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row of the statement, run alone in autocommit on a connection of the engine's
        statement pool; failures as :meth:`fetchrow_alone` raises them."""
        compiled = self.compiled(engine.dialect)
        return [compiled.row(record) for record in await self._alone(engine, compiled, params, many=True)]

    async def _alone(
        self, engine: db.PgEngine, compiled: Compiled, params: Mapping[str, Any], *, many: bool
    ) -> list[Any]:
        args = compiled.arguments(params)
        statements = engine.statements
        try:
            driver: asyncpg.Connection = await statements.acquire()
        except TimeoutError as error:
            raise exc.TimeoutError(
                f"no connection of the statement pool (size {statements.max_size}) within "
                f"{statements.acquire_timeout:g} s"
            ) from error
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # Could not connect (refused, the server starting or shutting down, a bad password).
            raise exc.OperationalError("connect", None, error, hide_parameters=True) from error
        discard = True  # unless the statement ran, or the server answered it
        try:
            if many:
                records: list[Any] = await driver.fetch(compiled.sql, *args)
            else:
                record = await driver.fetchrow(compiled.sql, *args)
                records = [] if record is None else [record]
            discard = False
        except Exception as error:
            raised, fate = _failure(compiled.sql, params, error, closed=driver.is_closed())
            discard = fate != _KEPT
            if fate == _LOST:
                engine.connections_lost()
            raise raised from error
        finally:
            # Cancelled under its statement too: closed, never handed out half-way through one.
            statements.release(driver, discard=discard)
        return records


def _session_lost(error: asyncpg.PostgresError) -> bool:
    return str(getattr(error, "sqlstate", "")).startswith(_SESSION_LOST)


#: SQLSTATEs after which the session is gone: connection exceptions, the server shutting it down or
#: ending an idle session, a transaction it can no longer use.
_SESSION_LOST = ("08", "57P01", "57P02", "57P03", "57P05", "25P03")


async def _lost(conn: AsyncConnection, raw: Any, error: BaseException) -> None:
    """The connection is gone: as SQLAlchemy does on a disconnect, every connection the pool holds
    is made to reconnect at its next use (after a database restart they are all gone), and this one
    is invalidated now."""
    conn.sync_engine.pool._invalidate(raw, error)  # SQLAlchemy's own step on a disconnect
    await conn.invalidate(error)


#: What a failed statement left of its connection (:func:`_failure`).
_KEPT, _LOST, _BROKEN = "kept", "lost", "broken"


def _failure(sql: str, params: Mapping[str, Any], error: Exception, *, closed: bool) -> tuple[exc.DBAPIError, str]:
    """A statement's failure as SQLAlchemy would raise it (the parameters never in the message:
    rows carry secrets), and what became of its connection: kept (an argument the driver refused
    before sending anything, or the server's answer: it serves on), lost (the session is gone, and
    after a database restart every other one too), broken (not the server's answer - an
    InterfaceError, an InternalClientError, an OSError - on a connection still open: asyncpg lost
    track of it, so it is never handed out again)."""
    args = (sql, dict(params), error)
    if isinstance(error, asyncpg.DataError):
        return exc.DBAPIError(*args, hide_parameters=True), _KEPT
    if isinstance(error, asyncpg.PostgresError):
        lost = _session_lost(error)
        fate = _LOST if lost or closed else _KEPT
        if isinstance(error, asyncpg.IntegrityConstraintViolationError):
            return exc.IntegrityError(*args, hide_parameters=True), fate
        if lost:
            return exc.OperationalError(*args, hide_parameters=True), fate
        return exc.DBAPIError(*args, hide_parameters=True), fate
    return exc.OperationalError(*args, hide_parameters=True), _LOST if closed else _BROKEN
