"""Payment and refund lookups by id gathered per event-loop turn on PostgreSQL
(``minipay.server.repositories._gather``): what each caller reads, how many statements reach the
server, how failures and callers that give up are shared out, and the plan the gathered statement
takes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from minipay.server import db
from minipay.server.repositories import _payments
from minipay.server.repositories._gather import MAX_KEYS, GatheredLookups
from minipay.server.uow import UnitOfWork
from tests.server.conftest import SUB1, SUB2, create_pg_database, drop_pg_database, migrate, require_postgres
from tests.server.test_postgres_pool import pg_engine, scans
from tests.server.test_unit_of_work import MCH, Store, add, payment, refund

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@contextlib.asynccontextmanager
async def logged_engine(url: str) -> AsyncIterator[tuple[db.PgEngine, list[str]]]:
    """An engine whose statement pool has one connection, and the statements it sends."""
    async with pg_engine(url, pool_size=2) as engine:  # pool_size // 2: one statement-pool connection
        logged: list[str] = []
        connection = await engine.statements.acquire()
        connection.add_query_logger(lambda record: logged.append(record.query))
        engine.statements.release(connection)
        yield engine, logged


async def read(engine: db.PgEngine, payment_id: str, sub_mch_id: str | None = SUB1) -> Any:
    """What the API's read does: a unit of work of lookups, the payment by id, the sub-merchant's."""
    async with UnitOfWork(engine).looking_up() as uow:
        return await uow.payments.get(payment_id, sub_mch_id=sub_mch_id)


async def settle() -> None:
    await asyncio.sleep(0.01)  # asyncpg calls its query loggers soon after each query


async def stored(engine: db.PgEngine, count: int, logged: list[str] | None = None) -> list[Any]:
    """Payments pay_1 .. pay_<count> written; with ``logged``, the set-up's statements taken off it."""
    mine = [payment(n) for n in range(1, count + 1)]
    await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), *mine)
    if logged is not None:
        await settle()
        logged.clear()
    return mine


async def behind_a_first_read(
    engine: db.PgEngine, mine: list[Any]
) -> tuple[asyncio.Task[Any], list[asyncio.Task[Any]]]:
    """A read of pay_1, begun; then the reads of the others, asked for once it is in flight."""
    first = asyncio.create_task(read(engine, "pay_1"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return first, [asyncio.create_task(read(engine, p.id)) for p in mine[1:]]


def lookups(logged: list[str]) -> list[str]:
    """The lookups among the statements sent (not asyncpg's own look at a type it meets first)."""
    return [query for query in logged if query.startswith(("SELECT payments.", "SELECT refunds.", "SELECT row."))]


async def test_reads_asked_for_in_one_turn_are_one_statement_and_each_caller_gets_its_own_row(
    postgres_url: str,
) -> None:
    async with logged_engine(postgres_url) as (engine, logged):
        store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
        mine = [payment(n) for n in range(1, 4)]
        theirs = payment(9, sub=SUB2)
        await add(store, *mine, theirs)
        await settle()
        logged.clear()  # the writes of the set-up
        found = await asyncio.gather(
            read(engine, "pay_1"),
            read(engine, "pay_2"),
            read(engine, "pay_2"),  # the same id twice in one turn
            read(engine, "pay_3"),
            read(engine, "pay_9"),  # another sub-merchant's: checked on the row, as alone
            read(engine, "pay_nope"),
            read(engine, "pay_9", sub_mch_id=SUB2),
        )
        await settle()
        assert found == [mine[0], mine[1], mine[1], mine[2], None, None, theirs]
        assert found[1] is not found[2]  # a payment of its own for each caller
        [gathered] = lookups(logged)
        assert "unnest" in gathered
        # Nor did asyncpg look the parameter's type up in the server's catalogue (it does for
        # varchar[]: a query of ~10 ms on each connection's first gathered read, far more under load).
        assert not any("typeinfo" in query for query in logged)

        # One read in a turn: the one-row statement, as before.
        logged.clear()
        assert await read(engine, "pay_3") == mine[2]
        await settle()
        [alone] = lookups(logged)
        assert "unnest" not in alone


@pytest.mark.parametrize("by", ["id", "out_refund_no"])
async def test_refund_lookups_are_gathered_too(postgres_url: str, by: str) -> None:
    async with logged_engine(postgres_url) as (engine, logged):
        store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
        paid = payment(1)
        await add(store, paid, refund(1, paid, 100), refund(2, paid, 200))
        await settle()
        logged.clear()

        async def read_refund(n: str) -> Any:
            async with UnitOfWork(engine).looking_up() as uow:
                if by == "id":
                    return await uow.refunds.get(f"re_{n}", sub_mch_id=SUB1)
                return await uow.refunds.get_by_out_refund_no(MCH, f"R{n}")

        first, second, missing = await asyncio.gather(read_refund("1"), read_refund("2"), read_refund("9"))
        await settle()
        assert (first.amount, second.amount, missing) == (100, 200, None)
        [gathered] = lookups(logged)
        assert "unnest" in gathered


async def test_duplicate_checks_by_out_trade_no_are_gathered_on_the_whole_key(postgres_url: str) -> None:
    # A notification's duplicate check reads the payment by (mch_id, out_trade_no, sub_mch_id): the
    # same out_trade_no under another sub-merchant is another payment, and a key matches on all three.
    async with logged_engine(postgres_url) as (engine, logged):
        store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
        mine, also_mine = payment(1), payment(2)
        theirs = payment(3, sub=SUB2, out_trade_no=mine.out_trade_no)  # the same out_trade_no, SUB2's
        await add(store, mine, also_mine, theirs)
        await settle()
        logged.clear()

        async def by_out_trade_no(out_trade_no: str, sub: str = SUB1, mch: str = MCH) -> Any:
            async with UnitOfWork(engine).looking_up() as uow:
                return await uow.payments.get_by_out_trade_no(mch, out_trade_no, sub_mch_id=sub)

        found = await asyncio.gather(
            by_out_trade_no(mine.out_trade_no),
            by_out_trade_no(mine.out_trade_no, sub=SUB2),
            by_out_trade_no(also_mine.out_trade_no),
            by_out_trade_no(also_mine.out_trade_no, sub=SUB2),  # SUB2 has no such order
            by_out_trade_no(mine.out_trade_no, mch="1900000999"),  # nor has another institution
            by_out_trade_no(also_mine.out_trade_no),  # the same key twice
        )
        await settle()
        assert found == [mine, theirs, also_mine, None, None, also_mine]
        assert found[2] is not found[5]
        [gathered] = lookups(logged)
        assert "unnest" in gathered

        # One in a turn: the one-row statement.
        logged.clear()
        assert await by_out_trade_no(also_mine.out_trade_no) == also_mine
        await settle()
        [alone] = lookups(logged)
        assert "unnest" not in alone


async def test_more_ids_in_a_turn_than_one_statement_reads_make_more_statements(postgres_url: str) -> None:
    async with logged_engine(postgres_url) as (engine, logged):
        store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
        many = [payment(n) for n in range(MAX_KEYS + 6)]
        await add(store, *many)
        await settle()
        logged.clear()
        found = await asyncio.gather(*(read(engine, p.id) for p in many))
        await settle()
        assert found == many
        sent = lookups(logged)
        assert len(sent) == 2
        assert all("unnest" in query for query in sent)


async def test_reads_asked_for_while_one_is_in_flight_gather_until_it_ends(postgres_url: str) -> None:
    # Under load a read is in flight when the next requests ask: their keys keep gathering across
    # turns and go as one statement when it ends, instead of one statement per turn.
    async with logged_engine(postgres_url) as (engine, logged):
        mine = await stored(engine, 4, logged)
        held = await engine.statements.acquire()  # the pool's one connection: the first read waits for it
        first = asyncio.create_task(read(engine, "pay_1"))
        later = []
        for p in mine[1:]:
            await asyncio.sleep(0)  # a turn (or more) of its own for each
            await asyncio.sleep(0)
            later.append(asyncio.create_task(read(engine, p.id)))
        await asyncio.sleep(0.05)
        assert not first.done()
        assert not any(task.done() for task in later)
        engine.statements.release(held)
        assert await first == mine[0]
        assert await asyncio.gather(*later) == mine[1:]
        await settle()
        alone, gathered = lookups(logged)
        assert "unnest" not in alone
        assert "unnest" in gathered  # pay_2, pay_3 and pay_4, asked in three turns: one statement


def payments_by_id() -> GatheredLookups:
    """The gathered lookups of payments by id (the API's read)."""
    return _payments._GATHERED[id(_payments._PAYMENT_BY_ID[False, False])]


@contextlib.contextmanager
def first_read_held(monkeypatch: pytest.MonkeyPatch, outcome: BaseException | None) -> Iterator[asyncio.Event]:
    """The next one-row read of a payment by id waits until the event is set, then raises
    ``outcome`` (or reads as usual when it is None); the reads after it are not touched."""
    lookups = payments_by_id()
    real = lookups.one.fetchrow_alone
    release = asyncio.Event()
    calls = []

    async def held(engine: Any, params: Any) -> Any:
        calls.append(params)
        if len(calls) == 1:
            await release.wait()
            if outcome is not None:
                raise outcome
        return await real(engine, params)

    monkeypatch.setattr(lookups.one, "fetchrow_alone", held)
    yield release


async def test_reads_gathered_behind_a_failed_read_still_go(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with logged_engine(postgres_url) as (engine, logged):
        mine = await stored(engine, 3, logged)
        failure = OperationalError("SELECT", None, ConnectionResetError("lost"))
        with first_read_held(monkeypatch, failure) as release:
            first, later = await behind_a_first_read(engine, mine)
            await asyncio.sleep(0.01)  # within PATIENCE: the later keys wait behind the first read
            assert not any(task.done() for task in later)
            release.set()
            with pytest.raises(OperationalError):
                await first
            assert await asyncio.gather(*later) == mine[1:]
        await settle()
        [gathered] = lookups(logged)  # pay_2 and pay_3 together, after the failed read
        assert "unnest" in gathered
        assert engine.statements.stats()["in_use"] == 0


async def test_keys_behind_a_read_that_hangs_go_after_patience(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read that never ends (a half-open connection, a lock held by a migration) holds the keys
    # gathered behind it for PATIENCE at most: then they go without it.
    async with logged_engine(postgres_url) as (engine, _):
        mine = await stored(engine, 3)
        with first_read_held(monkeypatch, None) as release:
            first, later = await behind_a_first_read(engine, mine)
            assert await asyncio.wait_for(asyncio.gather(*later), 2) == mine[1:]
            assert not first.done()  # still held
            release.set()
            assert await first == mine[0]


async def test_keys_a_gathered_statement_cannot_carry_are_read_alone(postgres_url: str) -> None:
    # PostgreSQL's text takes no NUL, and a lone surrogate is no UTF-8: such a key would fail the
    # statement of every key gathered with it (each then read again alone, one round trip after
    # another). It is read alone at once; the others stay one statement.
    async with logged_engine(postgres_url) as (engine, logged):
        mine = await stored(engine, 2, logged)
        outcomes = await asyncio.gather(
            read(engine, "pay_1"),
            read(engine, "pay\x00x"),
            read(engine, "pay_\udc80"),
            read(engine, "pay_2"),
            return_exceptions=True,
        )
        assert (outcomes[0], outcomes[3]) == (mine[0], mine[1])
        assert isinstance(outcomes[1], DBAPIError)
        assert not isinstance(outcomes[1], OperationalError)
        assert isinstance(outcomes[2], Exception)
        await settle()
        sent = lookups(logged)
        assert len([query for query in sent if "unnest" in query]) == 1  # pay_1 and pay_2
        assert len([query for query in sent if "unnest" not in query]) <= 2  # the two others, alone
        assert engine.statements.stats()["in_use"] == 0


async def test_a_gathered_statement_the_server_refuses_is_read_again_key_by_key(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with logged_engine(postgres_url) as (engine, _):
        mine = await stored(engine, 3)

        async def refused(engine: Any, params: Any) -> Any:
            raise DBAPIError("SELECT", None, ValueError("refused"))

        monkeypatch.setattr(payments_by_id().many, "fetch_alone", refused)
        assert await asyncio.gather(*(read(engine, p.id) for p in mine)) == mine


async def test_a_read_cancelled_before_it_began_neither_strands_its_callers_nor_the_next_batch(
    postgres_url: str,
) -> None:
    # Reads are cancelled by the loop at shutdown, possibly before their first step: their callers
    # are cancelled too, and the keys gathered behind them still go.
    async with logged_engine(postgres_url) as (engine, logged):
        mine = await stored(engine, 2, logged)
        loop = asyncio.get_running_loop()

        def cancel_unstarted_reads() -> None:
            for task in asyncio.all_tasks(loop):
                if task.get_coro().__qualname__ == "GatheredLookups._read":  # type: ignore[union-attr]
                    task.cancel()

        first = asyncio.create_task(read(engine, "pay_1"))
        await asyncio.sleep(0)  # first asked: its read starts at the end of this turn
        second = asyncio.create_task(read(engine, "pay_2"))  # asks once that read exists: waits behind it
        loop.call_soon(cancel_unstarted_reads)  # runs after the read is made, before its first step
        outcomes = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
        assert isinstance(outcomes[0], asyncio.CancelledError)
        assert outcomes[1] == mine[1]
        await settle()
        assert len(lookups(logged)) == 1  # pay_2's: the read of pay_1 never began
        assert engine.statements.stats()["in_use"] == 0


async def test_a_failure_of_the_gathered_statement_reaches_every_caller(postgres_url: str) -> None:
    # Nothing listens on port 1: each read fails as it would alone (the API answers 503).
    async with pg_engine(postgres_url.replace("127.0.0.1:5432", "127.0.0.1:1")) as engine:
        outcomes = await asyncio.gather(
            read(engine, "pay_1"), read(engine, "pay_2"), read(engine, "pay_2"), return_exceptions=True
        )
        assert all(isinstance(outcome, OperationalError) for outcome in outcomes), outcomes


async def test_a_key_the_server_refuses_fails_its_own_caller_only(postgres_url: str) -> None:
    async with logged_engine(postgres_url) as (engine, _):
        mine = await stored(engine, 2)
        # PostgreSQL takes no NUL in text: the gathered statement fails, and each key is read alone.
        first, refused, second = await asyncio.gather(
            read(engine, "pay_1"), read(engine, "pay\x00x"), read(engine, "pay_2"), return_exceptions=True
        )
        assert (first, second) == (mine[0], mine[1])
        assert isinstance(refused, DBAPIError)
        assert not isinstance(refused, OperationalError)
        assert engine.statements.stats()["in_use"] == 0


async def test_a_caller_that_gives_up_leaves_the_others_their_rows(postgres_url: str) -> None:
    async with logged_engine(postgres_url) as (engine, _):
        mine = await stored(engine, 3)
        tasks = [asyncio.create_task(read(engine, p.id)) for p in mine]
        await asyncio.sleep(0)  # each has asked for its id
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == mine[0]
        assert isinstance(results[1], asyncio.CancelledError)
        assert results[2] == mine[2]
        # Nothing was lost in the pool: every connection is back, and the next reads are served.
        assert engine.statements.stats()["in_use"] == 0
        assert await asyncio.gather(*(read(engine, p.id) for p in mine)) == mine


async def test_the_gathered_statement_probes_the_primary_key_on_an_unanalysed_table() -> None:
    # As for the one-row statement (test_postgres_pool): the plan PostgreSQL keeps for it after a few
    # runs must not depend on statistics a new deployment does not have yet.
    await require_postgres()
    url = await create_pg_database()
    try:
        await migrate(url)
        async with logged_engine(url) as (engine, logged):
            store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
            await add(store, *(payment(n) for n in range(1, 300)))  # one sub-merchant's, never analysed
            await settle()
            logged.clear()
            await asyncio.gather(read(engine, "pay_1"), read(engine, "pay_2"))
            await settle()
            [query] = lookups(logged)
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                await raw.execute("SET plan_cache_mode = force_generic_plan")
                await raw.execute(f"PREPARE gathered AS {query}")
                [plan] = await raw.fetchval("EXPLAIN (FORMAT JSON) EXECUTE gathered('{pay_1,pay_2}')")
                await raw.execute("DEALLOCATE gathered")
                await raw.execute("RESET plan_cache_mode")
                await conn.rollback()
            [probe] = [node for node in scans(plan["Plan"]) if "Index Cond" in node]
            assert probe["Index Name"] == "pk_payments"
            assert "Filter" not in probe
    finally:
        await drop_pg_database(url)


async def test_the_gathered_duplicate_check_probes_the_unique_key_once_the_table_is_analysed() -> None:
    # By out_trade_no the plan depends on statistics, for the gathered statement as for the one-row
    # one: on a small table never analysed, PostgreSQL costs the sub-merchant index the same as the
    # unique key (docs/operations.md: autovacuum keeps the statistics). Analysed, it probes the key.
    await require_postgres()
    url = await create_pg_database()
    try:
        await migrate(url)
        async with logged_engine(url) as (engine, logged):
            store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
            await add(store, *(payment(n) for n in range(1, 300)))  # one sub-merchant's
            async with engine.connect() as conn:
                await (await conn.get_raw_connection()).driver_connection.execute("ANALYZE payments")
            await settle()
            logged.clear()

            async def by_out_trade_no(out_trade_no: str) -> Any:
                async with UnitOfWork(engine).looking_up() as uow:
                    return await uow.payments.get_by_out_trade_no(MCH, out_trade_no, sub_mch_id=SUB1)

            await asyncio.gather(by_out_trade_no("ORDER1"), by_out_trade_no("ORDER2"))
            await settle()
            [query] = lookups(logged)
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                await raw.execute("SET plan_cache_mode = force_generic_plan")
                await raw.execute(f"PREPARE gathered AS {query}")
                # The arrays in the key's order: mch_id, sub_mch_id, out_trade_no.
                [plan] = await raw.fetchval(
                    "EXPLAIN (FORMAT JSON) EXECUTE gathered("
                    f"'{{{MCH},{MCH}}}', '{{{SUB1},{SUB1}}}', '{{ORDER1,ORDER2}}')"
                )
                await raw.execute("DEALLOCATE gathered")
                await raw.execute("RESET plan_cache_mode")
                await conn.rollback()
            [probe] = [node for node in scans(plan["Plan"]) if "Index Cond" in node]
            assert probe["Index Name"] == "uq_payments_mch_id_sub_mch_id_out_trade_no"
            assert "Filter" not in probe
    finally:
        await drop_pg_database(url)
