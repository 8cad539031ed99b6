"""PostgreSQL's statement pool (``minipay.server._postgres``): statements that run alone in
autocommit (key lookups, the one statement of a unit of work that writes at commit) on asyncpg's own
pool, beside SQLAlchemy's; what they read, how they fail, and how the two pools recover together."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import Integer, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import create_async_engine

from minipay.server import db
from minipay.server.domain import Payment, PaymentStatus
from minipay.server.repositories._pg import PgStatement
from minipay.server.uow import ConcurrentUpdate, UnitOfWork
from tests.server.conftest import START, SUB1
from tests.server.test_unit_of_work import Store, add, payment

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


def sqlalchemy_pool_connections(engine: db.PgEngine) -> int:
    pool = engine.sync_engine.pool
    return int(pool.checkedin() + pool.checkedout())  # type: ignore[attr-defined]


async def terminate_sessions(url: str, pids: list[int], *, wait: bool = False) -> None:
    """End those server sessions; with ``wait``, return once they are gone and the client side
    had a moment to read that (as after a restart, which takes longer than that)."""
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
                    await asyncio.sleep(0.05)
                    break
                await asyncio.sleep(0.02)
    finally:
        await admin.dispose()


async def statement_pool_pids(engine: db.PgEngine, at_least: int = 0) -> list[int]:
    """The server pids of the statement pool's connections (making ``at_least`` of them)."""
    pool = await engine.statements.pool()
    held = [await pool.acquire() for _ in range(max(at_least, pool.get_size()))]
    try:
        return [connection.get_server_pid() for connection in held]
    finally:
        for connection in held:
            await pool.release(connection)


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
    engine = db.create_engine(postgres_url)
    assert isinstance(engine, db.PgEngine)
    try:
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
    finally:
        await engine.dispose()
    assert engine.statements.stats()["size"] == 0


async def test_a_save_at_commit_on_the_statement_pool_keeps_its_version_check(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url)
    assert isinstance(engine, db.PgEngine)
    try:
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
    finally:
        await engine.dispose()


async def test_the_servers_refusal_on_the_statement_pool_is_sqlalchemys_error_and_keeps_the_connection(
    postgres_url: str,
) -> None:
    engine = db.create_engine(postgres_url, pool_size=2)  # one connection on the statement pool
    assert isinstance(engine, db.PgEngine)
    try:
        await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), payment(1))
        [pid] = await statement_pool_pids(engine, at_least=1)
        with pytest.raises(IntegrityError) as caught:  # what uow.retrying takes for a lost race
            await add_at_commit(engine, payment(1))  # the same id again
        assert getattr(caught.value.orig, "sqlstate", None) == "23505"
        with pytest.raises(DBAPIError):  # a value the driver refuses before sending anything
            await PgStatement(select(func.abs(bindparam("n", type_=Integer)))).fetchrow_alone(engine, {"n": "x"})
        assert await statement_pool_pids(engine) == [pid]  # the same connection serves on
    finally:
        await engine.dispose()


async def test_connections_the_server_dropped_while_idle_are_replaced_without_a_failure(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url)
    assert isinstance(engine, db.PgEngine)
    try:
        await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), payment(1))
        assert await statement_pool_pids(engine) == []  # no lookup yet: the pool made no connection
        pids = await statement_pool_pids(engine, at_least=3)
        await terminate_sessions(postgres_url, pids, wait=True)  # as a database restart does
        for _ in range(4):  # asyncpg's pool sees each closed connection at checkout and makes another
            async with UnitOfWork(engine).looking_up() as uow:
                assert await uow.payments.get("pay_1") is not None
        assert not set(await statement_pool_pids(engine)) & set(pids)
    finally:
        await engine.dispose()


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
    engine = db.create_engine(postgres_url, pool_size=4)
    assert isinstance(engine, db.PgEngine)
    sleeping = PgStatement(select(func.pg_sleep(30).label("slept")))
    try:
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
    finally:
        await engine.dispose()


async def test_an_unreachable_database_is_an_operational_error(postgres_url: str) -> None:
    # Nothing listens on port 1: what SQLAlchemy raises for a failed connect, which the API answers 503.
    engine = db.create_engine(postgres_url.replace("127.0.0.1:5432", "127.0.0.1:1"))
    try:
        with pytest.raises(OperationalError):
            async with UnitOfWork(engine).looking_up() as uow:
                await uow.payments.get("pay_1")
    finally:
        await engine.dispose()


async def test_a_full_statement_pool_times_out_as_sqlalchemys_pool_does(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url, pool_size=1)
    assert isinstance(engine, db.PgEngine)
    engine.statements.acquire_timeout = 0.2
    try:
        pool = await engine.statements.pool()
        held = await pool.acquire()  # the one connection there is
        try:
            with pytest.raises(PoolTimeout):
                async with UnitOfWork(engine).looking_up() as uow:
                    await uow.payments.get("pay_1")
        finally:
            await pool.release(held)
        async with UnitOfWork(engine).looking_up() as uow:
            assert await uow.payments.get("pay_1") is None
    finally:
        await engine.dispose()


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
