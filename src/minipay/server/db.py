"""Database schema (SQLAlchemy Core) and engine construction for SQLite and PostgreSQL.

Two :class:`~sqlalchemy.MetaData`: :data:`metadata` (the service's tables) and :data:`worker_metadata`
(the worker's job queue and reconciliation tables, created by their own Alembic revision). Only the
repositories (``minipay.server.repositories``) and the migrations build SQL over them.

Correctness never depends on one process (research B3): every state change is a conditional update
(``... WHERE id = :id AND version = :version``) inside a transaction that first locks the row
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every transaction is ``BEGIN IMMEDIATE``, i.e.
one writer at a time, with a busy timeout so concurrent writers queue instead of failing).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    exc,
    text,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.types import TypeDecorator

from minipay.server._json import dumps_text
from minipay.server._json import loads as json_loads
from minipay.server._postgres import StatementPool
from minipay.server._sqlite import InLoopDBAPI, LookupConnection, WalSync, begin_immediate

__all__ = [
    "REFUND_JOB_KINDS",
    "REFUND_JOB_ROWS",
    "PgEngine",
    "SQLiteEngine",
    "UTCDateTime",
    "create_engine",
    "idempotency_keys",
    "is_postgres",
    "metadata",
    "outbox_events",
    "payment_events",
    "payments",
    "reader_engine",
    "reconciliation_discrepancies",
    "reconciliation_runs",
    "refunds",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "worker_jobs",
    "worker_metadata",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both SQLite (which drops the offset) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: times are timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], datetime | None] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite: the stored text (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC, no offset) parsed in one step,
        # with the offset appended: ``fromisoformat`` then gives ``UTC`` itself, and costs a fifth of a
        # parse followed by ``replace(tzinfo=UTC)`` (SQLAlchemy's own chain, a regular expression then
        # process_result_value, costs more still), on each of a payment's seven datetime columns at
        # every read. Text that carries an offset of its own fails that parse and is converted.
        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            if isinstance(value, str):
                try:
                    return datetime.fromisoformat(value + "+00:00")
                except ValueError:
                    value = datetime.fromisoformat(value)
            parsed: datetime = value
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)

        return process


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

payments = Table(
    "payments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("institution", String(64), nullable=False),
    Column("appid", String(32), nullable=False),
    Column("mch_id", String(32), nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    Column("sub_appid", String(32), nullable=False),
    Column("out_trade_no", String(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", String(400), nullable=False),
    Column("openid", String(128), nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("attach", String(400)),
    Column("metadata", JSON, nullable=False),
    Column("status", String(24), nullable=False),
    Column("paid_after_close", Boolean, nullable=False, default=False),
    Column("transaction_id", String(32)),
    Column("prepay_id", String(64)),
    Column("prepay_expires_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    Column("paid_at", UTCDateTime),
    Column("closed_at", UTCDateTime),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    Column("cash_fee", BigInteger),
    Column("cash_fee_type", String(3)),
    Column("notified_at", UTCDateTime),
    Column("last_error", String(400)),
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # WeChat scopes a caller's out_trade_no to the sub-merchant in institution mode: two sub-merchants
    # may use the same number, and one must not learn (or squat) the other's numbers.
    UniqueConstraint("mch_id", "sub_mch_id", "out_trade_no", name="uq_payments_mch_id_sub_mch_id_out_trade_no"),
    Index("ix_payments_sub_mch_id_created_at", "sub_mch_id", "created_at"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("payment_id", String(40), ForeignKey("payments.id"), nullable=False),
    Column("mch_id", String(32), nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    Column("out_refund_no", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(80)),
    Column("status", String(24), nullable=False),
    Column("refund_id", String(32)),
    Column("failure_code", String(64)),
    Column("succeeded_at", UTCDateTime),
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("mch_id", "out_refund_no", name="uq_refunds_mch_id_out_refund_no"),
    Index("ix_refunds_payment_id", "payment_id"),
)

payment_events = Table(
    "payment_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(40)),
    Column("refund_id", String(40)),
    Column("sub_mch_id", String(32)),
    Column("type", String(64), nullable=False),
    Column("source", String(32), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_payment_events_payment_id", "payment_id"),
)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event_key", String(200), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    Column("payment_id", String(40)),
    Column("refund_id", String(40)),
    Column("data", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_outbox_events_sub_mch_id_created_at", "sub_mch_id", "created_at"),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("sub_mch_id", String(32)),  # NULL: created with the admin key, receives every sub-merchant's events
    Column("url", String(2048), nullable=False),
    Column("secret", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    # Circuit breaker: consecutive failed attempts, and while open no delivery to it is claimed.
    Column("failure_streak", Integer, nullable=False, default=0, server_default="0"),
    Column("open_until", UTCDateTime),
    Index("ix_webhook_endpoints_sub_mch_id", "sub_mch_id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("outbox_events.id"), nullable=False),
    Column("endpoint_id", String(40), ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("status", String(16), nullable=False),  # pending | succeeded | failed (gave up after 3 days)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("locked_until", UTCDateTime),
    Column("last_status_code", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_id_endpoint_id"),
    Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, ForeignKey("webhook_deliveries.id"), nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("error", String(400)),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(64), primary_key=True),  # the caller (sub_mch_id or "admin") + the operation
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("resource_id", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)


# BIGINT on PostgreSQL, INTEGER PRIMARY KEY (the rowid alias, auto-incremented) on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

#: The worker's tables: a MetaData of their own (Alembic revision ``0002_worker``), without the naming
#: convention of :data:`metadata` (their constraints and indexes are named explicitly).
worker_metadata = MetaData()

#: The job queue. One row per logical job: ``(kind, key)`` is unique, so enqueueing twice is a no-op.
worker_jobs = Table(
    "worker_jobs",
    worker_metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    # pending -> running -> done | pending (retry) | dead (gave up)
    Column("status", String(16), nullable=False),
    Column("run_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_token", String(64), nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    UniqueConstraint("kind", "key", name="uq_worker_jobs_kind_key"),
    Index("ix_worker_jobs_status_run_at", "status", "run_at"),
)

#: One reconciliation of one sub-merchant's bill for one China-time day.
reconciliation_runs = Table(
    "reconciliation_runs",
    worker_metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("bill_date", Date, nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    # ok (no differences) | discrepancies | no_bill | error
    Column("status", String(16), nullable=False),
    Column("bill_rows", Integer, nullable=False),
    Column("ledger_rows", Integer, nullable=False),
    Column("discrepancy_count", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    UniqueConstraint("bill_date", "sub_mch_id", name="uq_reconciliation_runs_date_sub_mch"),
)

#: The discrepancy kinds the refund follow-up job records (a bill run never does): one row per refund
#: and kind, however often the refund is followed or by how many workers at once.
REFUND_JOB_KINDS = ("refund_status_mismatch", "refund_missing_at_wechat")
#: Their rows, as the predicate of the partial unique index (literal: an ON CONFLICT target must repeat it).
REFUND_JOB_ROWS = text("kind IN ({})".format(", ".join(f"'{kind}'" for kind in REFUND_JOB_KINDS)))

#: Every difference between a bill and the ledger. Append-only: nothing here edits money.
reconciliation_discrepancies = Table(
    "reconciliation_discrepancies",
    worker_metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("bill_date", Date, nullable=False),
    Column("sub_mch_id", String(32), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("out_trade_no", String(32), nullable=True),
    Column("transaction_id", String(32), nullable=True),
    Column("out_refund_no", String(64), nullable=True),
    Column("refund_id", String(32), nullable=True),
    Column("bill", JSON, nullable=True),
    Column("ledger", JSON, nullable=True),
    Column("detail", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_reconciliation_discrepancies_date", "bill_date", "sub_mch_id"),
    Index(
        "uq_reconciliation_discrepancies_refund_job",
        "kind",
        "sub_mch_id",
        "out_refund_no",
        unique=True,
        sqlite_where=REFUND_JOB_ROWS,
        postgresql_where=REFUND_JOB_ROWS,
    ),
)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


class SQLiteEngine(AsyncEngine):
    """The SQLite writer engine, with its :attr:`reader` beside it.

    The writer's pool holds exactly one connection: whoever holds it is the one writer of this
    process and every transaction on it is ``BEGIN IMMEDIATE`` (other processes wait on the busy
    timeout). The pool's checkout is therefore the single-writer lock: a unit of work, a queue
    operation or anything else that opens ``engine.begin()`` / ``engine.connect()`` queues (FIFO)
    until the previous writer has returned the connection. Readers use :attr:`reader`, a pool of
    read-only connections (``PRAGMA query_only``) that never take the write lock: in WAL mode they
    read the last committed state while the writer works.
    """

    def __init__(
        self, sync_engine: Engine, reader: AsyncEngine, wal: WalSync | None, lookups: LookupConnection | None = None
    ) -> None:
        super().__init__(sync_engine)
        self.reader = reader
        self.wal = wal
        self.lookups = lookups

    def lookup_connection(self) -> sqlite3.Connection | None:
        """The read-only :mod:`sqlite3` connection of key lookups (``uow_factory().looking_up()``),
        used synchronously on the event loop; None for an in-memory database (whose only
        connection is the writer's)."""
        if self.lookups is None:
            return None
        try:
            return self.lookups.connection()
        except sqlite3.Error as error:  # as SQLAlchemy raises a failed connect
            raise exc.OperationalError("connect", None, error, hide_parameters=True) from error

    async def sync(self) -> None:
        """Return once everything committed so far is on disk (group commit: see ``_sqlite.WalSync``)."""
        if self.wal is not None:
            await self.wal.sync()

    async def dispose(self, close: bool = True) -> None:
        if self.reader is not self:
            await self.reader.dispose(close)
        await super().dispose(close)
        if self.wal is not None:
            self.wal.close()
        if self.lookups is not None:
            self.lookups.close()


class PgEngine(AsyncEngine):
    """The PostgreSQL engine, with the :attr:`statements` pool beside SQLAlchemy's own.

    Statements that run alone in autocommit (key lookups, the one statement of a unit of work that
    writes at commit) run on :attr:`statements`, a pool of asyncpg connections of its own; transactions
    on SQLAlchemy's.
    See :mod:`minipay.server._postgres`.
    """

    def __init__(self, sync_engine: Engine, statements: StatementPool) -> None:
        super().__init__(sync_engine)
        self.statements = statements

    def connections_lost(self) -> None:
        """The database dropped its sessions (a restart): every pooled connection, on both pools,
        is replaced at its next use instead of failing there one after the other."""
        self.sync_engine.pool._invalidate(None)  # type: ignore[arg-type]  # what SQLAlchemy does on a disconnect
        self.statements.expire()

    async def dispose(self, close: bool = True) -> None:
        await self.statements.close()
        await super().dispose(close)


def reader_engine(engine: AsyncEngine) -> AsyncEngine:
    """The engine read-only work should use: SQLite's reader pool, or the engine itself (PostgreSQL)."""
    return engine.reader if isinstance(engine, SQLiteEngine) else engine


#: SQLite: seconds a writer waits for the write lock (this process: the writer connection; other
#: processes: ``busy_timeout``) before the request fails as "database unavailable".
SQLITE_LOCK_TIMEOUT = 30
#: SQLite read connections per process (the writer is always one).
SQLITE_READERS = 4


def create_engine(database_url: str, *, echo: bool = False, pool_size: int = 20) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` URLs.

    SQLite: a :class:`SQLiteEngine` (one pooled writer connection, ``BEGIN IMMEDIATE``, WAL, plus a
    pool of readers: :func:`reader_engine`; group commit: :meth:`SQLiteEngine.sync`; statements run
    on the event loop: ``minipay.server._sqlite``). PostgreSQL: a :class:`PgEngine`, a pool of
    ``pool_size`` connections (plus half as many overflow) for transactions and, beside it, a pool of
    up to ``pool_size // 2`` asyncpg connections for statements that run alone in autocommit
    (``minipay.server._postgres``): at most twice ``pool_size`` connections per process. No ping at
    checkout (a round trip per transaction): connections are recycled after 30 minutes (the
    statement pool's after 5 idle minutes), and one the server dropped fails its first statement,
    which renews both pools.

    SQL parameters never appear in logs or error messages (``hide_parameters``): rows carry webhook
    secrets, and a database error is logged with its statement. JSON columns are read with
    :func:`minipay.server._json.loads` and written with :func:`minipay.server._json.dumps_text`
    (orjson). ``echo`` logs the statements SQLAlchemy executes, not those run on the driver itself
    (``repositories._pg``: the lookups and writes sent at commit).
    """
    if database_url.startswith("sqlite"):
        if not database_url.startswith("sqlite+aiosqlite"):
            raise ValueError("SQLite URLs must use the aiosqlite driver: sqlite+aiosqlite:///path.db")
        connect_args = {"timeout": SQLITE_LOCK_TIMEOUT}
        writer = create_async_engine(
            database_url,
            echo=echo,
            hide_parameters=True,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=SQLITE_LOCK_TIMEOUT,
            connect_args=connect_args,
            module=InLoopDBAPI(),
            json_deserializer=json_loads,
            json_serializer=dumps_text,
        )
        _sqlite_pragmas(writer, read_only=False)
        if _sqlite_in_memory(database_url):
            # Every connection to :memory: is a database of its own: the writer reads too.
            engine = SQLiteEngine(writer.sync_engine, reader=writer, wal=None)
            engine.reader = engine
            return engine
        reader = create_async_engine(
            database_url,
            echo=echo,
            hide_parameters=True,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=SQLITE_READERS,
            max_overflow=0,
            pool_timeout=SQLITE_LOCK_TIMEOUT,
            connect_args=connect_args,
            module=InLoopDBAPI(),
            json_deserializer=json_loads,
            json_serializer=dumps_text,
        )
        _sqlite_pragmas(reader, read_only=True)
        path = os.path.abspath(writer.url.database or "")
        # A URL with options (a URI filename, say) keeps its lookups on the reader pool.
        lookups = None if writer.url.query else LookupConnection(path, timeout=SQLITE_LOCK_TIMEOUT)
        return SQLiteEngine(writer.sync_engine, reader=reader, wal=WalSync(path), lookups=lookups)
    if database_url.startswith("postgresql"):
        if not database_url.startswith("postgresql+asyncpg"):
            raise ValueError("PostgreSQL URLs must use the asyncpg driver: postgresql+asyncpg://...")
        pooled = create_async_engine(
            database_url,
            echo=echo,
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=pool_size // 2,
            pool_recycle=1800,
            json_deserializer=json_loads,
            json_serializer=dumps_text,
        )
        statements = StatementPool(
            pooled.url,
            pooled.dialect,
            max_size=max(1, pool_size // 2),
            acquire_timeout=pooled.sync_engine.pool.timeout(),  # type: ignore[attr-defined]
        )
        return PgEngine(pooled.sync_engine, statements)
    raise ValueError("database_url must be sqlite+aiosqlite://... or postgresql+asyncpg://...")


def _sqlite_in_memory(database_url: str) -> bool:
    path = database_url.split("///", 1)[1] if "///" in database_url else ""
    return path in ("", ":memory:") or "mode=memory" in path


def _sqlite_pragmas(engine: AsyncEngine, *, read_only: bool) -> None:
    # pysqlite's own transaction handling would open a DEFERRED transaction lazily; a deferred
    # transaction that reads then writes can fail with SQLITE_BUSY without waiting (research B3).
    # Take the write lock up front instead: BEGIN IMMEDIATE honours the busy timeout. Readers run
    # each statement in its own (WAL snapshot) read transaction and cannot write at all.
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            # No fsync at each commit: units of work wait for a shared one (SQLiteEngine.sync).
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_LOCK_TIMEOUT * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    if not read_only:

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            if not begin_immediate(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
