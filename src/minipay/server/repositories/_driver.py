"""Statements run on the database driver itself, compiled once by SQLAlchemy: :class:`DriverStatement`.

Through SQLAlchemy's async engine a statement costs far more of the service's CPU than the driver
does for it: the execution context, a bind processor per value, a result processor per column and
the greenlet hand-offs. A driver statement keeps what SQLAlchemy is good at - the statement is a
Core construct, compiled once by the connection's dialect (its SQL, the order of its parameters,
the casts it renders, the types' own bind and result processing) - and hands the SQL and the
processed arguments to the driver: ``asyncpg`` (:class:`~minipay.server.repositories._pg.PgStatement`)
or ``sqlite3`` (:meth:`DriverStatement.fetchrow_sqlite`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select

__all__ = ["Compiled", "DriverStatement"]

Processor = Callable[[Any], Any]

_GIVEN = object()  # a parameter the caller gives (a bindparam without a value)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement as one dialect renders it."""

    sql: str
    # Per positional parameter: its name, the value the statement holds (literals) or _GIVEN, and
    # the type's bind processor.
    binds: tuple[tuple[str, Any, Processor | None], ...]
    columns: tuple[tuple[str, Processor | None], ...]
    #: The column names, and the columns that have a result processor (both from ``columns``).
    names: tuple[str, ...] = ()
    processed: tuple[tuple[str, Processor], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(name for name, _ in self.columns))
        object.__setattr__(self, "processed", tuple((n, p) for n, p in self.columns if p is not None))

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The driver's positional arguments for ``params`` (by bind name), each processed as
        SQLAlchemy would; a missing parameter or a value the type refuses is a ``StatementError``."""
        try:
            args = []
            for name, held, process in self.binds:
                value = params[name] if held is _GIVEN else held
                args.append(value if process is None else process(value))
        except Exception as error:  # a missing parameter, a naive datetime: as SQLAlchemy says it
            raise exc.StatementError(str(error), self.sql, None, error, hide_parameters=True) from error
        return args

    def row(self, values: Sequence[Any]) -> dict[str, Any]:
        """A driver's row as SQLAlchemy would give it: column name -> processed value."""
        # The row as it came, then the few columns whose type processes its value (datetimes, JSON,
        # booleans): dict(zip()) runs in C, a comprehension over every column does not.
        out = dict(zip(self.names, values, strict=True))
        for name, process in self.processed:
            out[name] = process(out[name])
        return out


class DriverStatement:
    """A Core ``SELECT`` (or a statement ``RETURNING`` columns), compiled once per dialect."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> Compiled:
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
        return Compiled(str(compiled), binds, columns)

    def fetchrow_sqlite(
        self, connection: sqlite3.Connection, dialect: Dialect, params: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The statement's first row on a :mod:`sqlite3` connection, run synchronously (for the
        lookups of ``db.SQLiteEngine.lookup_connection``, which never wait), or None. Errors are
        raised as SQLAlchemy's (``OperationalError``, ``DBAPIError``) with the sqlite3 error as
        ``orig``; the parameters never in the message."""
        compiled = self.compiled(dialect)
        args = compiled.arguments(params)
        try:
            record = connection.execute(compiled.sql, args).fetchone()
        except sqlite3.OperationalError as error:
            raise exc.OperationalError(compiled.sql, dict(params), error, hide_parameters=True) from error
        except sqlite3.Error as error:
            raise exc.DBAPIError(compiled.sql, dict(params), error, hide_parameters=True) from error
        return None if record is None else compiled.row(record)
