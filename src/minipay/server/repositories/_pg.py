"""Statements run on the asyncpg connection itself (PostgreSQL), for the busiest paths.

Through SQLAlchemy's async engine a statement costs far more of the service's CPU than the driver
does for it: the execution context, a bind processor per value, a result processor per column and
the greenlet hand-offs. In a py-spy profile of first-time notifications that was ~40% of the process
for the notification's two statements. :class:`PgStatement` keeps what SQLAlchemy is good at - the
statement is a Core construct, compiled once by the asyncpg dialect (its SQL, the order of its
parameters, the casts it renders, the types' own bind and result processing) - and runs it with
``asyncpg.Connection.fetchrow`` on the connection SQLAlchemy checked out.

Only for statements that need no transaction of SQLAlchemy's: a unit of work in autocommit (a
read-only unit of work on PostgreSQL, or the one statement of a batch sent at commit,
``repositories._batch``); inside a transaction begun by SQLAlchemy the adapter sends ``BEGIN`` only
with its own first statement. Errors are raised as SQLAlchemy's (``IntegrityError``,
``OperationalError`` with the connection invalidated, ``DBAPIError``), with the asyncpg error as
``orig`` (its ``sqlstate`` is what ``uow.retrying`` looks at).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select

__all__ = ["PgStatement"]

Processor = Callable[[Any], Any]


_GIVEN = object()  # a parameter the caller gives (a bindparam without a value)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # Per positional parameter: its name, the value the statement holds (literals) or _GIVEN, and
    # the type's bind processor.
    binds: tuple[tuple[str, Any, Processor | None], ...]
    columns: tuple[tuple[str, Processor | None], ...]


class PgStatement:
    """A Core statement, compiled once for the connection's dialect, run on the asyncpg connection."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled: Any = self.statement.compile(dialect=dialect)
        binds = tuple(
            (
                name,
                _GIVEN if bind.required else bind.effective_value,
                bind.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name, bind in ((name, compiled.binds[name]) for name in compiled.positiontup or ())
        )
        columns = tuple(
            (str(column.key), column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in self.statement.selected_columns
        )
        return _Compiled(str(compiled), binds, columns)

    async def fetchrow(self, conn: AsyncConnection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The statement's first row (column name -> value, as SQLAlchemy would give it), or None."""
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = self._compile(conn.dialect)
        try:
            args = []
            for name, held, process in compiled.binds:
                value = params[name] if held is _GIVEN else held
                args.append(value if process is None else process(value))
        except Exception as error:  # a missing parameter, a naive datetime: as SQLAlchemy says it
            raise exc.StatementError(str(error), compiled.sql, None, error, hide_parameters=True) from error
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            record = await driver.fetchrow(compiled.sql, *args)
        except asyncpg.DataError as error:
            # An argument the driver refused before sending anything: the connection is fine.
            raise exc.DBAPIError(compiled.sql, dict(params), error, hide_parameters=True) from error
        except asyncpg.PostgresError as error:
            if str(getattr(error, "sqlstate", "")).startswith(_SESSION_LOST) or driver.is_closed():
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
        if record is None:
            return None
        return {
            name: value if process is None else process(value)
            for (name, process), value in zip(compiled.columns, record.values(), strict=True)
        }


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
