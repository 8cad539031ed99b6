"""The merchant's webhook endpoint in tests: one receiver for every tier (service, attack, e2e).

It records every delivery and can play the merchant's systems: answer a chosen status, take its
time, be down for the next few deliveries, and, given the endpoint's secret, check the
``Minipay-Signature`` on its own (an HMAC computed here, not the service's helper) and refuse a
bad one, as a real receiver does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["Receiver", "verify_signature"]


@dataclass
class Receiver:
    """A webhook endpoint at ``/hooks`` (mount :meth:`app` where the service sends)."""

    #: The endpoint's signing secret; when set, every delivery's signature is checked (400 if bad).
    secret: str = ""
    #: The status answered to a delivery it accepts.
    status: int = 200
    #: Real seconds it takes before it answers (a slow merchant).
    delay: float = 0.0
    #: Answer 500 to this many deliveries (the merchant's systems are down).
    fail_next: int = 0
    #: Requests that reached it; ``received`` holds those it accepted, as (headers, body).
    arrivals: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    #: The accepted bodies, parsed; ``rejected`` the reasons of refused signatures.
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.arrivals += 1
            body = await request.body()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_next > 0:
                self.fail_next -= 1
                return JSONResponse({"error": "down for maintenance"}, status_code=500)
            if self.secret:
                problem = verify_signature(body, request.headers.get("minipay-signature", ""), self.secret)
                if problem:
                    self.rejected.append(problem)
                    return JSONResponse({"error": problem}, status_code=400)
            self.received.append(({k.lower(): v for k, v in request.headers.items()}, body))
            self.events.append(json.loads(body))
            return JSONResponse({"ok": True}, status_code=self.status)

        return Starlette(routes=[Route("/hooks", hook, methods=["POST"])])

    def types(self) -> list[str]:
        """The event types accepted, in order."""
        return [e["type"] for e in self.events]


def verify_signature(
    body: bytes, header: str, secret: str, *, now: int | None = None, tolerance: int = 300
) -> str | None:
    """``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` against the wall clock (as a receiver
    checks it): None when valid, else the reason."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if "t" not in parts or "v1" not in parts or not parts["t"].isdigit():
        return "malformed Minipay-Signature"
    current = int(time.time()) if now is None else now
    if abs(current - int(parts["t"])) > tolerance:
        return "stale Minipay-Signature"
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        return "Minipay-Signature does not match"
    return None
