"""Webhooks to the merchants' systems: endpoints, signing, and delivery from the outbox.

Every event row in ``outbox_events`` (written in the transaction of the state change) gets one
``webhook_deliveries`` row per endpoint. :func:`deliver_webhooks` claims due deliveries (PostgreSQL
``FOR UPDATE SKIP LOCKED`` + a lease, so many workers never send the same attempt twice; SQLite: one
writer), POSTs them, logs every attempt in ``webhook_attempts`` and reschedules failures with backoff
for 3 days. Delivery is at-least-once: receivers dedupe on the event ``id``.

Body: ``{"id", "type", "created", "data"}``; header
``Minipay-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the endpoint secret>``.

Verify on the receiving side::

    verify_webhook(raw_body, request.headers["Minipay-Signature"], secret)   # raises WebhookSignatureError
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import and_, func, insert, or_, select, update

from minipay.server import db
from minipay.server.domain import new_id
from minipay.server.logs import log_context, new_request_id
from minipay.server.ports import Clock, WebhookSender
from minipay.server.settings import Settings
from minipay.server.uow import UnitOfWork, UnitOfWorkFactory

__all__ = [
    "DELIVERY_WINDOW",
    "SIGNATURE_HEADER",
    "DeliveryLimits",
    "EndpointLimitReached",
    "InternalAddressRefused",
    "Resolver",
    "WebhookDispatcher",
    "WebhookSignatureError",
    "backoff",
    "create_endpoint",
    "delete_endpoint",
    "deliver_webhooks",
    "delivery_log",
    "get_event",
    "is_internal_address",
    "list_endpoints",
    "list_events",
    "parse_ipv4",
    "pin_address",
    "sign_webhook",
    "verify_webhook",
]

log = logging.getLogger("minipay.server.webhooks")

SIGNATURE_HEADER = "Minipay-Signature"
DELIVERY_WINDOW = timedelta(days=3)
_SCHEDULE = (60, 300, 1800, 3600, 7200, 14400, 28800, 43200)  # seconds after attempt 1, 2, ...; then 12 h


class WebhookSignatureError(ValueError):
    """A ``Minipay-Signature`` header that is missing, malformed, stale or wrong."""


def sign_webhook(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Minipay-Signature`` header value for ``body`` at ``timestamp`` (Unix seconds).

    >>> sign_webhook(b'{}', "whsec_test", 1700000000)
    't=1700000000,v1=...'  # doctest: +SKIP
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook(body: bytes, header: str, secret: str, *, tolerance: int = 300, now: int | None = None) -> int:
    """Check a ``Minipay-Signature`` header against the raw body; returns its timestamp.

    Constant-time; refuses timestamps further than ``tolerance`` seconds from ``now``.
    """
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError("malformed Minipay-Signature header")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise WebhookSignatureError("Minipay-Signature has no valid t=") from None
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureError("Minipay-Signature timestamp outside the tolerance")
    expected = sign_webhook(body, secret, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in parts.get("v1", [])):
        raise WebhookSignatureError("Minipay-Signature does not match")
    return timestamp


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones (1 min, 5 min, 30 min ... 12 h)."""
    index = max(attempts, 1) - 1
    return timedelta(seconds=_SCHEDULE[index] if index < len(_SCHEDULE) else 43200)


# -- endpoints -------------------------------------------------------------------------------------


class EndpointLimitReached(Exception):
    """The key already has ``max_webhook_endpoints`` endpoints."""


def _ipv4_number(part: str) -> int | None:
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base, allowed = lowered[2:], 16, "0123456789abcdef"
    elif len(part) > 1 and part.startswith("0"):
        digits, base, allowed = part[1:], 8, "01234567"
    else:
        digits, base, allowed = part, 10, "0123456789"
    if not part or any(c not in allowed for c in digits):
        return None
    return int(digits, base) if digits else 0


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` spells in any notation resolvers accept (``inet_aton``: ``127.1``,
    ``2130706433``, ``0x7f000001``, ``017700000001``, ``0``, a trailing dot), or None.

    >>> parse_ipv4("0x7f.1")
    IPv4Address('127.0.0.1')
    """
    parts = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def is_internal_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for what a webhook must never reach: private, loopback, link-local, multicast, unspecified,
    reserved or shared addresses, IPv6 ones that embed such an IPv4 address (mapped, compatible,
    NAT64, 6to4, Teredo) included."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(is_internal_address(v4) for v4 in embedded):
            return True
    return not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_reserved


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return parse_ipv4(host)


def _is_internal_host(host: str) -> bool:
    """localhost names and literal internal IPs in any spelling (a host name is not resolved here:
    the sender resolves it on every attempt)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _literal_ip(name)
    return ip is not None and is_internal_address(ip)


class InternalAddressRefused(Exception):
    """A webhook host that is, or resolves to, an internal address: the delivery attempt is not made."""


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def pin_address(host: str, port: int, resolver: Resolver) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The one address a delivery to ``host`` connects to, checked at the moment of sending.

    A literal IP (any spelling) is taken as it is; a name is resolved with ``resolver`` and refused
    if *any* of its addresses is internal (:func:`is_internal_address`), so a name that rebinds to
    127.0.0.1 between registration and delivery, or answers a public and a private record, reaches
    nobody. Raises :class:`InternalAddressRefused` (also for a name that does not resolve).
    """
    name = host.lower().strip("[]").rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise InternalAddressRefused("webhook host is a localhost name")
    literal = _literal_ip(name)
    if literal is not None:
        candidates = [literal]
    else:
        try:
            resolved = await resolver(name, port)
        except OSError as exc:
            raise InternalAddressRefused(f"webhook host does not resolve ({type(exc).__name__})") from None
        candidates = []
        for text in resolved:
            try:
                candidates.append(ipaddress.ip_address(text.split("%", 1)[0]))
            except ValueError:
                continue
        if not candidates:
            raise InternalAddressRefused("webhook host does not resolve to an IP address")
    if any(is_internal_address(ip) for ip in candidates):
        raise InternalAddressRefused("webhook host resolves to a private, loopback or link-local address")
    return candidates[0]


def _check_url(url: str, *, allow_private: bool = False) -> str:
    """The URL as it will be stored: validated, with a numeric IPv4 host in its canonical form."""
    # Printable ASCII only (IDNs as punycode): no spaces, controls or NUL, which no column can hold.
    if len(url) > 2048 or not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("url must be an absolute http:// or https:// URL of printable ASCII characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http:// or https:// URL")
    try:
        port = parts.port  # raises ValueError for a port out of range
    except ValueError:
        raise ValueError("url is not a valid URL") from None
    if "\\" in url or "%" in parts.netloc:
        # Backslashes and escapes in the authority read differently to different URL parsers.
        raise ValueError("url is ambiguous: no backslash or %-escape in its host part")
    host = parts.hostname.lower()
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials (receivers check the Minipay-Signature instead)")
    ip = _literal_ip(host)
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if ip is None and (last_label.isdigit() or last_label.startswith("0x")):
        raise ValueError("url host is neither a host name nor a valid IP address")
    if not allow_private and _is_internal_host(host):
        raise ValueError("url must not point at localhost or a private, loopback or link-local address")
    if isinstance(ip, ipaddress.IPv4Address) and host != str(ip):
        # One spelling of an address: the canonical one.
        url = parts._replace(netloc=str(ip) if port is None else f"{ip}:{port}").geturl()
    return url


def _endpoint_view(row: Any, *, with_secret: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "sub_mch_id": row["sub_mch_id"],
        "created_at": row["created_at"].isoformat(),
    }
    if with_secret:
        view["secret"] = row["secret"]
    return view


async def create_endpoint(
    uow_factory: UnitOfWorkFactory,
    *,
    url: str,
    sub_mch_id: str | None,
    clock: Clock,
    allow_private: bool = False,
    max_endpoints: int | None = None,
) -> dict[str, Any]:
    """Register an endpoint; the answer is the only time the secret is shown.

    Raises ``ValueError`` for a URL that is refused and :class:`EndpointLimitReached` when the key
    (``sub_mch_id``, or the admin's None) already has ``max_endpoints`` endpoints; the count and the
    insert are one transaction, serialised per key, so concurrent requests cannot pass the cap.
    """
    values = {
        "id": new_id("we"),
        "sub_mch_id": sub_mch_id,
        "url": _check_url(url, allow_private=allow_private),
        "secret": "whsec_" + secrets.token_hex(24),
        "created_at": clock.now(),
        "failure_streak": 0,
    }
    t = db.webhook_endpoints
    async with uow_factory() as uow:
        if max_endpoints is not None:
            if uow.is_postgres:  # SQLite: BEGIN IMMEDIATE already makes this the only writer
                lock_key = f"minipay.webhook_endpoints:{sub_mch_id or ''}"
                await uow.conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(lock_key))))
            owner = t.c.sub_mch_id.is_(None) if sub_mch_id is None else t.c.sub_mch_id == sub_mch_id
            count = (
                await uow.conn.execute(select(func.count()).select_from(t).where(owner, t.c.deleted_at.is_(None)))
            ).scalar_one()
            if count >= max_endpoints:
                raise EndpointLimitReached(f"this key already has {count} webhook endpoints (at most {max_endpoints})")
        await uow.conn.execute(insert(t).values(**values))
        await uow.commit()
    values.pop("failure_streak")
    return _endpoint_view(values, with_secret=True)


def _scoped(sub_mch_id: str | None) -> Any:
    t = db.webhook_endpoints
    return (
        t.c.deleted_at.is_(None) if sub_mch_id is None else and_(t.c.deleted_at.is_(None), t.c.sub_mch_id == sub_mch_id)
    )


async def list_endpoints(uow_factory: UnitOfWorkFactory, *, sub_mch_id: str | None) -> list[dict[str, Any]]:
    t = db.webhook_endpoints
    async with uow_factory() as uow:
        rows = (await uow.conn.execute(select(t).where(_scoped(sub_mch_id)).order_by(t.c.created_at))).mappings().all()
    return [_endpoint_view(r, with_secret=False) for r in rows]


async def delete_endpoint(
    uow_factory: UnitOfWorkFactory, endpoint_id: str, *, sub_mch_id: str | None, clock: Clock
) -> bool:
    t = db.webhook_endpoints
    async with uow_factory() as uow:
        result = await uow.conn.execute(
            update(t).where(t.c.id == endpoint_id, _scoped(sub_mch_id)).values(deleted_at=clock.now())
        )
        await uow.commit()
    return result.rowcount == 1


# -- delivery ----------------------------------------------------------------------------------------


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
    uow: UnitOfWork,
    now: datetime,
    limit: int,
    lease: timedelta,
    *,
    per_endpoint: int | None = None,
    room: Mapping[str, int] | None = None,
) -> list[_Claimed]:
    """Lease up to ``limit`` due deliveries, at most ``per_endpoint`` to one endpoint (less its
    ``room`` entry: what is in flight already), none to an endpoint whose breaker is open."""
    d, e, w = db.webhook_deliveries, db.outbox_events, db.webhook_endpoints
    room = room or {}
    full = [endpoint for endpoint, free in room.items() if free <= 0]
    due_where = [
        d.c.status == "pending",
        d.c.next_attempt_at <= now,
        or_(d.c.locked_until.is_(None), d.c.locked_until <= now),
    ]
    candidates = (
        select(d.c.id, d.c.endpoint_id)
        .join(w, w.c.id == d.c.endpoint_id)
        .where(*due_where, or_(w.c.open_until.is_(None), w.c.open_until <= now))
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit if per_endpoint is None else max(limit * 4, 100))
    )
    if full:
        candidates = candidates.where(d.c.endpoint_id.not_in(full))
    chosen: list[int] = []
    taken: dict[str, int] = {}
    for delivery_id, endpoint_id in (await uow.conn.execute(candidates)).all():
        if per_endpoint is not None:
            allowed = min(per_endpoint, room.get(endpoint_id, per_endpoint))
            if taken.get(endpoint_id, 0) >= allowed:
                continue
        taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
        chosen.append(delivery_id)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    locking = select(d.c.id).where(d.c.id.in_(chosen), *due_where)
    if uow.is_postgres:
        locking = locking.with_for_update(skip_locked=True)  # another process may be claiming them
    ids = [row[0] for row in (await uow.conn.execute(locking)).all()]
    if not ids:
        return []
    until = now + lease
    await uow.conn.execute(update(d).where(d.c.id.in_(ids)).values(locked_until=until, updated_at=now))
    rows = (
        (
            await uow.conn.execute(
                select(
                    d.c.id,
                    d.c.endpoint_id,
                    d.c.attempts,
                    e.c.id.label("event_id"),
                    e.c.type,
                    e.c.created_at,
                    e.c.data,
                    w.c.url,
                    w.c.secret,
                    w.c.deleted_at,
                )
                .join(e, e.c.id == d.c.event_id)
                .join(w, w.c.id == d.c.endpoint_id)
                .where(d.c.id.in_(ids))
                .order_by(d.c.next_attempt_at, d.c.id)
            )
        )
        .mappings()
        .all()
    )
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
        uow_factory: UnitOfWorkFactory,
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

    async def run(self, stop: StopSignal, *, interval: float, wake: asyncio.Event | None = None) -> None:
        """Pump every ``interval`` real seconds, at once when ``wake`` is set or a slot frees up, until
        ``stop``; then wait for the attempts in flight (each ends by its deadline). Cancelled, it
        cancels them (their rows are left to the lease)."""
        try:
            await self._run(stop, interval, wake or asyncio.Event())
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _run(self, stop: StopSignal, interval: float, wake: asyncio.Event) -> None:
        while not stop.is_set():
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
    uow_factory: UnitOfWorkFactory,
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
    uow_factory: UnitOfWorkFactory,
    item: _Claimed,
    now: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    limits: DeliveryLimits,
) -> None:
    d, w = db.webhook_deliveries, db.webhook_endpoints
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
        fenced = await uow.conn.execute(
            update(d).where(d.c.id == item.delivery_id, d.c.locked_until == item.lease).values(**values)
        )
        if not item.endpoint_deleted:
            await uow.conn.execute(
                insert(db.webhook_attempts).values(
                    delivery_id=item.delivery_id,
                    attempted_at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                )
            )
            if fenced.rowcount == 1:
                # The endpoint's circuit breaker: a success closes it, a failure adds to the streak.
                if ok:
                    await uow.conn.execute(
                        update(w).where(w.c.id == item.endpoint_id).values(failure_streak=0, open_until=None)
                    )
                else:
                    await uow.conn.execute(
                        update(w).where(w.c.id == item.endpoint_id).values(failure_streak=w.c.failure_streak + 1)
                    )
                    streak = (
                        await uow.conn.execute(select(w.c.failure_streak).where(w.c.id == item.endpoint_id))
                    ).scalar_one()
                    opened = limits.pause(streak)
                    if opened is not None:
                        await uow.conn.execute(
                            update(w).where(w.c.id == item.endpoint_id).values(open_until=now + opened)
                        )
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


async def get_event(uow_factory: UnitOfWorkFactory, event_id: str, *, sub_mch_id: str | None) -> dict[str, Any] | None:
    """One outbox event as delivered (``{"id", "type", "created", "data"}``) plus its ``deliveries`` log."""
    e = db.outbox_events
    query = select(e).where(e.c.id == event_id)
    if sub_mch_id is not None:
        query = query.where(e.c.sub_mch_id == sub_mch_id)
    async with uow_factory() as uow:
        row = (await uow.conn.execute(query)).mappings().first()
    if row is None:
        return None
    return {
        "id": row["id"],
        "type": row["type"],
        "created": int(row["created_at"].timestamp()),
        "data": row["data"],
        # A sub-merchant's key sees the deliveries to its own endpoints, never the admin's.
        "deliveries": await delivery_log(uow_factory, event_id, sub_mch_id=sub_mch_id),
    }


async def list_events(
    uow_factory: UnitOfWorkFactory, *, sub_mch_id: str | None, payment_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest outbox events first (without delivery logs)."""
    e = db.outbox_events
    query = select(e).order_by(e.c.created_at.desc(), e.c.id.desc()).limit(limit)
    if sub_mch_id is not None:
        query = query.where(e.c.sub_mch_id == sub_mch_id)
    if payment_id is not None:
        query = query.where(e.c.payment_id == payment_id)
    async with uow_factory() as uow:
        rows = (await uow.conn.execute(query)).mappings().all()
    return [
        {"id": r["id"], "type": r["type"], "created": int(r["created_at"].timestamp()), "data": r["data"]} for r in rows
    ]


async def delivery_log(
    uow_factory: UnitOfWorkFactory, event_id: str, *, sub_mch_id: str | None = None
) -> list[dict[str, Any]]:
    """Every delivery of an event with its attempts (for the API and for support); with ``sub_mch_id``
    only the deliveries to that sub-merchant's own endpoints."""
    d, a, w = db.webhook_deliveries, db.webhook_attempts, db.webhook_endpoints
    query = select(d).where(d.c.event_id == event_id).order_by(d.c.id)
    if sub_mch_id is not None:
        query = query.join(w, w.c.id == d.c.endpoint_id).where(w.c.sub_mch_id == sub_mch_id)
    async with uow_factory() as uow:
        deliveries = (await uow.conn.execute(query)).mappings().all()
        out = []
        for row in deliveries:
            tries = (
                (await uow.conn.execute(select(a).where(a.c.delivery_id == row["id"]).order_by(a.c.id)))
                .mappings()
                .all()
            )
            out.append(
                {
                    "endpoint_id": row["endpoint_id"],
                    "status": row["status"],
                    "attempts": [
                        {
                            "at": t["attempted_at"].isoformat(),
                            "status_code": t["status_code"],
                            "error": t["error"],
                            "duration_ms": t["duration_ms"],
                        }
                        for t in tries
                    ],
                    "next_attempt_at": row["next_attempt_at"].isoformat() if row["next_attempt_at"] else None,
                }
            )
    return out
