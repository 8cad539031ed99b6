"""Fixtures of the service tier: a real database (SQLite file, or a fresh PostgreSQL database per test),
the sandbox in-process, the service in-process, and a webhook receiver — all wired by transports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from minipay.sandbox import SandboxConfig
from minipay.sandbox import create_app as create_sandbox_app
from minipay.serve import sandbox_settings
from minipay.server import db
from minipay.server.adapters import OffsetClock
from minipay.server.api import create_app
from minipay.server.settings import Settings
from tests.profiles import LENIENT
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


async def fresh_pg_url(session: dict[str, str]) -> str:
    """The session's database, emptied: every table truncated (the schema stays migrated)."""
    await require_postgres()
    if "url" not in session:
        session["url"] = await create_pg_database()
        return session["url"]
    engine = create_async_engine(session["url"])
    try:
        async with engine.begin() as conn:
            names = (
                (
                    await conn.execute(
                        text(
                            "SELECT tablename FROM pg_tables"
                            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                        )
                    )
                )
                .scalars()
                .all()
            )
            if names:
                await conn.execute(text(f"TRUNCATE {', '.join(f'{n!s}' for n in names)} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()
    return session["url"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path, _pg_session: dict[str, str]) -> str:
    """The same suite on SQLite (a fresh file per test) and on PostgreSQL (a fresh database per session,
    emptied before every test)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}"
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
        out: dict[str, list[tuple[Any, ...]]] = {}
        async with self.container.engine.connect() as conn:
            for name in tables:
                table = db.metadata.tables[name]
                rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
                out[name] = [tuple(r) for r in rows]
        return out


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
    """``webhook_app``: the ASGI app webhooks are delivered to (default: the world's one receiver);
    ``sandbox_config``: the in-process sandbox's world (default :data:`LENIENT`)."""
    settings = build_settings(database_url, **overrides)
    clock = OffsetClock(START, frozen=True)
    receiver = Receiver()
    # The two apps call each other: give the sandbox a transport whose app is set just after.
    to_service = httpx2.ASGITransport(app=Starlette())
    sandbox = create_sandbox_app(sandbox_config or LENIENT, seed=7, start=START, notify_transport=to_service)
    service = create_app(
        settings,
        clock=clock,
        wechat_transport=httpx2.ASGITransport(app=sandbox),
        webhook_transport=httpx2.ASGITransport(app=webhook_app or receiver.app()),
    )
    to_service.app = service
    async with (
        service.router.lifespan_context(service),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=service), base_url="http://minipay.test") as api,
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=sandbox), base_url="http://sandbox") as wx,
    ):
        yield World(settings, service, sandbox, api, wx, clock, receiver)


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
