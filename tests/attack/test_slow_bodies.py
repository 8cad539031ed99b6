"""Slow bodies (finding 8): a client may take only so long to send a body, notification bodies are
read only so many at once, and the service stays responsive meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.conftest import World, make_world

pytestmark = pytest.mark.anyio

NOTIFY_TIMEOUT = 0.5
REQUEST_TIMEOUT = 0.8
MAX_READS = 10


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[World]:
    async with make_world(
        f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
        notify_read_timeout=NOTIFY_TIMEOUT,
        request_read_timeout=REQUEST_TIMEOUT,
        notify_max_concurrent_reads=MAX_READS,
    ) as world:
        yield world


async def dribble(first: bytes) -> AsyncIterator[bytes]:
    """A body that starts and then never finishes (the sender keeps the connection open)."""
    yield first
    await asyncio.sleep(60)
    yield b"</xml>"


async def test_slow_notification_bodies_are_cut_off_and_bounded_while_healthz_stays_fast(guarded: World) -> None:
    world = guarded

    async def slow(n: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = await world.api.post(
            "/wechatpay/notify/payment", content=dribble(b"<xml><return_code>SUCCESS"), headers={"X-N": str(n)}
        )
        assert "<return_code><![CDATA[FAIL]]></return_code>" in response.text
        return response.status_code, time.perf_counter() - started

    senders = [asyncio.create_task(slow(n)) for n in range(30)]
    await asyncio.sleep(0.1)
    health = []
    for _ in range(5):
        started = time.perf_counter()
        assert (await world.api.get("/healthz")).status_code == 200
        health.append(time.perf_counter() - started)
    results = await asyncio.wait_for(asyncio.gather(*senders), timeout=NOTIFY_TIMEOUT + 3)
    timed_out = [seconds for status, seconds in results if status == 408]
    refused = [seconds for status, seconds in results if status == 503]
    assert len(timed_out) == MAX_READS  # read at most MAX_READS at once, each for at most the timeout
    assert len(refused) == 30 - MAX_READS  # the others answered FAIL at once (WeChat retries)
    assert max(timed_out) < NOTIFY_TIMEOUT + 1
    assert max(refused) < NOTIFY_TIMEOUT
    assert max(health) < 0.2
    # The slots are free again: a real notification is read and answered.
    payment = await world.create_payment()
    paid = await world.pay(payment)
    assert paid
    assert (await world.get(payment["id"]))["status"] == "succeeded"


async def test_a_slow_api_body_gets_408_after_the_request_read_timeout(guarded: World) -> None:
    world = guarded
    started = time.perf_counter()
    response = await asyncio.wait_for(
        world.api.post(
            "/v1/payments",
            content=dribble(b'{"amount": 1'),
            headers={**world.auth(), "Content-Type": "application/json"},
        ),
        timeout=REQUEST_TIMEOUT + 3,
    )
    assert response.status_code == 408, response.text
    assert response.json()["error"]["code"] == "request_timeout"
    assert time.perf_counter() - started < REQUEST_TIMEOUT + 1


async def test_a_body_that_arrives_in_pieces_within_the_deadline_is_read(guarded: World) -> None:
    world = guarded

    async def pieces() -> AsyncIterator[bytes]:
        for part in (b'{"url": "http://hooks.', b'example/h"}'):
            await asyncio.sleep(REQUEST_TIMEOUT / 4)
            yield part

    response = await world.api.post(
        "/v1/webhook-endpoints", content=pieces(), headers={**world.auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
