"""The notification dispatcher: POSTs notifications and judges the replies (spec 7.3, 7.4, 18.5).

Only HTTP 2xx with a body that parses to ``return_code=SUCCESS`` is an "ack". The retry
schedule lives in the backend (it is time, and time is the backend's); this module makes one
delivery (one or two copies) and records the attempts.

Targets: with an injected transport (in-process tests) any URL goes to that transport; over the
network only loopback hosts and the configured ``allow_hosts`` are contacted (a simulator that
posts anywhere is an SSRF engine).
"""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import datetime
from typing import Literal

import httpx2

from minipay.protocol import XMLError, decode_xml
from minipay.sandbox._config import NotifyConfig
from minipay.sandbox._models import Attempt, Notification

__all__ = ["Dispatcher", "is_ack"]

Verdict = Literal["ack", "nack", "timeout", "error", "blocked"]


def is_ack(status: int, body: bytes) -> bool:
    """The exact-SUCCESS rule: 2xx and an XML body whose ``return_code`` is ``SUCCESS``."""
    if not 200 <= status < 300:
        return False
    try:
        return decode_xml(body).get("return_code") == "SUCCESS"
    except XMLError:
        return False


class Dispatcher:
    """Sends notification bodies over ``transport`` (or the network) with a reply timeout."""

    def __init__(self, config: NotifyConfig, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.transport = transport

    def allowed(self, url: str) -> bool:
        if self.transport is not None:
            return True
        try:  # the parser that will connect decides which host this is (no urlsplit disagreement)
            parsed = httpx2.URL(url)
        except Exception:  # an unparsable URL reaches nobody
            return False
        host, port = parsed.host.lower(), parsed.port
        if host in self.config.allow_hosts or (port and f"{host}:{port}" in self.config.allow_hosts):
            return True
        if host in ("localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    async def deliver(
        self,
        n: Notification,
        at: datetime,
        *,
        copies: int,
        concurrent: bool,
        resend: bool = False,
        body: bytes | None = None,
        tamper: str | None = None,
    ) -> list[Attempt]:
        """Deliver ``copies`` copies of ``n`` (at the same virtual time ``at``) and record them.

        ``body`` replaces the notification's body (a forged copy, named by ``tamper``).
        """
        content = n.body if body is None else body
        if not self.allowed(n.url):
            results: list[tuple[int | None, str, Verdict, str | None]] = [
                (None, "", "blocked", "notify_url host is not loopback and not in notify.allow_hosts")
            ]
        elif concurrent:
            results = list(await asyncio.gather(*(self._post(n.url, content) for _ in range(copies))))
        else:
            results = [await self._post(n.url, content) for _ in range(copies)]
        made = []
        for i, (status, reply, verdict, error) in enumerate(results):
            attempt = Attempt(
                n=len(n.attempts) + 1,
                at=at,
                status=status,
                reply=reply,
                verdict=verdict,
                error=error,
                duplicate=i > 0,
                resend=resend,
                tamper=tamper,
            )
            n.attempts.append(attempt)
            made.append(attempt)
        return made

    async def _post(self, url: str, body: bytes) -> tuple[int | None, str, Verdict, str | None]:
        timeout = self.config.reply_timeout
        request = httpx2.Request(
            "POST",
            url,
            content=body,
            headers={"Content-Type": "text/xml; charset=utf-8", "User-Agent": "minipay-sandbox (WeChat Pay notify)"},
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
        )
        try:
            async with asyncio.timeout(timeout):
                if self.transport is not None:
                    status, content = await self._send(self.transport, request)
                else:
                    async with httpx2.AsyncHTTPTransport() as transport:
                        status, content = await self._send(transport, request)
        except TimeoutError:
            return None, "", "timeout", f"no reply within {timeout} s"
        except httpx2.TimeoutException:
            return None, "", "timeout", f"no reply within {timeout} s"
        except Exception as exc:  # the receiver failing in any way is a failed delivery, never ours
            return None, "", "error", f"{type(exc).__name__}: {exc}"[:300]
        reply = content[:1000].decode("utf-8", "replace")
        return status, reply, "ack" if is_ack(status, content) else "nack", None

    @staticmethod
    async def _send(transport: httpx2.AsyncBaseTransport, request: httpx2.Request) -> tuple[int, bytes]:
        response = await transport.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return response.status_code, content
