"""Fixtures of the service tier: a database (a SQLite file, PostgreSQL, or the in-memory unit of work of
``fakes.py``), the sandbox in-process, the service in-process, and a webhook receiver — all wired by
transports.

A test taking ``world`` runs on SQLite and on PostgreSQL. One whose subject is the service's rules
rather than the database's behaviour runs once, on the fake unit of work: ``@on_the_fake``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from minipay.sandbox import SandboxConfig
from minipay.sandbox import create_app as create_sandbox_app
from minipay.serve import sandbox_settings
from minipay.server import db
from minipay.server.adapters import OffsetClock
from minipay.server.api import create_app
from minipay.server.bootstrap import build_container
from minipay.server.migrations import upgrade
from minipay.server.services import Services
from minipay.server.settings import Settings
from tests.profiles import LENIENT
from tests.server.fakes import FakeDatabase
from tests.webhook_receiver import Receiver

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
START = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 China time

SUB1 = "1900000110"  # HKD, mini program wx1234567890abcdef (sandbox default world)
SUB2 = "1900000111"  # JPY, mini program wx2234567890abcdef
KEYS = {
    "admin": "adm_" + "a" * 36,
    SUB1: "sk_one_" + "1" * 33,
    SUB2: "sk_two_" + "2" * 33,
}
TABLES = ("payments", "refunds", "payment_events", "outbox_events", "webhook_deliveries", "idempotency_keys")

#: The ``database_url`` of a world on the in-memory unit of work (``fakes.py``) instead of a database.
FAKE = "fake"
#: For a test whose subject is the service's rules (transitions, amounts, idempotency, what is refused):
#: run it once, on the fake unit of work, instead of on both databases.
on_the_fake = pytest.mark.parametrize("database_url", [FAKE])


async def _pg_reachable() -> str | None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()


async def create_pg_database() -> str:
    """A fresh, empty database; returns its URL."""
    name = "minipay_t_" + secrets.token_hex(6)
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def require_postgres() -> None:
    problem = await _pg_reachable()
    if problem is None:
        return
    message = f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) is unreachable: {problem}"
    if os.environ.get("MINIPAY_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " — and MINIPAY_REQUIRE_POSTGRES=1")
    pytest.skip(message)


_PG_SESSION: dict[str, str] = {}


@pytest.fixture(scope="session")
def _pg_session() -> Iterator[dict[str, str]]:
    """One PostgreSQL database per test session (created on first use, dropped at the end)."""
    yield _PG_SESSION
    url = _PG_SESSION.pop("url", None)
    if url is not None:
        asyncio.run(drop_pg_database(url))


async def migrate(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def fresh_pg_url(session: dict[str, str]) -> str:
    """The session's database (migrated when it is created), emptied: every row of every table deleted
    and the sequences restarted."""
    await require_postgres()
    if "url" not in session:
        url = await create_pg_database()
        await migrate(url)
        session["url"] = url
        return url
    engine = create_async_engine(session["url"])
    try:
        async with engine.begin() as conn:
            # DELETE rather than TRUNCATE: on tables of a few rows it is ten times faster. Triggers (the
            # foreign-key checks) are off until the commit, so the order of the tables does not matter.
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            tables = await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
            )
            for name in tables.scalars().all():
                await conn.execute(text(f'DELETE FROM "{name}"'))
            sequences = await conn.execute(text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"))
            for name in sequences.scalars().all():
                await conn.execute(text(f'ALTER SEQUENCE "{name}" RESTART'))
    finally:
        await engine.dispose()
    return session["url"]


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Where the session's migrated SQLite database is made (on first use)."""
    return {"path": tmp_path_factory.mktemp("template") / "minipay.db"}


async def fresh_sqlite_url(template: dict[str, Path], path: Path) -> str:
    """A copy of the session's migrated database at ``path`` (copying a file is much faster than migrating)."""
    if "migrated" not in template:
        await migrate(f"sqlite+aiosqlite:///{template['path']}")
        template["migrated"] = template["path"]
    shutil.copyfile(template["path"], path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_session: dict[str, str], _sqlite_template: dict[str, Path]
) -> str:
    """The same suite on SQLite (a fresh file per test, copied from a migrated one) and on PostgreSQL
    (one database per session, emptied before every test). ``@on_the_fake`` replaces it by :data:`FAKE`."""
    if request.param == "sqlite":
        return await fresh_sqlite_url(_sqlite_template, tmp_path / "minipay.db")
    return await fresh_pg_url(_pg_session)


@dataclass
class World:
    """The sandbox, the service and a webhook receiver, wired in-process."""

    settings: Settings
    service: Any
    sandbox: Any
    api: httpx2.AsyncClient  # to the service
    wx: httpx2.AsyncClient  # to the sandbox (control API)
    clock: OffsetClock
    receiver: Receiver
    fake: FakeDatabase | None = None  # the store of a world on the fake unit of work

    @property
    def container(self) -> Any:
        return self.service.state.container

    def auth(self, who: str = SUB1) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[who]}"}

    async def advance(self, seconds: float) -> None:
        """Move both clocks: the sandbox's (which runs every due notification) and the service's."""
        self.clock.advance(seconds)
        response = await self.wx.post("/sandbox/clock", json={"advance": seconds})
        assert response.status_code == 200, response.text

    async def login(self, who: str = SUB1, user: str = "alice") -> str:
        sub_appid = self.settings.sub_merchant(who).sub_appid  # type: ignore[union-attr]
        code = (await self.wx.post("/sandbox/login", json={"appid": sub_appid, "user": user})).json()["code"]
        response = await self.api.post("/v1/sessions", json={"code": code}, headers=self.auth(who))
        assert response.status_code == 200, response.text
        openid: str = response.json()["openid"]
        return openid

    async def create_payment(self, who: str = SUB1, **overrides: Any) -> dict[str, Any]:
        openid = overrides.pop("openid", None) or await self.login(who)
        body = {"amount": 1000, "currency": "HKD" if who in (SUB1, "admin") else "JPY", "description": "Coffee"}
        body.update(overrides)
        body["openid"] = openid
        headers = self.auth(who)
        if "idempotency_key" in body:
            headers["Idempotency-Key"] = body.pop("idempotency_key")
        response = await self.api.post("/v1/payments", json=body, headers=headers)
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        return payment

    async def pay(self, payment: dict[str, Any], outcome: str = "success") -> dict[str, Any]:
        response = await self.wx.post("/sandbox/pay", json={**payment["pay_params"], "outcome": outcome})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def get(self, payment_id: str, who: str = SUB1) -> dict[str, Any]:
        response = await self.api.get(f"/v1/payments/{payment_id}", headers=self.auth(who))
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def snapshot(self, tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the given tables, to assert that something changed nothing."""
        if self.fake is not None:
            return self.fake.snapshot(tables)
        out: dict[str, list[tuple[Any, ...]]] = {}
        async with self.container.engine.connect() as conn:
            for name in tables:
                table = db.metadata.tables[name]
                rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
                out[name] = [tuple(r) for r in rows]
        return out

    async def count(self, table: str, **where: Any) -> int:
        """How many committed rows of ``table`` have the given column values."""
        if self.fake is not None:
            return self.fake.count(table, **where)
        t = db.metadata.tables[table]
        query = select(func.count()).select_from(t)
        for name, value in where.items():
            query = query.where(t.c[name] == value)
        async with self.container.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


def build_settings(database_url: str, *, sign_type: str = "MD5", **overrides: Any) -> Settings:
    settings = sandbox_settings(
        SandboxConfig.default(),
        sandbox_url="http://sandbox",
        service_url="http://minipay.test",
        database_url=database_url,
        keys=KEYS,
    )
    # No SDK-level retries in tests: every fault reaches the service as it is (and no real sleeps).
    institutions = [
        inst.model_copy(update={"max_retries": 0, "sign_type": sign_type}) for inst in settings.institutions
    ]
    return settings.model_copy(update={"webhook_dispatch": False, "institutions": institutions, **overrides})


@contextlib.asynccontextmanager
async def make_world(
    database_url: str, *, webhook_app: Any = None, sandbox_config: SandboxConfig | None = None, **overrides: Any
) -> AsyncIterator[World]:
    """``database_url``: a database, or :data:`FAKE` for the in-memory unit of work; ``webhook_app``: the
    ASGI app webhooks are delivered to (default: the world's one receiver); ``sandbox_config``: the
    in-process sandbox's world (default :data:`LENIENT`)."""
    fake = FakeDatabase() if database_url == FAKE else None
    if fake is not None:
        # Everything the service layer stores goes through the fake (the container's engine is never
        # connected). The readiness ping, the backlog gauges and the console's read model are not part of
        # the service layer's port: on the fake, readiness says "down" and the console cannot list.
        database_url = "sqlite+aiosqlite:///:memory:"
        overrides.setdefault("run_migrations", False)
    settings = build_settings(database_url, **overrides)
    clock = OffsetClock(START, frozen=True)
    receiver = Receiver()
    # The two apps call each other: give the sandbox a transport whose app is set just after.
    to_service = httpx2.ASGITransport(app=Starlette())
    sandbox = create_sandbox_app(sandbox_config or LENIENT, seed=7, start=START, notify_transport=to_service)
    container = build_container(
        settings,
        clock=clock,
        wechat_transport=httpx2.ASGITransport(app=sandbox),
        webhook_transport=httpx2.ASGITransport(app=webhook_app or receiver.app()),
    )
    if fake is not None:
        services = Services(settings=settings, uow_factory=fake.unit_of_work, gateway=container.gateway, clock=clock)
        container = dataclasses.replace(container, uow_factory=fake.unit_of_work, services=services)
    service = create_app(settings, container=container)
    to_service.app = service
    async with (
        service.router.lifespan_context(service),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=service), base_url="http://minipay.test") as api,
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sandbox), base_url="http://sandbox") as wx,
    ):
        yield World(settings, service, sandbox, api, wx, clock, receiver, fake)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with make_world(database_url) as w:
        yield w


@pytest.fixture
async def postgres_url(_pg_session: dict[str, str]) -> str:
    """PostgreSQL only (skips without a server, fails under MINIPAY_REQUIRE_POSTGRES=1)."""
    return await fresh_pg_url(_pg_session)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def later(seconds: int) -> datetime:
    return START + timedelta(seconds=seconds)
