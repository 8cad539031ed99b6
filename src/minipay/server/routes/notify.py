"""The WeChat callback routes (payment and refund notifications): bounded body reads, XML answers.

Each is a plain ASGI endpoint (:class:`NotifyEndpoint`): it takes the raw request and answers XML,
so none of FastAPI's per-request work (dependency solving, the request and response objects, its
exception layers) applies to it. They are the busiest routes of the service: answered before routing,
by :class:`~minipay.server.routes.early.EarlyRoutes`; the routes stay in the router, which answers
them when that layer is left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from minipay.server._guards import BodyReadTimeout
from minipay.server._http import Metrics
from minipay.server.bootstrap import Container
from minipay.server.notifications import NotifyReply, handle_payment_notification, handle_refund_notification, reply
from minipay.server.settings import Settings

__all__ = ["NotifyEndpoint", "add_routes"]

log = logging.getLogger("minipay.server")

NotifyHandler = Callable[..., Awaitable[NotifyReply]]

_CONTENT_LENGTH = b"content-length"
_XML_HEADERS = (b"content-type", b"application/xml")


class _Disconnected(Exception):
    """The client went away before its body was in."""


class _Reads:
    """How many notification bodies are being read now (both routes together)."""

    def __init__(self) -> None:
        self.now = 0


class NotifyEndpoint:
    """``POST /wechatpay/notify/{kind}``: the body read within its size cap and time limit, the
    handler's answer as XML. Anyone can send to these URLs (the signature is checked once the body
    is in): the time to send a body and the number of bodies read at once are bounded, so slow
    senders cannot pile up. It never answers 500: a failure inside is a FAIL that WeChat retries."""

    def __init__(
        self,
        kind: str,
        handler: NotifyHandler,
        *,
        settings: Settings,
        container: Container,
        metrics: Metrics,
        wake: asyncio.Event,
        reads: _Reads,
    ) -> None:
        self.kind, self.handler, self.settings, self.container = kind, handler, settings, container
        self.wake, self.reads = wake, reads
        self._counters: dict[str, Any] = {}
        self._metric = metrics.notifications

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings
        if self.reads.now >= settings.notify_max_concurrent_reads:
            await self._answer(send, reply(False, "too many notifications at once; retry", 503))
            return
        self.reads.now += 1
        try:
            async with asyncio.timeout(settings.notify_read_timeout):
                body = await self._capped_body(scope, receive)
        except (TimeoutError, BodyReadTimeout):
            log.debug("%s notification body not received in time", self.kind)
            await self._answer(send, reply(False, "request body timeout", 408))
            return
        except _Disconnected:
            # It is no error: a 400 that nobody reads (the server drops it), so that the request is
            # observed as the client's failure, not the service's.
            log.debug("client disconnected before its request body was read: POST %s", scope["path"])
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        finally:
            self.reads.now -= 1
        if body is None:
            await self._answer(send, reply(False, "body too large", 413))
            return
        container = self.container
        try:
            result = await self.handler(
                body, settings=settings, uow_factory=container.uow_factory, clock=container.clock
            )
        except Exception:  # database down...: WeChat retries on FAIL, so say so in its own format
            log.exception("%s notification could not be processed", self.kind)
            result = reply(False, "temporarily unavailable", 503)
        await self._answer(send, result)

    async def _capped_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body, or None when it is (or says it is) larger than ``notify_max_bytes``."""
        limit = self.settings.notify_max_bytes
        for name, value in scope["headers"]:
            if name == _CONTENT_LENGTH and (not value.isdigit() or int(value) > limit):
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _answer(self, send: Send, result: NotifyReply) -> None:
        outcome = result.outcome.split(":")[0]
        counter = self._counters.get(outcome)
        if counter is None:
            counter = self._counters[outcome] = self._metric.labels(self.kind, outcome)
        counter.inc()
        if result.outcome == "applied":
            self.wake.set()
        content = result.content
        headers = [_XML_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": result.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def add_routes(
    app: FastAPI, container: Container, settings: Settings, metrics: Metrics, wake: asyncio.Event
) -> list[Route]:
    """Add the two notification routes; returns them (for :class:`~minipay.server.routes.early.EarlyRoutes`)."""
    reads = _Reads()
    common: dict[str, Any] = {
        "settings": settings,
        "container": container,
        "metrics": metrics,
        "wake": wake,
        "reads": reads,
    }
    routes = [
        Route(
            "/wechatpay/notify/payment",
            NotifyEndpoint("payment", handle_payment_notification, **common),
            methods=["POST"],
            include_in_schema=False,
        ),
        Route(
            "/wechatpay/notify/refund",
            NotifyEndpoint("refund", handle_refund_notification, **common),
            methods=["POST"],
            include_in_schema=False,
        ),
    ]
    app.router.routes.extend(routes)
    return routes
