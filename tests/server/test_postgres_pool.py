"""PostgreSQL's statement pool (``minipay.server._postgres``): statements that run alone in
autocommit (key lookups, the one statement of a unit of work that writes at commit) on a pool of
asyncpg connections beside SQLAlchemy's; what they read, how they fail, and how the two pools recover
together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from minipay.server import db
from minipay.server.domain import Payment, PaymentStatus
from minipay.server.repositories._pg import PgStatement
from minipay.server.uow import ConcurrentUpdate, UnitOfWork
from tests.server.conftest import START, SUB1, SUB2, create_pg_database, drop_pg_database, migrate, require_postgres
from tests.server.test_unit_of_work import Store, add, payment, refund

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@contextlib.asynccontextmanager
async def pg_engine(url: str, **options: Any) -> AsyncIterator[db.PgEngine]:
    """A PostgreSQL engine of ``db.create_engine`` (a :class:`db.PgEngine`), disposed of afterwards."""
    engine = db.create_engine(url, **options)
    assert isinstance(engine, db.PgEngine)
    try:
        yield engine
    finally:
        await engine.dispose()


def sqlalchemy_pool_connections(engine: db.PgEngine) -> int:
    pool = engine.sync_engine.pool
    return int(pool.checkedin() + pool.checkedout())  # type: ignore[attr-defined]


async def terminate_sessions(url: str, pids: list[int], *, wait: bool = False) -> None:
    """End those server sessions; with ``wait``, return once the server has ended them."""
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as other:
            for pid in pids:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(250 if wait else 0):
                alive = await other.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": pids}
                )
                if alive.scalar_one() == 0:
                    break
                await asyncio.sleep(0.02)
    finally:
        await admin.dispose()


async def statement_pool_pids(engine: db.PgEngine, at_least: int = 0) -> list[int]:
    """The server pids of the statement pool's connections (making ``at_least`` of them)."""
    statements = engine.statements
    held = [await statements.acquire() for _ in range(max(at_least, statements.stats()["size"]))]
    try:
        return [connection.get_server_pid() for connection in held]
    finally:
        for connection in held:
            statements.release(connection)


async def add_at_commit(engine: db.PgEngine, new: Payment) -> None:
    async with UnitOfWork(engine).writing_at_commit() as uow:  # one statement, sent at commit
        await uow.payments.add(new)
        await uow.commit()


async def save_at_commit(engine: db.PgEngine, changed: Payment) -> None:
    async with UnitOfWork(engine).writing_at_commit() as uow:
        await uow.payments.save(changed)
        await uow.commit()


async def test_lookups_and_writes_at_commit_run_on_the_statement_pool_and_read_as_sqlalchemy_does(
    postgres_url: str,
) -> None:
    async with pg_engine(postgres_url) as engine:
        paid = payment(1, metadata={"order": "A-1", "ünï": "cödé"}, expires_at=START + timedelta(hours=2))
        await add_at_commit(engine, paid)
        async with UnitOfWork(engine).looking_up() as uow:
            found = await uow.payments.get("pay_1", sub_mch_id=SUB1)
            by_number = await uow.payments.get_by_out_trade_no(paid.mch_id, paid.out_trade_no, sub_mch_id=SUB1)
            assert await uow.payments.get("pay_nope") is None
        # Neither touched SQLAlchemy's pool: no connection was ever made there.
        assert sqlalchemy_pool_connections(engine) == 0
        assert engine.statements.stats()["size"] >= 1
        assert found == by_number == paid
        assert found is not None
        assert found.metadata == {"order": "A-1", "ünï": "cödé"}  # JSON decoded, as SQLAlchemy's codec does
        assert found.created_at == START
        assert found.created_at.utcoffset() == timedelta(0)
        async with UnitOfWork(engine) as uow:  # a transaction: SQLAlchemy's pool
            assert await uow.payments.get("pay_1", for_update=True) == found
        assert sqlalchemy_pool_connections(engine) == 1
    assert engine.statements.stats()["size"] == 0


async def test_a_save_at_commit_on_the_statement_pool_keeps_its_version_check(postgres_url: str) -> None:
    async with pg_engine(postgres_url) as engine:
        store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
        await add(store, payment(1))
        async with UnitOfWork(engine).looking_up() as uow:
            first = await uow.payments.get("pay_1")
            second = await uow.payments.get("pay_1")
        assert first is not None
        assert second is not None
        first.status = PaymentStatus.SUCCEEDED
        await save_at_commit(engine, first)
        second.status = PaymentStatus.CLOSED
        with pytest.raises(ConcurrentUpdate):
            await save_at_commit(engine, second)  # read before the save above: refused
        async with UnitOfWork(engine).looking_up() as uow:
            now = await uow.payments.get("pay_1")
        assert now is not None
        assert now.status == PaymentStatus.SUCCEEDED


async def test_the_servers_refusal_on_the_statement_pool_is_sqlalchemys_error_and_keeps_the_connection(
    postgres_url: str,
) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:  # one connection on the statement pool
        await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), payment(1))
        [pid] = await statement_pool_pids(engine, at_least=1)
        with pytest.raises(IntegrityError) as caught:  # what uow.retrying takes for a lost race
            await add_at_commit(engine, payment(1))  # the same id again
        assert getattr(caught.value.orig, "sqlstate", None) == "23505"
        with pytest.raises(DBAPIError):  # a value the driver refuses before sending anything
            await PgStatement(select(func.abs(bindparam("n", type_=Integer)))).fetchrow_alone(engine, {"n": "x"})
        assert await statement_pool_pids(engine) == [pid]  # the same connection serves on


async def test_connections_the_server_dropped_while_idle_are_replaced_without_a_failure(postgres_url: str) -> None:
    async with pg_engine(postgres_url) as engine:
        await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), payment(1))
        assert await statement_pool_pids(engine) == []  # no lookup yet: the pool made no connection
        pids = await statement_pool_pids(engine, at_least=3)
        await terminate_sessions(postgres_url, pids, wait=True)  # as a database restart does
        for _ in range(250):  # until this side has read the server's goodbye on each (at most 5 s)
            if all(connection.is_closed() for connection, _ in engine.statements._idle):
                break
            await asyncio.sleep(0.02)
        for _ in range(4):  # the pool sees each closed connection at checkout and makes another
            async with UnitOfWork(engine).looking_up() as uow:
                assert await uow.payments.get("pay_1") is not None
        assert not set(await statement_pool_pids(engine)) & set(pids)


async def running_pids(url: str, query_prefix: str) -> list[int]:
    """The server pids running a statement that starts with ``query_prefix`` (waiting up to 2 s)."""
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as other:
            for _ in range(100):
                found = await other.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, :prefix)"),
                    {"prefix": query_prefix},
                )
                pids = list(found.scalars())
                if pids:
                    return pids
                await asyncio.sleep(0.02)
    finally:
        await admin.dispose()
    return []


async def test_a_session_lost_under_a_statement_renews_both_pools(postgres_url: str) -> None:
    # The database went away while a statement ran on the statement pool: every connection of
    # SQLAlchemy's pool is renewed too (as SQLAlchemy does on a disconnect), so the transactions
    # after it do not fail one by one on the connections the restart took.
    async with pg_engine(postgres_url, pool_size=4) as engine:
        sleeping = PgStatement(select(func.pg_sleep(30).label("slept")))
        await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), payment(1))
        async with engine.connect() as a, engine.connect() as b:
            pids = [(await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() for conn in (a, b)]
            for conn in (a, b):
                await conn.rollback()
        statement = asyncio.create_task(sleeping.fetchrow_alone(engine, {}))
        under = await running_pids(postgres_url, "SELECT pg_sleep(")
        assert len(under) == 1
        await terminate_sessions(postgres_url, [*pids, *under])
        with pytest.raises(OperationalError):
            await statement
        for _ in range(2):  # each would fail once had only the statement pool been renewed
            async with UnitOfWork(engine) as uow:
                assert await uow.payments.get("pay_1", for_update=True) is not None


async def test_an_unreachable_database_is_an_operational_error(postgres_url: str) -> None:
    # Nothing listens on port 1: what SQLAlchemy raises for a failed connect, which the API answers 503.
    async with pg_engine(postgres_url.replace("127.0.0.1:5432", "127.0.0.1:1")) as engine:
        with pytest.raises(OperationalError):
            async with UnitOfWork(engine).looking_up() as uow:
                await uow.payments.get("pay_1")


async def test_a_full_statement_pool_times_out_as_sqlalchemys_pool_does(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=1) as engine:
        engine.statements.acquire_timeout = 0.2
        held = await engine.statements.acquire()  # the one connection there is
        try:
            with pytest.raises(PoolTimeout):
                async with UnitOfWork(engine).looking_up() as uow:
                    await uow.payments.get("pay_1")
        finally:
            engine.statements.release(held)
        async with UnitOfWork(engine).looking_up() as uow:
            assert await uow.payments.get("pay_1") is None


async def test_the_statement_pool_belongs_to_one_event_loop_at_a_time(postgres_url: str) -> None:
    # As SQLAlchemy's pool: an engine is used on one event loop; disposed of there, it serves
    # another (another thread's asyncio.run, say), and never hands a connection across loops.
    secret_url = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")
    engine = db.create_engine(secret_url)
    assert isinstance(engine, db.PgEngine)

    async def lookup() -> None:
        async with UnitOfWork(engine).looking_up() as uow:
            assert await uow.payments.get("pay_1") is None

    async def lookup_then_dispose() -> None:
        await lookup()
        await engine.dispose()

    try:
        await lookup()
        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.to_thread(asyncio.run, lookup())
        await engine.dispose()
        await asyncio.to_thread(asyncio.run, lookup_then_dispose())
        await lookup()
        assert engine.statements.stats()["size"] == 1
        assert "s3cr3t" not in repr(engine.statements)
    finally:
        await engine.dispose()


# -- the pool's own bookkeeping ------------------------------------------------------------------


async def test_a_full_pool_serves_its_waiters_first_come_first_served(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:  # one connection on the statement pool
        statements = engine.statements
        held = await statements.acquire()
        order: list[str] = []

        async def wait(name: str) -> None:
            connection = await statements.acquire()
            order.append(name)
            assert connection is held  # handed on, not a second connection
            statements.release(connection)

        first = asyncio.create_task(wait("first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0.01)
        assert statements.stats() == {"size": 1, "idle": 0, "in_use": 1, "waiting": 2, "max_size": 1}
        statements.release(held)
        await asyncio.gather(first, second)
        assert order == ["first", "second"]
        assert statements.stats() == {"size": 1, "idle": 1, "in_use": 0, "waiting": 0, "max_size": 1}


async def test_a_waiter_that_gives_up_loses_no_connection_and_no_place(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:
        statements = engine.statements
        held = await statements.acquire()
        quitter = asyncio.create_task(statements.acquire())
        await asyncio.sleep(0.01)
        statements.release(held)  # handed to the waiter ...
        quitter.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await quitter
        assert statements.stats() == {"size": 1, "idle": 1, "in_use": 0, "waiting": 0, "max_size": 1}

        held = await statements.acquire()
        statements.acquire_timeout = 0.05
        with pytest.raises(TimeoutError):
            await statements.acquire()
        statements.release(held, discard=True)  # closed: its place is free again
        assert statements.stats()["size"] == 0
        again = await statements.acquire()
        assert again is not held
        statements.release(again)


async def test_a_place_freed_by_a_closed_connection_goes_to_the_waiter(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:
        statements = engine.statements
        held = await statements.acquire()
        waiter = asyncio.create_task(statements.acquire())
        await asyncio.sleep(0.01)
        statements.release(held, discard=True)
        fresh = await waiter  # opened in the freed place
        assert fresh is not held
        assert not fresh.is_closed()
        assert held.is_closed()
        assert statements.stats() == {"size": 1, "idle": 0, "in_use": 1, "waiting": 0, "max_size": 1}
        statements.release(fresh)


async def test_a_statement_cancelled_under_way_closes_its_connection(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:
        sleeping = PgStatement(select(func.pg_sleep(30).label("slept")))
        task = asyncio.create_task(sleeping.fetchrow_alone(engine, {}))
        [pid] = await running_pids(postgres_url, "SELECT pg_sleep(")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.statements.stats() == {"size": 0, "idle": 0, "in_use": 0, "waiting": 0, "max_size": 1}
        assert await statement_pool_pids(engine, at_least=1) != [pid]


async def test_expiry_closes_idle_connections_now_and_busy_ones_when_they_return(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=4) as engine:
        statements = engine.statements
        busy = await statements.acquire()
        idle = await statements.acquire()
        statements.release(idle)
        engine.connections_lost()
        assert idle.is_closed()
        assert not busy.is_closed()
        statements.release(busy)
        assert busy.is_closed()
        assert statements.stats()["size"] == 0


async def test_a_connection_idle_too_long_is_closed(postgres_url: str) -> None:
    async with pg_engine(postgres_url) as engine:
        statements = engine.statements
        statements.max_idle = 0.05
        old = await statements.acquire()
        statements.release(old)
        await asyncio.sleep(0.1)
        new = await statements.acquire()
        assert new is not old
        assert old.is_closed()
        statements.release(new)


async def test_closing_the_engine_fails_the_waiters_as_a_database_outage(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:
        held = await engine.statements.acquire()

        async def lookup() -> object:
            async with UnitOfWork(engine).looking_up() as uow:
                return await uow.payments.get("pay_1")

        waiting = asyncio.create_task(lookup())
        await asyncio.sleep(0.01)
        await engine.dispose()
        with pytest.raises(OperationalError):  # answered 503 by the API
            await waiting
        engine.statements.release(held)
        assert held.is_closed()
        assert engine.statements.stats()["size"] == 0


# -- plans ---------------------------------------------------------------------------------------


def scans(plan: dict[str, object]) -> list[dict[str, object]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    found = [plan]
    for child in plan.get("Plans", []):  # type: ignore[union-attr]
        found += scans(child)  # type: ignore[arg-type]
    return found


async def generic_probes(raw: Any, queries: list[str]) -> dict[str, dict[str, Any]]:
    """Each query's generic plan (as PostgreSQL uses it after a few runs of a prepared statement):
    the one index probe it makes, by the query."""
    probes: dict[str, dict[str, Any]] = {}
    await raw.execute("SET plan_cache_mode = force_generic_plan")
    for query in queries:
        await raw.execute(f"PREPARE lookup AS {query}")
        values = ", ".join("'x'" for _ in range(query.count("$")))
        [plan] = await raw.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE lookup({values})")  # json: decoded
        await raw.execute("DEALLOCATE lookup")
        [probe] = [node for node in scans(plan["Plan"]) if "Index Cond" in node]
        probes[query] = probe
    await raw.execute("RESET plan_cache_mode")
    return probes


async def test_a_lookup_by_id_is_one_primary_key_probe_even_with_a_generic_plan_on_an_unanalysed_table() -> None:
    # PostgreSQL plans a prepared statement once for any values after a few runs. On a table never
    # analysed (a new deployment, or thousands of rows written before autovacuum analyses them) it
    # costs every index the same and once chose the sub-merchant index for "id = $1 AND
    # sub_mch_id = $2": every GET read all of the sub-merchant's payments. By id the statement now
    # leaves the sub-merchant to the repository, and has one index to take whatever the statistics.
    # (By out_trade_no the unique key holds all three columns; unanalysed, the sub-merchant index can
    # still win that tie, until autovacuum analyses the table.)
    await require_postgres()
    url = await create_pg_database()
    try:
        await migrate(url)
        async with pg_engine(url, pool_size=2) as engine:  # one statement-pool connection: the one logged
            store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
            paid = payment(1)
            await add(store, paid, *(payment(n) for n in range(2, 300)))  # one sub-merchant's
            async with store.factory() as uow:
                await uow.refunds.add(refund(1, paid, 100))
                await uow.commit()
            logged: list[str] = []
            connection = await engine.statements.acquire()
            connection.add_query_logger(lambda record: logged.append(record.query))
            engine.statements.release(connection)
            async with UnitOfWork(engine).looking_up() as uow:  # what the API's reads run
                assert await uow.payments.get("pay_1", sub_mch_id=SUB1) is not None
                assert await uow.refunds.get("re_1", sub_mch_id=SUB1) is not None
            await asyncio.sleep(0.01)  # the logger is called soon after each query
            assert len(logged) == 2
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                for query, probe in (await generic_probes(raw, logged)).items():
                    assert probe["Index Name"] in ("pk_payments", "pk_refunds"), query
                    assert "Filter" not in probe, query
                await conn.rollback()
            async with UnitOfWork(engine).looking_up() as uow:  # the sub-merchant still checked
                assert await uow.payments.get("pay_1", sub_mch_id=SUB1) is not None
                assert await uow.payments.get("pay_1", sub_mch_id=SUB2) is None
    finally:
        await drop_pg_database(url)


async def test_a_connection_out_when_the_pool_closed_is_never_lent_again(postgres_url: str) -> None:
    async with pg_engine(postgres_url) as engine:
        statements = engine.statements
        out = await statements.acquire()
        await statements.close()  # as engine.dispose() with a statement still running
        fresh = await statements.acquire()  # the pool opens again on this loop
        assert fresh is not out
        statements.release(out)  # the one from before comes back: closed, not kept
        assert out.is_closed()
        statements.release(fresh)
        again = await statements.acquire()
        assert again is fresh
        statements.release(again)
        assert statements.stats() == {"size": 1, "idle": 1, "in_use": 0, "waiting": 0, "max_size": 10}


async def test_a_connection_handed_to_a_waiter_is_renewed_by_an_expiry_before_the_waiter_runs(
    postgres_url: str,
) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:  # one connection on the statement pool
        statements = engine.statements
        held = await statements.acquire()
        waiter = asyncio.create_task(statements.acquire())
        await asyncio.sleep(0.01)
        statements.release(held)  # handed to the waiter, which has not run yet ...
        engine.connections_lost()  # ... when the database is said to have lost its sessions
        handed = await waiter
        assert handed is held
        statements.release(handed)  # stale: closed, not kept
        assert held.is_closed()
        assert statements.stats()["size"] == 0


async def test_a_waiter_that_times_out_leaves_the_queue(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=2) as engine:
        statements = engine.statements
        statements.acquire_timeout = 0.01
        held = await statements.acquire()
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await statements.acquire()
        assert len(statements._waiters) == 0  # not kept until a connection comes back
        statements.release(held)


async def test_a_connect_that_times_out_is_an_operational_error_not_a_pool_timeout(postgres_url: str) -> None:
    # 192.0.2.1 (TEST-NET-1) would be a real timeout; a listener that never answers is one on loopback.
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = db.create_engine(postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}"))
    assert isinstance(engine, db.PgEngine)
    engine.statements._connect_args["timeout"] = 0.2  # asyncpg.connect's own (60 s by default)
    try:
        with pytest.raises(OperationalError):
            async with UnitOfWork(engine).looking_up() as uow:
                await uow.payments.get("pay_1")
    finally:
        await engine.dispose()
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def prepared_plans(connection: Any) -> dict[str, int]:
    """The statements prepared on ``connection`` -> how many times the server has planned each."""
    rows = await connection.fetch("SELECT statement, generic_plans + custom_plans AS plans FROM pg_prepared_statements")
    return {row["statement"]: row["plans"] for row in rows}


async def test_each_new_connection_has_planned_the_busy_lookups_before_it_is_lent(postgres_url: str) -> None:
    # The first plan of a statement in a backend loads the table's catalogue entries and statistics
    # (tens of milliseconds under load): done as the connection opens, not on a request's path, where
    # a gathered read would hold every request of its turn.
    async with pg_engine(postgres_url) as engine:
        connection = await engine.statements.acquire()
        try:
            plans = await prepared_plans(connection)
        finally:
            engine.statements.release(connection)
    gathered = {sql: n for sql, n in plans.items() if "unnest" in sql}
    by_id = {sql: n for sql, n in plans.items() if "unnest" not in sql and "WHERE payments.id = $1" in sql}
    assert {"payments", "refunds"} <= {table for sql in gathered for table in ("payments", "refunds") if table in sql}
    assert gathered
    assert all(n >= 1 for n in gathered.values())
    assert by_id
    assert all(n >= 1 for n in by_id.values())


async def test_a_warm_up_the_server_refuses_still_lends_the_connection() -> None:
    await require_postgres()
    url = await create_pg_database()  # no tables yet: every warm-up statement is refused
    try:
        async with pg_engine(url) as engine:
            connection = await engine.statements.acquire()
            try:
                assert await connection.fetchval("SELECT 41 + 1") == 42
                assert not connection.is_in_transaction()
            finally:
                engine.statements.release(connection)
            assert engine.statements.stats()["size"] == 1
    finally:
        await drop_pg_database(url)


async def test_fill_opens_the_whole_pool_at_once_and_keeps_it_idle(postgres_url: str) -> None:
    async with pg_engine(postgres_url, pool_size=8) as engine:
        statements = engine.statements
        assert await statements.fill() == 4
        assert statements.stats() == {"size": 4, "idle": 4, "in_use": 0, "waiting": 0, "max_size": 4}
        assert await statements.fill() == 0  # already full
        pids = await statement_pool_pids(engine)
        assert len(set(pids)) == 4
        connection = await statements.acquire()
        try:
            assert all(n >= 1 for n in (await prepared_plans(connection)).values())
        finally:
            statements.release(connection)


async def test_fill_raises_when_the_database_cannot_be_reached_and_leaves_the_pool_empty() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    async with pg_engine("postgresql+asyncpg://postgres@127.0.0.1:1/test", pool_size=4) as engine:
        with pytest.raises(ConnectionRefusedError):
            await engine.statements.fill()
        assert engine.statements.stats()["size"] == 0


async def test_the_service_opens_its_statement_pool_at_start_up(postgres_url: str) -> None:
    from tests.server.conftest import make_world

    async with make_world(postgres_url) as world:
        engine = world.service.state.container.engine
        assert isinstance(engine, db.PgEngine)
        stats = engine.statements.stats()
        assert stats["size"] == stats["max_size"] == stats["idle"]


async def test_the_service_starts_when_the_database_is_not_reachable_yet(caplog: pytest.LogCaptureFixture) -> None:
    from tests.server.conftest import make_world

    unreachable = "postgresql+asyncpg://postgres:not-logged@127.0.0.1:1/test"
    with caplog.at_level("WARNING", logger="minipay.server"):
        async with make_world(unreachable, run_migrations=False) as world:
            assert (await world.api.get("/healthz")).status_code == 200
            assert world.service.state.container.engine.statements.stats()["size"] == 0
    opened = [r.getMessage() for r in caplog.records if "statement pool not opened" in r.getMessage()]
    assert opened == [
        "statement pool not opened at start-up (ConnectionRefusedError): connections are made as requests need them"
    ]
    assert "not-logged" not in caplog.text
