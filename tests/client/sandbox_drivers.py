"""Run the same contract test against ``Client`` and ``AsyncClient``, both talking to the sandbox in-process.

* sync: Starlette's ``TestClient`` (an ``httpx2.Client``) is passed as ``http_client=``; the sandbox
  app runs in the TestClient's portal loop for the whole test.
* async: ``httpx2.ASGITransport(app)``; coroutines run in one anyio blocking portal for the whole test.

A notification receiver (a Starlette app using :class:`NotificationHandler` with the client under
test) is wired into the sandbox through ``notify_transport``, so notifications travel for real.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from minipay.client import AsyncClient, Client, NotificationHandler, PaymentNotification, RefundNotification
from minipay.sandbox import SandboxConfig, create_app

NOTIFY_URL = "https://merchant.example.com/wxpay/notify"
REFUND_NOTIFY_URL = "https://merchant.example.com/wxpay/refund-notify"


@dataclass
class Received:
    payments: list[PaymentNotification] = field(default_factory=list)
    refunds: list[RefundNotification] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)


def receiver(handler_ref: list[NotificationHandler], mode: str, received: Received) -> Starlette:
    """The merchant's notify_url endpoints, built the way docs/client.md tells users to."""

    async def pay_notify(request: Request) -> Response:
        handler = handler_ref[0]
        body = await request.body()
        if mode == "sync":
            reply = handler.payment(body, received.payments.append)
        else:
            reply = await handler.apayment(body, received.payments.append)
        received.replies.append(reply.status_code)
        return Response(reply.content, status_code=reply.status_code, media_type=reply.media_type)

    async def refund_notify(request: Request) -> Response:
        handler = handler_ref[0]
        body = await request.body()
        if mode == "sync":
            reply = handler.refund(body, received.refunds.append)
        else:
            reply = await handler.arefund(body, received.refunds.append)
        received.replies.append(reply.status_code)
        return Response(reply.content, status_code=reply.status_code, media_type=reply.media_type)

    return Starlette(
        routes=[
            Route("/wxpay/notify", pay_notify, methods=["POST"]),
            Route("/wxpay/refund-notify", refund_notify, methods=["POST"]),
        ]
    )


@dataclass
class Driver:
    """The client under test plus the sandbox's control API, callable from a plain (sync) test."""

    mode: str
    client: Client | AsyncClient
    world: dict[str, Any]
    received: Received
    _run: Callable[[Callable[..., Any]], Any]
    _control: Callable[..., httpx2.Response]
    sleeps: list[float]
    events: list[Any]

    @property
    def institution(self) -> dict[str, Any]:
        return dict(self.world["institutions"][0])

    def sub(self, n: int = 0) -> dict[str, Any]:
        return dict(self.institution["sub_merchants"][n])

    def call(self, path: str, *args: Any, **kwargs: Any) -> Any:
        """``d.call("orders.create", ...)``: the method on the client, awaited in async mode."""
        target: Any = self.client
        for part in path.split("."):
            target = getattr(target, part)
        return self._run(functools.partial(target, *args, **kwargs))

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._control(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def login(self, user: str = "alice", sub: int = 0) -> tuple[str, str]:
        """A fresh ``js_code`` and the openid it stands for."""
        answer = self.control("POST", "/sandbox/login", json={"appid": self.sub(sub)["sub_appid"], "user": user})
        return answer["code"], answer["openid"]

    def advance(self, seconds: float) -> None:
        self.control("POST", "/sandbox/clock", json={"advance": seconds})

    def fault(self, endpoint: str, fault: str, **extra: Any) -> None:
        self.control("POST", "/sandbox/faults", json={"endpoint": endpoint, "fault": fault, **extra})

    def journal(self, endpoint: str) -> list[dict[str, Any]]:
        return list(self.control("GET", "/sandbox/requests", params={"endpoint": endpoint})["requests"])


def _client_options(world: dict[str, Any], base_url: str, sleeps: list[float], events: list[Any]) -> dict[str, Any]:
    inst = world["institutions"][0]
    sub = inst["sub_merchants"][0]
    return {
        "appid": inst["appid"],
        "mch_id": inst["mch_id"],
        "api_key": inst["api_key"],
        "sub_mch_id": sub["sub_mch_id"],
        "sub_appid": sub["sub_appid"],
        "base_url": base_url,
        "login_base_url": base_url,
        "random": lambda: 0.0,
        "on_event": events.append,
    }


@contextmanager
def sandbox_driver(mode: str, config: SandboxConfig | None = None, **client_options: Any) -> Iterator[Driver]:
    received = Received()
    handler_ref: list[NotificationHandler] = []
    app = create_app(config, seed=7, notify_transport=httpx2.ASGITransport(receiver(handler_ref, mode, received)))
    sleeps: list[float] = []
    events: list[Any] = []
    with ExitStack() as stack:
        if mode == "sync":
            test_client = stack.enter_context(TestClient(app, base_url="http://sandbox"))
            world = test_client.get("/sandbox/merchants").json()
            options = _client_options(world, "http://sandbox", sleeps, events) | client_options
            sync_client = Client(http_client=test_client, sleep=sleeps.append, **options)
            stack.callback(sync_client.close)
            handler_ref.append(NotificationHandler(sync_client))
            yield Driver(
                mode,
                sync_client,
                world,
                received,
                lambda fn: fn(),
                test_client.request,
                sleeps,
                events,
            )
        else:
            portal = stack.enter_context(anyio.from_thread.start_blocking_portal())
            transport = httpx2.ASGITransport(app)
            control = httpx2.AsyncClient(transport=transport, base_url="http://sandbox")
            stack.callback(portal.call, control.aclose)
            world = portal.call(control.get, "/sandbox/merchants").json()

            async def asleep(seconds: float) -> None:
                sleeps.append(seconds)

            options = _client_options(world, "http://sandbox", sleeps, events) | client_options
            async_client = AsyncClient(transport=transport, sleep=asleep, **options)
            stack.callback(portal.call, async_client.aclose)
            handler_ref.append(NotificationHandler(async_client))

            def control_call(method: str, path: str, **kwargs: Any) -> httpx2.Response:
                return portal.call(functools.partial(control.request, method, path, **kwargs))

            yield Driver(mode, async_client, world, received, portal.call, control_call, sleeps, events)
