"""The WeChat callback routes (payment and refund notifications): bounded body reads, XML answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from minipay.server._guards import BodyReadTimeout
from minipay.server._http import Metrics
from minipay.server.bootstrap import Container
from minipay.server.notifications import NotifyReply, handle_payment_notification, handle_refund_notification, reply
from minipay.server.settings import Settings

__all__ = ["add_routes"]

log = logging.getLogger("minipay.server")

NotifyHandler = Callable[..., Awaitable[NotifyReply]]


def add_routes(app: FastAPI, container: Container, settings: Settings, metrics: Metrics, wake: asyncio.Event) -> None:

    # -- WeChat callbacks -------------------------------------------------------------------------------

    async def _capped_body(request: Request) -> bytes | None:
        limit = settings.notify_max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _xml(result: NotifyReply, kind: str) -> Response:
        metrics.notifications.labels(kind, result.outcome.split(":")[0]).inc()
        if result.outcome in ("applied",):
            wake.set()
        return Response(result.content, status_code=result.status_code, media_type="application/xml")

    reading = 0  # notification bodies being read now

    async def _notify(request: Request, kind: str, handler: NotifyHandler) -> Response:
        # Anyone can send to these URLs (the signature is checked once the body is in): the time to
        # send a body and the number of bodies read at once are bounded, so slow senders cannot pile up.
        nonlocal reading
        if reading >= settings.notify_max_concurrent_reads:
            return _xml(reply(False, "too many notifications at once; retry", 503), kind)
        reading += 1
        try:
            async with asyncio.timeout(settings.notify_read_timeout):
                body = await _capped_body(request)
        except (TimeoutError, BodyReadTimeout):
            log.debug("%s notification body not received in time", kind)
            return _xml(reply(False, "request body timeout", 408), kind)
        finally:
            reading -= 1
        if body is None:
            return _xml(reply(False, "body too large", 413), kind)
        try:
            result = await handler(body, settings=settings, uow_factory=container.uow_factory, clock=container.clock)
        except Exception:  # database down...: WeChat retries on FAIL, so say so in its own format
            log.exception("%s notification could not be processed", kind)
            result = reply(False, "temporarily unavailable", 503)
        return _xml(result, kind)

    async def notify_payment(request: Request) -> Response:
        return await _notify(request, "payment", handle_payment_notification)

    async def notify_refund(request: Request) -> Response:
        return await _notify(request, "refund", handle_refund_notification)

    # Plain Starlette routes: they take the raw request and answer XML, so FastAPI's per-request
    # dependency solving and response handling would be work for nothing on the busiest route
    # (3% of a first-time notification's CPU in a py-spy profile).
    app.add_route("/wechatpay/notify/payment", notify_payment, methods=["POST"], include_in_schema=False)
    app.add_route("/wechatpay/notify/refund", notify_refund, methods=["POST"], include_in_schema=False)
