"""Replicas started with ``uvicorn --factory minipay.server.asgi:app_from_env`` serve the worker's read API."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from minipay.server import api
from minipay.server.asgi import app_from_env


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    """The factory freezes the process's heap for the garbage collector (it is the last step before
    serving); this process goes on running tests, so it is thawed again after each."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.anyio
async def test_app_from_env_serves_the_reconciliation_and_queue_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "minipay.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{(tmp_path / "m.db").as_posix()}"\n')
    monkeypatch.setenv("MINIPAY_CONFIG", str(config))
    app = app_from_env()
    # Everything the process holds once the app is built is out of the full collections' walk.
    assert gc.get_freeze_count() > 10_000
    try:
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://service") as http:
            for path in ("/v1/reconciliation/2026-03-02", "/v1/worker/jobs"):
                r = await http.get(path)  # no key: the route is there and asks for one (404 when not mounted)
                assert r.status_code == 401, (path, r.text)
    finally:
        await app.state.container.aclose()


def test_the_old_factory_path_still_builds_the_same_app_with_a_deprecation_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "minipay.toml"
    config.write_text(f'database_url = "sqlite+aiosqlite:///{(tmp_path / "m.db").as_posix()}"\n')
    monkeypatch.setenv("MINIPAY_CONFIG", str(config))
    with pytest.warns(DeprecationWarning, match=r"minipay\.server\.asgi:app_from_env"):
        old = api.app_from_env()
    new = app_from_env()
    assert sorted(old.openapi()["paths"]) == sorted(new.openapi()["paths"])
