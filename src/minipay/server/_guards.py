"""A bound on the time a client may take to send its request body.

Without one, a client that sends a body slowly (or stops half-way without closing) holds a
request, its memory and, for a notification, a database-bound handler for as long as it likes;
a thousand of them slowed ``/healthz`` down 100-fold. :class:`BodyDeadlineMiddleware` gives every
request ``seconds`` from its first body read to its last; past that the read raises
:class:`BodyReadTimeout`, answered ``408 request_timeout``. Requests that read no body are untouched.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyDeadlineMiddleware", "BodyReadTimeout"]


class BodyReadTimeout(HTTPException):
    """The request body did not arrive within its deadline (an HTTP 408)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


class BodyDeadlineMiddleware:
    """Plain ASGI: bounds the time between the first and the last ``http.request`` message."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:  # the body is in: what follows is the wait for a disconnect, unbounded
                return await receive()
            if deadline is None:
                # Looked up at the first read, not per request: most requests read no body, and
                # asyncio.get_running_loop() costs a getpid() system call on Python 3.11.
                deadline = asyncio.get_running_loop().time() + self.seconds
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyReadTimeout(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
