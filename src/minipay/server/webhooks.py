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

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import and_, insert, or_, select, update

from minipay.server import db
from minipay.server.domain import new_id
from minipay.server.ports import Clock, WebhookSender
from minipay.server.uow import UnitOfWork, UnitOfWorkFactory

__all__ = [
    "DELIVERY_WINDOW",
    "SIGNATURE_HEADER",
    "WebhookSignatureError",
    "backoff",
    "create_endpoint",
    "delete_endpoint",
    "deliver_webhooks",
    "delivery_log",
    "get_event",
    "list_endpoints",
    "list_events",
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


def _check_url(url: str, *, allow_private: bool = False) -> str:
    # Printable ASCII only (IDNs as punycode): no spaces, controls or NUL, which no column can hold.
    if len(url) > 2048 or not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("url must be an absolute http:// or https:// URL of printable ASCII characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http:// or https:// URL")
    if not allow_private and _is_internal_host(parts.hostname):
        raise ValueError("url must not point at localhost or a private, loopback or link-local address")
    return url


def _is_internal_host(host: str) -> bool:
    """localhost names and literal internal IPs (a host name is not resolved here)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


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
    uow_factory: UnitOfWorkFactory, *, url: str, sub_mch_id: str | None, clock: Clock, allow_private: bool = False
) -> dict[str, Any]:
    """Register an endpoint; the answer is the only time the secret is shown."""
    values = {
        "id": new_id("we"),
        "sub_mch_id": sub_mch_id,
        "url": _check_url(url, allow_private=allow_private),
        "secret": "whsec_" + secrets.token_hex(24),
        "created_at": clock.now(),
    }
    async with uow_factory() as uow:
        await uow.conn.execute(insert(db.webhook_endpoints).values(**values))
        await uow.commit()
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
class _Claimed:
    delivery_id: int
    attempts: int
    lease: datetime
    event_id: str
    event_type: str
    event_created: datetime
    data: dict[str, Any]
    url: str
    secret: str
    endpoint_deleted: bool


def event_body(event_id: str, event_type: str, created: datetime, data: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {"id": event_id, "type": event_type, "created": int(created.timestamp()), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


async def _claim(uow: UnitOfWork, now: datetime, limit: int, lease: timedelta) -> list[_Claimed]:
    d, e, w = db.webhook_deliveries, db.outbox_events, db.webhook_endpoints
    due = (
        select(d.c.id)
        .where(
            d.c.status == "pending",
            d.c.next_attempt_at <= now,
            or_(d.c.locked_until.is_(None), d.c.locked_until <= now),
        )
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit)
    )
    if uow.is_postgres:
        due = due.with_for_update(skip_locked=True)
    ids = [row[0] for row in (await uow.conn.execute(due)).all()]
    if not ids:
        return []
    until = now + lease
    await uow.conn.execute(update(d).where(d.c.id.in_(ids)).values(locked_until=until, updated_at=now))
    rows = (
        (
            await uow.conn.execute(
                select(
                    d.c.id,
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
            )
        )
        .mappings()
        .all()
    )
    await uow.commit()
    return [
        _Claimed(
            delivery_id=r["id"],
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


async def deliver_webhooks(
    uow_factory: UnitOfWorkFactory,
    sender: WebhookSender,
    clock: Clock,
    *,
    limit: int = 100,
    lease: timedelta = timedelta(seconds=60),
) -> int:
    """Send one batch of due webhook deliveries; returns how many attempts were made.

    Safe with any number of concurrent callers (claims are leased, see the module docstring).
    """
    async with uow_factory() as uow:
        claimed = await _claim(uow, clock.now(), limit, lease)
    attempts = 0
    for item in claimed:
        status_code: int | None = None
        error: str | None = None
        started = time.perf_counter()
        if item.endpoint_deleted:
            error = "endpoint deleted"
        else:
            body = event_body(item.event_id, item.event_type, item.event_created, item.data)
            timestamp = int(clock.now().timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "minipay-webhooks/1",
                SIGNATURE_HEADER: sign_webhook(body, item.secret, timestamp),
                "Minipay-Event-Id": item.event_id,
            }
            attempts += 1
            try:
                status_code = await sender.send(item.url, body, headers)
            except Exception as exc:  # any failure of the receiver is just a failed attempt
                error = f"{type(exc).__name__}: {exc}"[:400]
        duration_ms = int((time.perf_counter() - started) * 1000)
        await _record_attempt(uow_factory, item, clock.now(), status_code, error, duration_ms)
    return attempts


async def _record_attempt(
    uow_factory: UnitOfWorkFactory,
    item: _Claimed,
    now: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
) -> None:
    d = db.webhook_deliveries
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
    async with uow_factory() as uow:
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
        # Fenced by the lease: if our lease ran out and someone else claimed the row, leave it to them.
        await uow.conn.execute(
            update(d).where(d.c.id == item.delivery_id, d.c.locked_until == item.lease).values(**values)
        )
        await uow.commit()
    if not ok:
        log.info(
            "webhook attempt failed", extra={"event_id": item.event_id, "status_code": status_code, "error": error}
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
        "deliveries": await delivery_log(uow_factory, event_id),
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


async def delivery_log(uow_factory: UnitOfWorkFactory, event_id: str) -> list[dict[str, Any]]:
    """Every delivery of an event with its attempts (for the API and for support)."""
    d, a = db.webhook_deliveries, db.webhook_attempts
    async with uow_factory() as uow:
        deliveries = (
            (await uow.conn.execute(select(d).where(d.c.event_id == event_id).order_by(d.c.id))).mappings().all()
        )
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
