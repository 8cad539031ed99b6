"""Lookups by a unique key gathered per event-loop turn into one statement (PostgreSQL).

A payment read (``GET /v1/payments/{id}``) is one keyed lookup, and so is a notification's duplicate
check (the payment by ``mch_id``, ``out_trade_no`` and ``sub_mch_id``): each runs alone in
autocommit on the statement pool (``repositories._pg``). Under load a service process starts many requests in one turn
of its event loop (every request that arrived with the last poll), and each sent its own statement:
one round trip, one send and one wake-up on both sides, and one pass through PostgreSQL's executor
per read. Those system calls and wake-ups were most of a read's cost on the database's side and a
large part of it on the service's (profiled: PostgreSQL ~60 µs of CPU a lookup).

:class:`GatheredLookups` collects the keys asked for while one turn runs and, just after it
(``loop.call_soon``), reads them all with one statement, at most :data:`MAX_KEYS` keys a statement;
each caller gets its own row (or None) as if it had read alone. The statement probes the key's unique
index once per key whatever the table's statistics say: ``unnest($1, $2, ...) AS k(col1, col2, ...)
JOIN LATERAL (SELECT ... WHERE col1 = k.col1 AND ... OFFSET 0)``, one ``text[]`` per column of the
key (the ``OFFSET`` keeps the subquery a parameterised index scan). A plain
``id = ANY($1)`` is planned as a sequential scan on a table not analysed yet, and PostgreSQL keeps
that generic plan for the prepared statement until the table is analysed.
A turn that asks for one key runs the one-row statement, exactly as before. The rows are read after
the caller asked (never from an earlier read), so a read still sees every write committed before it
began; what changes is only that reads asked for at the same time share one snapshot.

While :data:`IN_FLIGHT` gathered reads of a kind (payments by id, say) run on an engine, the keys of
that kind asked for meanwhile are not read at the end of their turn: they keep gathering until a read
in flight is answered, then go as one statement (as a group commit gathers the commits that land
while a sync runs). Under load a
statement then carries the requests of several turns instead of one (a process at 8 connections
sent about 3 keys a statement before), so the round trips, the database's wake-ups and the
service's sends fall with the load: ``GET /v1/payments/{id}`` went from 0.25-0.30x to 0.34-0.40x of
the bare framework on PostgreSQL with two processes in the runs right after (``bench/service.py``;
a run's figure moves by a few hundredths with the machine), and PostgreSQL's share of the CPU fell
by about half. A key waits at most one round trip more, and never more than
:data:`PATIENCE`: keys gathered behind a read that takes longer (a half-open connection, a lock held
by a migration) go then without it. Idle, a key is read at the end of its turn as before.

A failure of the gathered statement is raised to each of its callers, as the one-row statement's
would have been (the database unreachable, a full pool, a lost session). When the server refused the
statement itself, each key is read again alone, so that only the caller whose key it was gets the
error. The values known to fail it (PostgreSQL's text takes no NUL; a string that is not valid UTF-8
cannot be sent) never join a gathered statement: such a key is read alone at once, so that a client
asking for it cannot make every key gathered with it a round trip of its own. A caller that gives
up (cancelled) leaves the others their rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Text, bindparam, exc, func, literal_column, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import Select

from minipay.server import db
from minipay.server.repositories._pg import PgStatement

__all__ = ["IN_FLIGHT", "MAX_KEYS", "PATIENCE", "GatheredLookups"]

#: The most keys one gathered statement reads; more in one turn make more statements.
MAX_KEYS = 64

#: Gathered reads of one kind and engine running at a time before new keys wait for one to end.
IN_FLIGHT = 1

#: Seconds the keys gathered behind reads in flight wait for one of them to end before they go anyway.
PATIENCE = 0.05

#: A key's values, in the order of the key's columns.
Key = tuple[str, ...]

#: The keys asked for -> the futures of the callers that asked (a key may be asked for twice).
_Waiters = dict[Key, list[asyncio.Future[dict[str, Any] | None]]]


class _Batch:
    """The keys one engine was asked for in a turn, or while its reads in flight ran (key -> the
    callers' futures)."""

    __slots__ = ("loop", "scheduled", "started", "timer", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: _Waiters = {}
        self.scheduled = False  # its start is on the loop's ready queue
        self.started = False
        self.timer: asyncio.TimerHandle | None = None  # its start after PATIENCE, while it waits


class GatheredLookups:
    """Lookups of one row of ``table`` by a unique key of string columns (``columns``), gathered per
    event-loop turn and engine (see the module docstring). ``one`` is the statement of a single
    lookup (the key's columns as its parameters), run when a turn asks for one key."""

    def __init__(self, table: Any, columns: tuple[str, ...], one: PgStatement) -> None:
        self.columns = columns
        self.one = one
        # One text[] per column, unnested side by side into rows (key column 1, column 2, ...).
        # text[], not varchar[]: asyncpg knows text[] (varchar[] costs each connection a look at the
        # server's type catalogue on first use, ~10 ms idle and far more under load).
        arrays = [bindparam(f"keys_{name}", type_=ARRAY(Text)) for name in columns]
        keys = func.unnest(*arrays).table_valued(*columns).render_derived(name="k")
        row = (
            select(table)
            .where(*(table.c[name] == keys.c[name] for name in columns))
            .offset(literal_column("0"))
            .lateral("row")
        )
        many: Select[Any] = select(row).select_from(keys).join(row, true())
        self.many = PgStatement(many)
        # Planned on each statement-pool connection as it opens: a gathered read waiting on a first
        # plan holds every request of its turn, not one.
        self.one.warm_up(dict.fromkeys(columns, ""))
        self.many.warm_up({f"keys_{name}": [] for name in columns})
        # (id(engine), id(loop)) -> the batch gathering keys (per loop: a loop that stops with a
        # batch waiting finds it again when it runs on)
        self._pending: dict[tuple[int, int], _Batch] = {}
        # id(engine) -> its gathered reads running (referenced until done: the loop keeps weak ones)
        self._running: dict[int, set[asyncio.Task[None]]] = {}

    def key_of(self, params: Mapping[str, Any]) -> Key:
        """The key a lookup's parameters name (the one-row statement's parameters)."""
        return tuple(params[name] for name in self.columns)

    async def fetchrow(self, engine: db.PgEngine, key: Key) -> Mapping[str, Any] | None:
        """The row whose key is ``key`` (its columns' values, in order), or None; read with the other
        keys asked for this turn."""
        if not _gatherable(key):
            return await self._alone(engine, key)
        loop = asyncio.get_running_loop()
        slot = (id(engine), id(loop))
        batch = self._pending.get(slot)
        if batch is None or batch.loop is not loop:  # (or one of a closed loop whose id was reused)
            batch = self._pending[slot] = _Batch(loop)
            if self._in_flight(engine, loop) < IN_FLIGHT:
                batch.scheduled = True
                loop.call_soon(self._start, engine, batch)
            else:  # started as a read in flight ends, or after PATIENCE
                batch.timer = loop.call_later(PATIENCE, self._start, engine, batch)
        future: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        batch.waiters.setdefault(key, []).append(future)
        if len(batch.waiters) >= MAX_KEYS:
            self._start(engine, batch)  # full: read these now, gather the rest anew
        return await future

    def _start(self, engine: db.PgEngine, batch: _Batch) -> None:
        if batch.started:
            return  # started when it filled up
        batch.started = True
        if batch.timer is not None:
            batch.timer.cancel()
        slot = (id(engine), id(batch.loop))
        if self._pending.get(slot) is batch:
            del self._pending[slot]
        running = self._running.setdefault(id(engine), set())
        task = batch.loop.create_task(self._read(engine, batch.waiters))
        running.add(task)
        waiters = batch.waiters
        task.add_done_callback(lambda done: self._ended(engine, running, waiters, done))

    def _ended(
        self, engine: db.PgEngine, running: set[asyncio.Task[None]], waiters: _Waiters, task: asyncio.Task[None]
    ) -> None:
        # Called on the turn after the read ended, after the callers it answered have run (a new
        # key they ask for joins the batch that goes now). A read cancelled before it began never
        # answered its callers: they are cancelled.
        running.discard(task)
        if task.cancelled():
            for futures in waiters.values():
                for future in futures:
                    future.cancel()  # (a future already answered stays as it is)
        self._next(engine)

    def _in_flight(self, engine: db.PgEngine, loop: asyncio.AbstractEventLoop) -> int:
        """The engine's gathered reads running on ``loop`` (a stopped loop's never end)."""
        running = self._running.get(id(engine))
        return 0 if not running else sum(1 for task in running if task.get_loop() is loop and not task.done())

    def _next(self, engine: db.PgEngine) -> None:
        """As a read ends: start the batch that gathered while it ran, if it waits for one to end."""
        loop = asyncio.get_running_loop()
        batch = self._pending.get((id(engine), id(loop)))
        if batch is None or batch.scheduled or batch.started:
            return
        if batch.loop is loop and self._in_flight(engine, loop) < IN_FLIGHT:
            self._start(engine, batch)

    async def _read(self, engine: db.PgEngine, waiters: _Waiters) -> None:
        try:
            keys = [key for key, futures in waiters.items() if not all(f.done() for f in futures)]
            if not keys:
                return  # every caller gave up
            if len(keys) == 1:
                row = await self._alone(engine, keys[0])
                rows = {} if row is None else {keys[0]: row}
            else:
                by_column = zip(*keys, strict=True)  # every key has a value per column
                arrays = {f"keys_{name}": list(values) for name, values in zip(self.columns, by_column, strict=True)}
                try:
                    columns = self.columns
                    rows = {
                        tuple(row[name] for name in columns): row for row in await self.many.fetch_alone(engine, arrays)
                    }
                except (exc.StatementError, exc.DBAPIError) as error:
                    if isinstance(error, exc.OperationalError):
                        raise  # the database, not a value: every caller would fail alone too
                    await self._each_alone(engine, waiters)
                    return
        except BaseException as error:
            for futures in waiters.values():
                for future in futures:
                    if not future.done():
                        if isinstance(error, Exception):
                            future.set_exception(error)
                        else:
                            future.cancel()
            if not isinstance(error, Exception):
                raise
            return
        _answer(waiters, rows)

    async def _alone(self, engine: db.PgEngine, key: Key) -> dict[str, Any] | None:
        """The row of one key, read with the one-row statement."""
        return await self.one.fetchrow_alone(engine, dict(zip(self.columns, key, strict=True)))

    async def _each_alone(self, engine: db.PgEngine, waiters: _Waiters) -> None:
        """Read each key with the one-row statement: a failure reaches the callers of its key only."""
        for key, futures in waiters.items():
            if all(f.done() for f in futures):
                continue
            try:
                row = await self._alone(engine, key)
            except Exception as error:
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
                continue
            _answer({key: futures}, {} if row is None else {key: row})


def _gatherable(key: Key) -> bool:
    """Whether a gathered statement can carry ``key``: no NUL (PostgreSQL's text refuses it) and
    valid UTF-8 (a lone surrogate cannot be encoded); a key that fails is read alone."""
    for value in key:
        if "\x00" in value:
            return False
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return False
    return True


def _answer(waiters: _Waiters, rows: dict[Key, dict[str, Any]]) -> None:
    for key, futures in waiters.items():
        row = rows.get(key)
        for i, future in enumerate(futures):
            if not future.done():
                # A dict of its own for each caller of the same key: a caller may change its row.
                future.set_result(row if row is None or i == 0 else dict(row))
