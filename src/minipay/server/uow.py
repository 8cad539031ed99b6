"""Unit of work over SQLAlchemy Core (async): one transaction with its repositories (``repositories/``).

One :class:`UnitOfWork` is one database transaction::

    async with uow_factory() as uow:
        payment = await uow.payments.get(pid, for_update=True)
        ...
        await uow.payments.save(payment)     # conditional on the version read
        await uow.commit()

``save`` raises :class:`ConcurrentUpdate` when another transaction changed the row meanwhile; the
service layer retries the whole unit (``retrying``). Leaving the block without ``commit`` rolls back.
The repositories hold every SQL statement; code that uses a unit of work calls their methods (the
worker's queue ``uow.jobs``, its reconciliation ``uow.reconciliation``, the console's read model
``uow.console``, the health probes ``uow.health``), never the connection.

Work that only reads uses ``async with uow_factory().reading() as uow:``: no write transaction (on
SQLite no ``BEGIN IMMEDIATE``, so it never waits for the single writer; on PostgreSQL no
``BEGIN``/``ROLLBACK`` round trips). Each statement reads the latest committed state, as under
PostgreSQL's default READ COMMITTED.

Work that only looks rows up by key (a payment by id or ``out_trade_no``: the API's read, the
duplicate check of a notification) uses ``uow_factory().looking_up()``: read-only, and it holds no
connection: each lookup takes one for its statement alone (on SQLite the process's lookup
connection, ``db.SQLiteEngine.lookup_connection``; on PostgreSQL one of the engine's statement pool,
``db.PgEngine.statements``, the statement run on the driver). Its ``conn`` is refused; its
repositories answer only their ``get`` lookups.

Work that only writes, having decided on rows read before (its saves conditional on the versions it
read) or inserting a new payment (its unique keys the only check), uses
``uow_factory().writing_at_commit()``: on PostgreSQL its writes are sent at ``commit()``
as one statement, with no transaction round trips (``repositories._batch``); elsewhere it is an
ordinary unit of work. Such a unit of work reads nothing: its ``conn`` is refused.

The service layer names the port it needs, ``ports.UnitOfWorkPort``; this class is its SQL adapter
(and the worker's and the console's, which also reach for the connection).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from minipay.server import db, tracing
from minipay.server.domain import DomainEvent
from minipay.server.ports import UnitOfWorkPort
from minipay.server.repositories import (
    ConcurrentUpdate,
    ConsoleQueries,
    EventLog,
    HealthQueries,
    IdempotencyKeys,
    JobRepository,
    Outbox,
    PaymentRepository,
    ReconciliationRepository,
    RefundRepository,
    WebhookRepository,
    WriteBatch,
    batch_statement,
)
from minipay.server.repositories._gather import GatheredLookups
from minipay.server.repositories._pg import PgStatement

__all__ = ["ConcurrentUpdate", "UnitOfWork", "UnitOfWorkFactory", "record_events", "retrying"]

T = TypeVar("T")
U = TypeVar("U", bound=UnitOfWorkPort)


def _uow_attributes(uow: UnitOfWork) -> dict[str, Any]:
    return {"db.system": uow.engine.dialect.name, "db.read_only": uow.read_only}


R = TypeVar("R")


class _Repository(Generic[R]):
    """A unit of work's repository attribute: made on first use, then kept in the instance (this
    descriptor defines no ``__set__``, so the instance's own attribute is found first from then on)."""

    def __init__(self, make: Callable[[UnitOfWork], R]) -> None:
        self.make = make
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, uow: None, owner: type) -> Self: ...

    @overload
    def __get__(self, uow: UnitOfWork, owner: type) -> R: ...

    def __get__(self, uow: UnitOfWork | None, owner: type) -> R | Self:
        if uow is None:
            return self
        repository = uow.__dict__[self.name] = self.make(uow)
        return repository


class UnitOfWork:
    """One transaction with its repositories. Use as ``async with``; call ``commit()`` to keep the work."""

    def __init__(self, engine: AsyncEngine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self._conn: AsyncConnection | None = None
        self._committed = False
        self._span: Any = None
        self._batch: WriteBatch | None = None
        self.lookups_only = False

    # The repositories, each made when first used (a unit of work uses two or three of them).
    payments = _Repository(PaymentRepository)
    refunds = _Repository(RefundRepository)
    events = _Repository(EventLog)
    outbox = _Repository(Outbox)
    idempotency = _Repository(IdempotencyKeys)
    webhooks = _Repository(WebhookRepository)
    jobs = _Repository(JobRepository)
    reconciliation = _Repository(ReconciliationRepository)
    console = _Repository(ConsoleQueries)
    health = _Repository(HealthQueries)

    def _discard_events(self) -> None:
        events: EventLog | None = self.__dict__.get("events")
        if events is not None:
            events.discard()

    @property
    def conn(self) -> AsyncConnection:
        """The transaction's connection: for the repositories only."""
        if self._conn is None:
            if self._batch is not None:
                raise RuntimeError("a unit of work that writes at commit reads nothing")
            if self.lookups_only:
                raise RuntimeError("a unit of work of lookups holds no connection: it reads by key only")
            raise RuntimeError("the unit of work is not active: use `async with uow:`")
        return self._conn

    @property
    def autocommit(self) -> bool:
        """A read-only unit of work on PostgreSQL: each statement commits on its own."""
        return self.read_only and self.is_postgres

    @property
    def batch(self) -> WriteBatch | None:
        """The writes waiting for ``commit()`` (see :meth:`writing_at_commit`), or None: write now."""
        return self._batch

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def reading(self) -> Self:
        """Make this a read-only unit of work (before ``async with``): see the module docstring."""
        self.read_only = True
        return self

    def looking_up(self) -> Self:
        """Make this a read-only unit of work of key lookups, which holds no connection (before
        ``async with``): see the module docstring."""
        self.read_only = True
        self.lookups_only = True
        return self

    async def lookup(
        self, statement: PgStatement, params: Mapping[str, Any], *, gathered: GatheredLookups | None = None
    ) -> Mapping[Any, Any] | None:
        """The first row of a lookup ``statement`` in a unit of work of lookups (:meth:`looking_up`),
        on a connection taken for this one statement; on PostgreSQL, with ``gathered`` (the same
        lookup by key), read with the keys other lookups ask for in the same turn of the event loop,
        in one statement (``repositories._gather``)."""
        engine = self.engine
        if isinstance(engine, db.SQLiteEngine):
            connection = engine.lookup_connection()
            if connection is not None:
                return statement.fetchrow_sqlite(connection, engine.dialect, params)
            async with engine.reader.connect() as conn:  # in memory: the one connection there is
                row: Mapping[Any, Any] | None = (await conn.execute(statement.statement, params)).mappings().first()
                return row
        # PostgreSQL: the statement alone on the driver, in autocommit (no BEGIN, no ROLLBACK).
        if gathered is not None and isinstance(engine, db.PgEngine):
            return await gathered.fetchrow(engine, gathered.key_of(params))
        return await statement.fetchrow_alone(engine, params)

    def writing_at_commit(self) -> Self:
        """Make this a unit of work that reads nothing and sends its writes at commit (before
        ``async with``; PostgreSQL only, a no-op elsewhere): see the module docstring."""
        if self.is_postgres and not self.read_only:
            self._batch = WriteBatch()
        return self

    async def __aenter__(self) -> Self:
        self._span = tracing.start_span("db.unit_of_work", _uow_attributes(self)) if tracing.enabled() else None
        if self.lookups_only:
            return self  # a connection per lookup (``lookup``)
        if self.read_only:
            conn = await db.reader_engine(self.engine).connect()
            if self.is_postgres:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
            return self
        if self._batch is not None:
            return self  # no connection until the commit
        self._conn = await self.engine.connect()
        await self._conn.begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        self._discard_events()
        if self._batch is not None:
            self._batch = WriteBatch()  # what was not committed is forgotten
        if conn is None:
            if self._span is not None:
                tracing.end_span(self._span, exc)
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()
            if self._span is not None:
                tracing.end_span(self._span, exc)
        if self._committed and isinstance(self.engine, db.SQLiteEngine):
            # The writer connection is back in the pool (the next writer goes on); the caller hears
            # of the work once it is on disk.
            self._committed = False
            await self.engine.sync()

    async def commit(self) -> None:
        """Commit; statements after it run in a new transaction (begun at the first one)."""
        if self.read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        if self._batch is not None:
            await self._commit_batch(self._batch)
            return
        await self.events.flush()  # the event rows of the transaction, in one statement
        await self.conn.commit()
        self._committed = True

    async def _commit_batch(self, batch: WriteBatch) -> None:
        events = self.events.take()
        self._batch = WriteBatch()
        if not batch.fits(len(events)):
            # Written one statement after the other, in a transaction of their own.
            async with self.engine.connect() as conn:
                await conn.begin()
                for values in batch.adds:
                    await PaymentRepository.add_values(conn, values)
                for payment, values in batch.saves:
                    await PaymentRepository.save_values(conn, payment, values)
                if events:
                    await EventLog.write(conn, events)
                for row in batch.outbox:
                    await Outbox.write(conn, row, postgres=True)
                await conn.commit()
            self._after_saves(batch)
            return
        statement = batch_statement(
            save=bool(batch.saves), event_rows=len(events), publish=bool(batch.outbox), add=bool(batch.adds)
        )
        # One statement on the driver itself, outside any transaction: atomic on its own.
        answer = await statement.fetchrow_alone(self.engine, batch.parameters(events))
        saved = 0 if answer is None else answer["saved"]
        if saved != 1:  # only a save can miss (its version check): an insert raised instead
            payment_id = batch.saves[0][0].id if batch.saves else batch.adds[0]["id"]
            raise ConcurrentUpdate(f"payment {payment_id} changed concurrently")
        self._after_saves(batch)

    @staticmethod
    def _after_saves(batch: WriteBatch) -> None:
        for payment, _ in batch.saves:
            payment.version += 1

    async def rollback(self) -> None:
        self._discard_events()
        if self._batch is not None:
            self._batch = WriteBatch()  # nothing was sent: forgetting it is the rollback
            return
        if self.lookups_only:
            return  # no transaction, no connection: nothing to roll back
        await self.conn.rollback()

    async def record(
        self,
        events: list[DomainEvent],
        *,
        source: str,
        sub_mch_id: str,
        now: datetime,
        payment_id: str | None,
        refund_id: str | None = None,
        webhook_data: dict[str, Any] | None = None,
    ) -> None:
        """Append the entity's new events to the log; publish the webhook ones to the outbox (same transaction)."""
        await record_events(
            self,
            events,
            source=source,
            sub_mch_id=sub_mch_id,
            now=now,
            payment_id=payment_id,
            refund_id=refund_id,
            webhook_data=webhook_data,
        )


async def record_events(
    uow: UnitOfWorkPort,
    events: list[DomainEvent],
    *,
    source: str,
    sub_mch_id: str,
    now: datetime,
    payment_id: str | None,
    refund_id: str | None = None,
    webhook_data: dict[str, Any] | None = None,
) -> None:
    """``UnitOfWorkPort.record`` over any unit of work's ``events`` and ``outbox``: each event is
    logged, the ones merchants are told of published, and ``events`` emptied."""
    for ev in events:
        await uow.events.append(
            type=ev.type,
            source=source,
            data=dict(ev.data),
            now=now,
            payment_id=payment_id,
            refund_id=refund_id,
            sub_mch_id=sub_mch_id,
        )
        if ev.webhook is not None and ev.key is not None:
            await uow.outbox.publish(
                key=ev.key,
                type=ev.webhook,
                sub_mch_id=sub_mch_id,
                data=dict(webhook_data or {}),
                now=now,
                payment_id=payment_id,
                refund_id=refund_id,
            )
    events.clear()


UnitOfWorkFactory = Callable[[], UnitOfWork]


async def retrying(factory: Callable[[], U], work: Callable[[U], Awaitable[T]], *, attempts: int = 8) -> T:
    """Run ``work`` in a fresh unit of work, again when a concurrent writer won (``ConcurrentUpdate``,
    a unique-key race, a PostgreSQL serialization failure or deadlock). Any unit of work will do:
    the SQL one, or another implementation of :class:`~minipay.server.ports.UnitOfWorkPort`."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            async with factory() as uow:
                return await work(uow)
        except ConcurrentUpdate as exc:
            last = exc
        except IntegrityError as exc:
            last = exc
        except DBAPIError as exc:
            code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(
                getattr(exc, "orig", None), "pgcode", None
            )
            if code not in ("40001", "40P01"):
                raise
            last = exc
    raise ConcurrentUpdate(f"gave up after {attempts} attempts") from last
