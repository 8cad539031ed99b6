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
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from minipay.server.repositories._driver import DriverStatement

if TYPE_CHECKING:
    from minipay.server.db import PgEngine

__all__ = ["PgStatement"]


class PgStatement(DriverStatement):
    """A Core statement, compiled once for the connection's dialect, run on an asyncpg connection."""

    async def fetchrow(self, conn: AsyncConnection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The statement's first row (column name -> value, as SQLAlchemy would give it), or None,
        on the asyncpg connection of ``conn`` (checked out of SQLAlchemy's pool)."""
        compiled = self.compiled(conn.dialect)
        args = compiled.arguments(params)
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            record = await driver.fetchrow(compiled.sql, *args)
        except asyncpg.DataError as error:
            # An argument the driver refused before sending anything: the connection is fine.
            raise exc.DBAPIError(compiled.sql, dict(params), error, hide_parameters=True) from error
        except asyncpg.PostgresError as error:
            if _session_lost(error) or driver.is_closed():
                await _lost(conn, raw, error)
            raise _translate(compiled.sql, params, error) from error
        except Exception as error:
            # Not the server's answer (the connection is gone, or asyncpg lost track of it: an
            # InterfaceError, an InternalClientError, an OSError): never hand it out again.
            if driver.is_closed():
                await _lost(conn, raw, error)
            else:
                await conn.invalidate(error)
            raise exc.OperationalError(compiled.sql, dict(params), error, hide_parameters=True) from error
        return None if record is None else compiled.row(record)

    async def fetchrow_alone(self, engine: PgEngine, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The same, run alone in autocommit on a connection of the engine's statement pool
        (``db.PgEngine.statements``): failures are raised as :meth:`fetchrow` raises them, a
        connection that could not be made or waited for as SQLAlchemy's pool raises that."""
        compiled = self.compiled(engine.dialect)
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
            record = await driver.fetchrow(compiled.sql, *args)
            discard = False
        except asyncpg.DataError as error:
            # An argument the driver refused before sending anything: the connection is fine.
            discard = False
            raise exc.DBAPIError(compiled.sql, dict(params), error, hide_parameters=True) from error
        except asyncpg.PostgresError as error:
            # The server's answer (a unique key, a bad value): the connection serves on, unless the
            # answer is that the session is gone.
            if _session_lost(error) or driver.is_closed():
                engine.connections_lost()
            else:
                discard = False
            raise _translate(compiled.sql, params, error) from error
        except Exception as error:
            # Not the server's answer (the connection is gone, or asyncpg lost track of it: an
            # InterfaceError, an InternalClientError, an OSError): never handed out again.
            if driver.is_closed():
                engine.connections_lost()
            raise exc.OperationalError(compiled.sql, dict(params), error, hide_parameters=True) from error
        finally:
            # Cancelled under its statement too: closed, never handed out half-way through one.
            statements.release(driver, discard=discard)
        return None if record is None else compiled.row(record)


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


def _translate(sql: str, params: Mapping[str, Any], error: asyncpg.PostgresError) -> exc.DBAPIError:
    # As SQLAlchemy would raise it; the parameters never in the message (rows carry secrets).
    args = (sql, dict(params), error)
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return exc.IntegrityError(*args, hide_parameters=True)
    if str(getattr(error, "sqlstate", "")).startswith(_SESSION_LOST):
        return exc.OperationalError(*args, hide_parameters=True)
    return exc.DBAPIError(*args, hide_parameters=True)
