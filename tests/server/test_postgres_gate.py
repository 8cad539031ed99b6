"""The PostgreSQL half of the suite skips without a server, and fails instead when it is required."""

from __future__ import annotations

import pytest

from tests.server import conftest

pytestmark = pytest.mark.anyio

NOWHERE = "postgresql+asyncpg://postgres@127.0.0.1:1/test"


async def test_without_postgres_the_tier_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "PG_ADMIN_URL", NOWHERE)
    monkeypatch.delenv("MINIPAY_REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is unreachable"):
        await conftest.require_postgres()


async def test_without_postgres_the_tier_fails_when_minipay_require_postgres_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conftest, "PG_ADMIN_URL", NOWHERE)
    monkeypatch.setenv("MINIPAY_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="MINIPAY_REQUIRE_POSTGRES=1"):
        await conftest.require_postgres()
