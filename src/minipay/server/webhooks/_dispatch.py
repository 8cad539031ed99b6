"""Webhook delivery from the outbox: claiming due deliveries, sending them concurrently, logging
every attempt, backoff and the per-endpoint circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from minipay._web import SIGNATURE_HEADER, sign_webhook
from minipay.server.logs import log_context, new_request_id
from minipay.server.ports import Clock, UnitOfWorkPort, UnitOfWorkPortFactory, WebhookSender
from minipay.server.settings import Settings

log = logging.getLogger("minipay.server.webhooks")


DELIVERY_WINDOW = timedelta(days=3)
_SCHEDULE = (60, 300, 1800, 3600, 7200, 14400, 28800, 43200)  # seconds after attempt 1, 2, ...; then 12 h


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones (1 min, 5 min, 30 min ... 12 h)."""
    index = max(attempts, 1) - 1
    return timedelta(seconds=_SCHEDULE[index] if index < len(_SCHEDULE) else 43200)


@dataclass(frozen=True, slots=True)
class DeliveryLimits:
    """How deliveries share the process: attempts run concurrently, each bounded as a whole, and an
    endpoint that keeps failing is paused (circuit breaker) so it holds no slot the others need."""

    #: Attempts in flight in one dispatcher (one process) at once.
    concurrency: int = 16
    #: Attempts in flight to one endpoint at once.
    per_endpoint: int = 2
    #: Real seconds for a whole attempt (resolving, connecting, sending, reading the answer); a receiver
    #: that hangs or drips its answer is cut off at this point and the attempt counts as failed.
    deadline: float = 10.0
    #: Consecutive failed attempts after which the endpoint's breaker opens: none of its deliveries is
    #: claimed until ``open_until`` (``breaker_pause``, doubled with every further failure, at most
    #: ``breaker_max_pause``). The next attempt after the pause is the probe: a 2xx closes the breaker.
    breaker_threshold: int = 5
    breaker_pause: timedelta = timedelta(minutes=1)
    breaker_max_pause: timedelta = timedelta(hours=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryLimits:
        return cls(
            concurrency=settings.webhook_concurrency,
            per_endpoint=settings.webhook_per_endpoint,
            deadline=settings.webhook_timeout,
            breaker_threshold=settings.webhook_breaker_threshold,
        )

    def pause(self, streak: int) -> timedelta | None:
        """How long the breaker stays open after ``streak`` consecutive failures (None: closed)."""
        if streak < self.breaker_threshold:
            return None
        doublings = min(streak - self.breaker_threshold, 20)
        return min(self.breaker_pause * (1 << doublings), self.breaker_max_pause)


@dataclass(frozen=True, slots=True)
class _Claimed:
    delivery_id: int
    endpoint_id: str
    attempts: int
    lease: datetime
    event_id: str
    event_type: str
    event_created: datetime
    data: dict[str, Any]
    url: str
    secret: str
    endpoint_deleted: bool


def _event_ids(item: _Claimed) -> dict[str, Any]:
    """The payment (and refund) an event is about, for its log lines."""
    data = item.data
    if item.event_type.startswith("refund."):
        return {
            "payment_id": data.get("payment_id"),
            "refund_id": data.get("id"),
            "out_refund_no": data.get("out_refund_no"),
        }
    if item.event_type.startswith("payment."):
        return {"payment_id": data.get("id"), "out_trade_no": data.get("out_trade_no")}
    return {}


def event_body(event_id: str, event_type: str, created: datetime, data: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {"id": event_id, "type": event_type, "created": int(created.timestamp()), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


async def _claim(
    uow: UnitOfWorkPort,
    now: datetime,
    limit: int,
    lease: timedelta,
    *,
    per_endpoint: int | None = None,
    room: Mapping[str, int] | None = None,
) -> list[_Claimed]:
    """Lease up to ``limit`` due deliveries, at most ``per_endpoint`` to one endpoint (less its
    ``room`` entry: what is in flight already), none to an endpoint whose breaker is open."""
    until = now + lease
    rows = await uow.webhooks.claim(now, limit, until, per_endpoint=per_endpoint, room=room)
    if not rows:
        return []
    await uow.commit()
    return [
        _Claimed(
            delivery_id=r["id"],
            endpoint_id=r["endpoint_id"],
            attempts=r["attempts"],
            lease=until,
            event_id=r["event_id"],
            event_type=r["type"],
            event_created=r["created_at"],
            data=dict(r["data"]),
            url=r["url"],
            secret=r["secret"],
            endpoint_deleted=r["deleted_at"] is not None,
        )
        for r in rows
    ]


class StopSignal(Protocol):
    """An ``asyncio.Event`` or an ``anyio.Event``."""

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[Any]: ...


class WebhookDispatcher:
    """Delivers due webhooks concurrently, within :class:`DeliveryLimits`.

    :meth:`pump` claims what fits into the free slots (never more than ``per_endpoint`` in flight to
    one endpoint, nothing to an endpoint whose breaker is open) and starts those attempts without
    waiting for them; :meth:`run` pumps until stopped, so a hanging receiver holds its own slots for at
    most ``deadline`` seconds and every other endpoint's deliveries start as soon as they are due.
    :meth:`deliver_batch` is one pump, waited for (tests, ``Worker.tick``).
    """

    def __init__(
        self,
        uow_factory: UnitOfWorkPortFactory,
        sender: WebhookSender,
        clock: Clock,
        *,
        limits: DeliveryLimits | None = None,
        on_attempt: Callable[[], None] | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.sender = sender
        self.clock = clock
        self.limits = limits or DeliveryLimits()
        self._on_attempt = on_attempt
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self._finished = asyncio.Event()
        self._found_nothing = False  # the last claim found nothing due

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def pump(self, *, limit: int | None = None) -> list[asyncio.Task[bool]]:
        """Claim due deliveries for the free slots and start them; returns their tasks."""
        free = self.limits.concurrency - len(self._tasks)
        if limit is not None:
            free = min(free, limit)
        if free <= 0:
            return []
        room = {endpoint: self.limits.per_endpoint - n for endpoint, n in self._in_flight.items()}
        # The lease outlives the attempt's deadline: the row is recorded by whoever claimed it.
        lease = timedelta(seconds=self.limits.deadline + 60)
        async with self.uow_factory() as uow:
            claimed = await _claim(uow, self.clock.now(), free, lease, per_endpoint=self.limits.per_endpoint, room=room)
        self._found_nothing = not claimed
        started = []
        for item in claimed:
            self._in_flight[item.endpoint_id] = self._in_flight.get(item.endpoint_id, 0) + 1
            # Each attempt is a unit of its own in the logs (the task copies this context).
            with log_context(new_request_id("wh_"), event_id=item.event_id, **_event_ids(item)):
                task = asyncio.create_task(self._attempt(item))
            self._tasks.add(task)
            task.add_done_callback(self._done)
            started.append(task)
        return started

    def _done(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        self._finished.set()

    async def deliver_batch(self, *, limit: int = 100) -> int:
        """Claim one batch of due deliveries, send them concurrently and wait; returns the attempts made."""
        tasks = await self.pump(limit=limit)
        if not tasks:
            return 0
        return sum(await asyncio.gather(*tasks))

    async def run(
        self, stop: StopSignal, *, interval: float, wake: asyncio.Event | None = None, idle_gap: float = 0.1
    ) -> None:
        """Pump every ``interval`` real seconds, at once when ``wake`` is set or a slot frees up, until
        ``stop``; then wait for the attempts in flight (each ends by its deadline). Cancelled, it
        cancels them (their rows are left to the lease).

        After a pump that found nothing due, a ``wake`` is answered no sooner than ``idle_gap``
        seconds after that pump started: every applied notification sets ``wake``, also where no
        endpoint will ever receive its event, and without the gap each wake under load costs a claim
        transaction (8% of a first-time notification's throughput on PostgreSQL without endpoints).
        While pumps find deliveries, wakes are answered at once."""
        try:
            await self._run(stop, interval, wake or asyncio.Event(), idle_gap)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _run(self, stop: StopSignal, interval: float, wake: asyncio.Event, idle_gap: float) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.pump()
            except Exception:  # a database blip: try again at the next turn
                log.exception("webhook dispatch failed")
            self._finished.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
            if self._tasks:
                waiters.append(asyncio.ensure_future(self._finished.wait()))
            try:
                await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            rest = started + idle_gap - loop.time()
            if self._found_nothing and wake.is_set() and rest > 0 and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rest)
            wake.clear()
        await self.drain()

    async def drain(self) -> None:
        """Wait for every attempt in flight."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _attempt(self, item: _Claimed) -> bool:
        """One attempt, recorded; True if a request was made."""
        status_code: int | None = None
        error: str | None = None
        made = False
        started = time.perf_counter()
        try:
            if item.endpoint_deleted:
                error = "endpoint deleted"
            else:
                body = event_body(item.event_id, item.event_type, item.event_created, item.data)
                # The signature's timestamp proves freshness to a receiver that compares it with its
                # own wall clock, so it is real time even when the service runs on a virtual clock
                # (sandbox mode after POST /sandbox/clock): business times stay on self.clock.
                timestamp = int(time.time())
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "minipay-webhooks/1",
                    SIGNATURE_HEADER: sign_webhook(body, item.secret, timestamp),
                    "Minipay-Event-Id": item.event_id,
                }
                made = True
                if self._on_attempt is not None:
                    self._on_attempt()
                try:
                    async with asyncio.timeout(self.limits.deadline):
                        status_code = await self.sender.send(item.url, body, headers)
                except TimeoutError:
                    error = f"TimeoutError: no answer within {self.limits.deadline:g} s"
                except Exception as exc:  # any failure of the receiver is just a failed attempt
                    error = f"{type(exc).__name__}: {exc}"[:400]
            duration_ms = int((time.perf_counter() - started) * 1000)
            await _record_attempt(
                self.uow_factory, item, self.clock.now(), status_code, error, duration_ms, self.limits
            )
        except Exception:
            # Recording failed (database down): the lease runs out and the delivery is tried again.
            log.exception("webhook attempt could not be recorded", extra={"event_id": item.event_id})
        finally:
            left = self._in_flight.get(item.endpoint_id, 1) - 1
            if left > 0:
                self._in_flight[item.endpoint_id] = left
            else:
                self._in_flight.pop(item.endpoint_id, None)
        return made


async def deliver_webhooks(
    uow_factory: UnitOfWorkPortFactory,
    sender: WebhookSender,
    clock: Clock,
    *,
    limit: int = 100,
    limits: DeliveryLimits | None = None,
) -> int:
    """Send one batch of due webhook deliveries (concurrently, see :class:`WebhookDispatcher`) and
    wait for them; returns how many attempts were made.

    Safe with any number of concurrent callers (claims are leased, see the module docstring).
    """
    return await WebhookDispatcher(uow_factory, sender, clock, limits=limits).deliver_batch(limit=limit)


async def _record_attempt(
    uow_factory: UnitOfWorkPortFactory,
    item: _Claimed,
    now: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    limits: DeliveryLimits,
) -> None:
    ok = status_code is not None and 200 <= status_code < 300
    attempts = item.attempts + (0 if item.endpoint_deleted else 1)
    values: dict[str, Any] = {
        "attempts": attempts,
        "locked_until": None,
        "updated_at": now,
        "last_status_code": status_code,
    }
    deadline = item.event_created + DELIVERY_WINDOW
    if ok:
        values["status"] = "succeeded"
        values["next_attempt_at"] = None
    elif item.endpoint_deleted or now >= deadline:
        values["status"] = "failed"
        values["next_attempt_at"] = None
    else:
        # The last try is made when the 3 days are up, not one backoff step before.
        values["next_attempt_at"] = min(now + backoff(attempts), deadline)
    opened: timedelta | None = None
    async with uow_factory() as uow:
        # Fenced by the lease: if our lease ran out and someone else claimed the row, leave it to them.
        fenced = await uow.webhooks.finish_attempt(item.delivery_id, item.lease, values)
        if not item.endpoint_deleted:
            await uow.webhooks.log_attempt(
                item.delivery_id, at=now, status_code=status_code, error=error, duration_ms=duration_ms
            )
            if fenced:
                # The endpoint's circuit breaker: a success closes it, a failure adds to the streak.
                if ok:
                    await uow.webhooks.close_breaker(item.endpoint_id)
                else:
                    streak = await uow.webhooks.count_failure(item.endpoint_id)
                    opened = limits.pause(streak)
                    if opened is not None:
                        await uow.webhooks.open_breaker(item.endpoint_id, now + opened)
        await uow.commit()
    if not ok:
        log.info(
            "webhook attempt failed", extra={"event_id": item.event_id, "status_code": status_code, "error": error}
        )
    if opened is not None:
        log.warning(
            "webhook endpoint paused after repeated failures",
            extra={"endpoint_id": item.endpoint_id, "pause_seconds": int(opened.total_seconds())},
        )
