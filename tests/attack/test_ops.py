"""The operations surface: metric label cardinality, /metrics and the API description switched off or
behind a key, and clients that hang up half-way through a body."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.server.conftest import World, make_world

pytestmark = pytest.mark.anyio

OPS_KEY = "ops_key_0123456789abcdef"
OPS_PAGES = ["/metrics", "/openapi.json", "/docs", "/redoc"]


@pytest.fixture
async def sqlite_world(tmp_path: Path) -> AsyncIterator[World]:
    async with make_world(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}") as w:
        yield w


async def test_junk_methods_do_not_grow_the_metric_labels(sqlite_world: World) -> None:
    # Finding 6: every method token became a label value; 3,000 junk requests grew /metrics 15-fold.
    world = sqlite_world

    async def junk(first: int) -> str:
        for n in range(first, first + 100):
            await world.api.request(f"JUNK{n}", "/healthz")
            await world.api.request(f"X{n}", f"/no/such/{n}")
        return (await world.api.get("/metrics")).text

    await junk(1000)  # the first scrape's own series appear from the second on
    once = await junk(0)
    twice = await junk(100)
    assert "JUNK" not in twice
    assert "X1" not in twice
    assert 'minipay_http_requests_total{method="other",route="/healthz",status="405"} 300.0' in twice
    assert 'minipay_http_requests_total{method="other",route="other",status="404"} 300.0' in twice
    assert len(twice.splitlines()) == len(once.splitlines())  # new junk, no new series


async def test_metrics_and_docs_can_be_turned_off(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    async with make_world(url, metrics_enabled=False, docs_enabled=False) as world:
        for page in OPS_PAGES:
            assert (await world.api.get(page)).status_code == 404, page
        assert (await world.api.get("/healthz")).status_code == 200


async def test_metrics_and_docs_behind_an_ops_key(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    async with make_world(url, ops_api_keys=[SecretStr(OPS_KEY)]) as world:
        for page in OPS_PAGES:
            for headers in ({}, world.auth(), {"Authorization": f"Bearer {OPS_KEY}x"}, {"Authorization": OPS_KEY}):
                response = await world.api.get(page, headers=headers)
                assert response.status_code == 401, (page, headers)
                assert response.json()["error"]["code"] == "unauthorized"
            ok = await world.api.get(page, headers={"Authorization": f"Bearer {OPS_KEY}"})
            assert ok.status_code == 200, page
        # The payment API does not take the ops key.
        assert (await world.api.get("/v1/payments", headers={"Authorization": f"Bearer {OPS_KEY}"})).status_code == 401


async def _hang_up_mid_body(app: Any, path: str) -> list[dict[str, Any]]:
    """Send half a body to ``path`` and then the disconnect, as a client that goes away does."""
    messages = iter(
        [
            {"type": "http.request", "body": b"<xml><return_code>SUC", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"minipay.test"), (b"content-type", b"text/xml"), (b"content-length", b"500")],
        "client": ("127.0.0.1", 40000),
        "server": ("minipay.test", 80),
        "app": app,
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("kind", ["payment", "refund"])
async def test_a_client_hanging_up_mid_body_is_a_debug_line_not_an_error(
    sqlite_world: World, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # Finding 5: each disconnect logged ERROR with two tracebacks, no authentication needed.
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            sent = await _hang_up_mid_body(sqlite_world.service, f"/wechatpay/notify/{kind}")
            # Observed as the client's failure (a 400 nobody reads), not as a 500 of the service.
            assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert any("disconnected" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
