"""Webhooks: one outbox row per logical event, signed deliveries, retries with backoff, a delivery log."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from minipay.protocol import decode_xml
from minipay.server import db
from minipay.server.webhooks import (
    DELIVERY_WINDOW,
    WebhookDispatcher,
    WebhookSignatureError,
    backoff,
    deliver_webhooks,
    delivery_log,
    sign_webhook,
    verify_webhook,
)
from tests.server.conftest import FAKE, SUB1, SUB2, World, make_world, on_the_fake
from tests.server.test_notifications import notification, post_notify

pytestmark = pytest.mark.anyio


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = sign_webhook(b'{"a":1}', "whsec_x", 1700000000)
    assert (
        header == "t=1700000000,v1=" + __import__("hmac").new(b"whsec_x", b'1700000000.{"a":1}', "sha256").hexdigest()
    )
    assert verify_webhook(b'{"a":1}', header, "whsec_x", now=1700000100) == 1700000000
    with pytest.raises(WebhookSignatureError):
        verify_webhook(b'{"a":2}', header, "whsec_x", now=1700000000)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(b'{"a":1}', header, "whsec_y", now=1700000000)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(b'{"a":1}', header, "whsec_x", now=1700000000 + 301)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(b'{"a":1}', "garbage", "whsec_x", now=1700000000)


def test_backoff_grows_and_the_schedule_covers_three_days() -> None:
    delays = [backoff(n) for n in range(1, 20)]
    assert delays == sorted(delays)
    assert delays[0] == timedelta(minutes=1)
    assert sum(delays, timedelta()) > DELIVERY_WINDOW


async def endpoint(world: World, who: str = SUB1, url: str = "http://merchant.test/hooks") -> str:
    response = await world.api.post("/v1/webhook-endpoints", json={"url": url}, headers=world.auth(who))
    assert response.status_code == 201
    secret: str = response.json()["secret"]
    return secret


async def deliver(world: World) -> int:
    return await deliver_webhooks(world.container.uow_factory, world.container.webhook_sender, world.clock)


@on_the_fake
async def test_failed_deliveries_are_retried_with_backoff_and_logged(world: World) -> None:
    secret = await endpoint(world)
    payment = await world.create_payment()
    await world.pay(payment)
    world.receiver.status = 500
    assert await deliver(world) == 1
    assert await deliver(world) == 0  # not due yet
    world.clock.advance(59)
    assert await deliver(world) == 0
    world.clock.advance(2)
    assert await deliver(world) == 1  # second attempt after 1 minute
    world.receiver.status = 200
    world.clock.advance(301)
    assert await deliver(world) == 1
    world.clock.advance(10 * 3600)
    assert await deliver(world) == 0  # delivered: never again
    bodies = [body for _, body in world.receiver.received]
    assert len(bodies) == 3
    assert len({json.loads(b)["id"] for b in bodies}) == 1  # the same event id every time: receivers dedupe
    for headers, body in world.receiver.received:
        verify_webhook(body, headers["minipay-signature"], secret, now=int(headers["minipay-signature"][2:12]))
    [event] = (await world.api.get("/v1/events", headers=world.auth())).json()["data"]
    event_id = event["id"]
    log = await delivery_log(world.container.uow_factory, event_id)
    assert [a["status_code"] for a in log[0]["attempts"]] == [500, 500, 200]
    assert log[0]["status"] == "succeeded"


@on_the_fake
async def test_deliveries_give_up_after_three_days(world: World) -> None:
    await endpoint(world)
    payment = await world.create_payment()
    await world.pay(payment)
    world.receiver.status = 503
    attempts = 0
    for _ in range(200):
        attempts += await deliver(world)
        world.clock.advance(3600)
    assert 5 < attempts < 30
    [event] = (await world.api.get("/v1/events", headers=world.auth())).json()["data"]
    [delivery] = await delivery_log(world.container.uow_factory, event["id"])
    assert delivery["status"] == "failed"
    created = datetime.fromtimestamp(event["created"], UTC)
    tries = [datetime.fromisoformat(a["at"]) for a in delivery["attempts"]]
    assert len(tries) == attempts
    assert DELIVERY_WINDOW <= tries[-1] - created < DELIVERY_WINDOW + timedelta(hours=1)  # retried for the full 3 days
    assert all(b - a >= timedelta(minutes=1) for a, b in itertools.pairwise(tries))


@on_the_fake
async def test_endpoints_receive_only_their_sub_merchants_events_and_admin_endpoints_all(world: World) -> None:
    await endpoint(world, SUB2, "http://merchant.test/hooks")
    await endpoint(world, "admin", "http://merchant.test/hooks")
    payment = await world.create_payment()
    await world.pay(payment)
    assert await deliver(world) == 1  # only the admin endpoint: the event is SUB1's


@on_the_fake
async def test_pay_after_close_is_kept_flagged_and_announced(world: World) -> None:
    await endpoint(world)
    payment = await world.create_payment()
    await world.advance(301)
    closed = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert closed.json()["status"] == "closed"
    # The password screen was already open: WeChat took the money after our close.
    status, reply = await post_notify(world, notification(payment))
    assert (status, reply["return_code"]) == (200, "SUCCESS")
    current = await world.get(payment["id"])
    assert (current["status"], current["paid_after_close"]) == ("succeeded", True)
    assert await deliver(world) == 2
    types = [json.loads(body)["type"] for _, body in world.receiver.received]
    assert sorted(types) == ["payment.closed", "payment.paid_after_close"]
    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds",
        json={"amount": 1000},
        headers={**world.auth(), "Idempotency-Key": "pac"},
    )
    assert refund.status_code == 201


async def test_the_in_app_dispatcher_delivers_without_the_worker() -> None:
    async with make_world(FAKE, webhook_dispatch=True) as world:
        await endpoint(world)
        payment = await world.create_payment()
        await world.pay(payment)  # the notification wakes the dispatcher
        for _ in range(200):
            if world.receiver.received:
                break
            await asyncio.sleep(0.01)
        assert [json.loads(body)["type"] for _, body in world.receiver.received] == ["payment.succeeded"]


async def test_a_burst_of_wakes_with_nothing_due_costs_one_claim_per_idle_gap() -> None:
    # Every applied notification wakes the dispatcher, also where no endpoint will receive its event:
    # after a claim that found nothing, the wakes of the next idle_gap seconds are answered by one claim.
    async with make_world(FAKE) as world:
        claims = 0
        factory = world.container.uow_factory

        def counting() -> Any:
            nonlocal claims
            claims += 1
            return factory()

        async def storm(idle_gap: float) -> int:
            nonlocal claims
            claims = 0
            dispatcher = WebhookDispatcher(counting, world.container.webhook_sender, world.clock)
            stop, wake = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(dispatcher.run(stop, interval=5.0, wake=wake, idle_gap=idle_gap))
            for _ in range(50):  # 0.5 s of wakes, one every 10 ms
                wake.set()
                await asyncio.sleep(0.01)
            stop.set()
            wake.set()
            await asyncio.wait_for(running, 2)
            return claims

        assert await storm(idle_gap=0.1) <= 8  # ~5 gaps in 0.5 s, not one claim per wake
        assert await storm(idle_gap=0.0) > 20  # what the gap saves

        # Once something is due, it goes out within the gap; while claims find work, wakes are at once.
        await endpoint(world)
        dispatcher = WebhookDispatcher(factory, world.container.webhook_sender, world.clock)
        stop, wake = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop, interval=5.0, wake=wake, idle_gap=0.1))
        try:
            await asyncio.sleep(0.05)  # the first claim found nothing
            for n in range(1, 4):
                await world.pay(await world.create_payment())
                wake.set()
                started = asyncio.get_running_loop().time()
                while len(world.receiver.received) < n:
                    assert asyncio.get_running_loop().time() - started < 0.5, "the delivery waited for the interval"
                    await asyncio.sleep(0.005)
        finally:
            stop.set()
            wake.set()
            await asyncio.wait_for(running, 2)


async def test_a_webhook_delivery_in_flight_when_the_app_stops_still_completes() -> None:
    async with make_world(FAKE, webhook_dispatch=True) as world:
        await endpoint(world)
        world.receiver.delay = 1.0  # the merchant answers after a second (real time)
        payment = await world.create_payment()
        await world.pay(payment)  # the notification wakes the dispatcher
        for _ in range(200):
            if world.receiver.arrivals:
                break
            await asyncio.sleep(0.01)
        assert (world.receiver.arrivals, world.receiver.received) == (1, [])  # in flight as the app stops
    # The app has stopped: the delivery was answered and recorded, not cancelled half-way.
    assert [json.loads(body)["type"] for _, body in world.receiver.received] == ["payment.succeeded"]
    assert world.fake is not None
    assert [(d["status"], d["attempts"]) for d in world.fake.rows("webhook_deliveries")] == [("succeeded", 1)]


@on_the_fake
async def test_events_and_their_delivery_log_are_readable_by_their_owner(world: World) -> None:
    await endpoint(world)
    payment = await world.create_payment()
    await world.pay(payment)
    world.receiver.status = 500
    await deliver(world)
    events = (await world.api.get("/v1/events", params={"payment_id": payment["id"]}, headers=world.auth())).json()[
        "data"
    ]
    assert [e["type"] for e in events] == ["payment.succeeded"]
    detail = (await world.api.get(f"/v1/events/{events[0]['id']}", headers=world.auth())).json()
    assert detail["data"]["id"] == payment["id"]
    assert [a["status_code"] for a in detail["deliveries"][0]["attempts"]] == [500]
    assert detail["deliveries"][0]["status"] == "pending"
    other = await world.api.get(f"/v1/events/{events[0]['id']}", headers=world.auth(SUB2))
    assert other.status_code == 404
    assert (await world.api.get("/v1/events", headers=world.auth(SUB2))).json()["data"] == []


async def test_sql_logging_never_shows_an_endpoint_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    async with make_world(f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}", sql_echo=True) as world:
        secret = await endpoint(world)
    logged = caplog.text + capsys.readouterr().out
    assert "INSERT INTO webhook_endpoints" in logged  # the SQL is logged...
    assert secret not in logged  # ...its parameters are not


async def test_the_outbox_row_is_written_in_the_transaction_of_the_state_change(world: World) -> None:
    payment = await world.create_payment()
    async with world.container.engine.begin() as conn:  # the outbox cannot be written for a moment
        await conn.exec_driver_sql("ALTER TABLE outbox_events RENAME TO outbox_events_away")
    response = await world.api.post("/wechatpay/notify/payment", content=notification(payment))
    assert (response.status_code, decode_xml(response.content)["return_code"]) == (503, "FAIL")
    async with world.container.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE outbox_events_away RENAME TO outbox_events")
    assert (await world.get(payment["id"]))["status"] == "pending"  # no transition without its event
    status, reply = await post_notify(world, notification(payment))  # WeChat retries
    assert (status, reply["return_code"]) == (200, "SUCCESS")
    assert (await world.get(payment["id"]))["status"] == "succeeded"
    async with world.container.engine.connect() as conn:
        types = (await conn.execute(select(db.outbox_events.c.type))).scalars().all()
    assert types == ["payment.succeeded"]
