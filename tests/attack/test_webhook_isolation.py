"""One tenant's hanging webhook receiver must not stall anyone else (finding 2): deliveries run
concurrently with a bound, each attempt has a deadline, an endpoint that keeps failing is paused by
its circuit breaker, and webhook delivery never delays the payment jobs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from minipay.server import db
from minipay.server.webhooks import DeliveryLimits, deliver_webhooks
from minipay.server.worker import Worker, WorkerConfig
from tests.server.conftest import SUB1, SUB2, World, make_world
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.anyio

DEADLINE = 2.0  # webhook_timeout in these worlds: a whole attempt, in real seconds


class ByHost:
    """Webhook receivers by host name: ``http://<name>.example/hooks``."""

    def __init__(self, **receivers: Receiver) -> None:
        self.receivers = receivers
        self.apps = {f"{name}.example": r.app() for name, r in receivers.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = dict(scope["headers"])[b"host"].decode().split(":")[0]
        await self.apps[host](scope, receive, send)


@contextlib.asynccontextmanager
async def two_tenants(database_url: str, **overrides: Any) -> AsyncIterator[tuple[World, Receiver, Receiver]]:
    hanging, healthy = Receiver(delay=60.0), Receiver()
    hosts = ByHost(hang=hanging, ok=healthy)
    async with make_world(database_url, webhook_app=hosts, webhook_timeout=DEADLINE, **overrides) as world:
        for who, name in ((SUB1, "hang"), (SUB2, "ok")):
            url = f"http://{name}.example/hooks"
            response = await world.api.post("/v1/webhook-endpoints", json={"url": url}, headers=world.auth(who))
            assert response.status_code == 201, response.text
        yield world, hanging, healthy


async def arrival(receiver: Receiver, within: float) -> float:
    """Real seconds until ``receiver`` has finished handling a request (fails after ``within``)."""
    started = time.perf_counter()
    while not receiver.received:
        assert time.perf_counter() - started < within, "the healthy receiver got nothing in time"
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def test_a_hanging_receiver_does_not_delay_another_tenants_webhook(database_url: str) -> None:
    # The app's dispatcher: five events to the hanging receiver first, then one to the healthy one.
    async with two_tenants(database_url, webhook_dispatch=True, webhook_dispatch_interval=0.05) as (
        world,
        hanging,
        healthy,
    ):
        for _ in range(5):
            await world.pay(await world.create_payment(SUB1))
        await asyncio.sleep(0.2)  # the dispatcher is now inside the hanging receiver
        assert hanging.arrivals == 2  # at most two in flight to one endpoint (webhook_per_endpoint)
        await world.pay(await world.create_payment(SUB2))
        assert await arrival(healthy, within=DEADLINE / 2) < 0.5  # its normal time, not after the hang


async def test_a_hanging_receiver_never_delays_the_payment_jobs(database_url: str) -> None:
    # Finding 2: a lost-notification recovery took ~100 s instead of ~60 s behind a hanging receiver.
    async with two_tenants(database_url) as (world, hanging, healthy):
        for _ in range(4):
            await world.pay(await world.create_payment(SUB1))
        lost = await world.create_payment(SUB2)
        paid = await world.wx.post("/sandbox/pay", json={**lost["pay_params"], "outcome": "success", "notify": "never"})
        assert paid.status_code == 200, paid.text
        worker = Worker.from_container(world.container, config=WorkerConfig(poll_interval=0.05, bills=False))
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run_forever(stop))  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0.3)
            assert hanging.arrivals == 2  # the worker is delivering to the hanging receiver
            await world.advance(61)  # the active query of the lost payment is due now
            started = time.perf_counter()
            while (await world.get(lost["id"], SUB2))["status"] != "succeeded":
                assert time.perf_counter() - started < DEADLINE / 2, "the active query waited for the webhooks"
                await asyncio.sleep(0.02)
            # ... and its webhook reaches the healthy receiver at once too.
            assert await arrival(healthy, within=DEADLINE / 2) < DEADLINE / 2
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=DEADLINE + 3)


async def test_an_attempt_is_cut_off_at_its_deadline(database_url: str) -> None:
    async with two_tenants(database_url) as (world, _hanging, _):
        await world.pay(await world.create_payment(SUB1))
        started = time.perf_counter()
        limits = DeliveryLimits(deadline=0.3)
        assert (
            await deliver_webhooks(
                world.container.uow_factory, world.container.webhook_sender, world.clock, limits=limits
            )
            == 1
        )
        assert time.perf_counter() - started < 2
        event = (await world.api.get("/v1/events", headers=world.auth(SUB1))).json()["data"][0]
        found = (await world.api.get(f"/v1/events/{event['id']}", headers=world.auth(SUB1))).json()
        (attempt,) = found["deliveries"][0]["attempts"]
        assert attempt["error"].startswith("TimeoutError")


async def _breaker(world: World, endpoint_url: str) -> tuple[int, Any]:
    w = db.webhook_endpoints
    async with world.container.engine.connect() as conn:
        row = (await conn.execute(select(w.c.failure_streak, w.c.open_until).where(w.c.url == endpoint_url))).one()
    return row[0], row[1]


async def test_an_endpoint_that_keeps_failing_is_paused_with_a_growing_pause_and_others_go_on(
    database_url: str,
) -> None:
    failing, healthy = Receiver(status=500), Receiver()
    hosts = ByHost(bad=failing, ok=healthy)
    limits = DeliveryLimits(breaker_threshold=2, per_endpoint=10)
    async with make_world(database_url, webhook_app=hosts) as world:
        for who, name in ((SUB1, "bad"), (SUB2, "ok")):
            url = f"http://{name}.example/hooks"
            assert (
                await world.api.post("/v1/webhook-endpoints", json={"url": url}, headers=world.auth(who))
            ).is_success

        async def deliver() -> int:
            return await deliver_webhooks(
                world.container.uow_factory, world.container.webhook_sender, world.clock, limits=limits
            )

        for _ in range(3):
            await world.pay(await world.create_payment(SUB1))
        assert await deliver() == 3  # three failures: the breaker opens (threshold 2)
        streak, open_until = await _breaker(world, "http://bad.example/hooks")
        assert streak == 3
        assert open_until == world.clock.now() + limits.breaker_pause * 2
        await world.advance(60)  # the deliveries' backoff (1 min) is over, the breaker's pause (2 min) is not
        await world.pay(await world.create_payment(SUB2))
        assert await deliver() == 1  # only the healthy endpoint's
        assert len(healthy.received) == 1
        assert failing.arrivals == 3
        await world.advance(61)  # the pause is over: the next attempts are made; failing again, it grows
        assert await deliver() == 3
        streak, open_until = await _breaker(world, "http://bad.example/hooks")
        assert streak == 6
        assert open_until == world.clock.now() + limits.breaker_pause * 16
        # A success closes it.
        failing.status = 200
        await world.advance(16 * 60)
        await world.advance(30 * 60)
        assert await deliver() == 3
        assert await _breaker(world, "http://bad.example/hooks") == (0, None)
