"""The whole system in one process: sandbox + service + worker + a webhook receiver, over ASGI.

The tests are the composition root here (like ``minipay demo``): the sandbox delivers notifications
to the service app, the service calls the sandbox, webhooks go to a receiver that checks the
``Minipay-Signature`` on its own (``tests/webhook_receiver.py``). Everything
follows the sandbox's virtual clock; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.protocol import CHINA_TZ
from minipay.sandbox import SandboxConfig
from minipay.sandbox import create_app as create_sandbox_app
from minipay.serve import sandbox_settings
from minipay.server import db
from minipay.server.api import create_app
from minipay.server.bootstrap import build_container
from minipay.server.worker import Worker, WorkerConfig, worker_jobs
from minipay.server.worker.api import build_router
from tests.profiles import LENIENT
from tests.webhook_receiver import Receiver

#: A fixed start keeps bills and ids stable: 2026-03-02 10:00 China time.
START = datetime(2026, 3, 2, 10, 0, tzinfo=CHINA_TZ)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port in this event loop; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # A request cut at shutdown (the crash test's hanging query) is logged by uvicorn as an error,
    # which is expected there: keep uvicorn quiet.
    config = uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


class Forward(httpx2.AsyncBaseTransport):
    """An ASGI transport whose app is set later (the sandbox and the service need each other)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        assert self.app is not None, "Forward transport used before its app was set"
        return await httpx2.ASGITransport(self.app).handle_async_request(request)


class SandboxTime:
    """The service's clock in tests: the sandbox's virtual clock itself."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def now(self) -> datetime:
        now: datetime = self._backend.now()
        return now


@dataclass
class Stack:
    sandbox_app: Any
    service_app: Any
    sandbox: httpx2.AsyncClient
    service: httpx2.AsyncClient
    settings: Any
    container: Any
    receiver: Receiver
    keys: dict[str, str]
    engine: AsyncEngine
    workers: list[Worker] = field(default_factory=list)

    @property
    def backend(self) -> Any:
        return self.sandbox_app.state.sandbox

    @property
    def worker(self) -> Worker:
        return self.workers[0]

    def new_worker(self, config: WorkerConfig | None = None, name: str | None = None) -> Worker:
        worker = Worker.from_container(self.container, config=config or WorkerConfig(), name=name)
        self.workers.append(worker)
        return worker

    def headers(self, sub_mch_id: str = "1900000110", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[sub_mch_id]}", **extra}

    # -- the sandbox side ---------------------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        r = await self.sandbox.post("/sandbox/clock", json={"advance": seconds})
        r.raise_for_status()

    async def set_clock(self, when: datetime) -> None:
        r = await self.sandbox.post("/sandbox/clock", json={"set": when.isoformat()})
        r.raise_for_status()

    async def fault(self, **body: Any) -> None:
        r = await self.sandbox.post("/sandbox/faults", json=body)
        r.raise_for_status()

    async def journal(self, endpoint: str, out_trade_no: str | None = None) -> list[dict[str, Any]]:
        params = {"endpoint": endpoint, "limit": "1000"}
        if out_trade_no:
            params["out_trade_no"] = out_trade_no
        r = await self.sandbox.get("/sandbox/requests", params=params)
        r.raise_for_status()
        requests: list[dict[str, Any]] = r.json()["requests"]
        return requests

    async def notifications(self, out_trade_no: str) -> list[dict[str, Any]]:
        r = await self.sandbox.get("/sandbox/notifications", params={"out_trade_no": out_trade_no})
        r.raise_for_status()
        found: list[dict[str, Any]] = r.json()["notifications"]
        return found

    # -- the mini program + merchant side -----------------------------------------------------------

    async def login(self, user: str = "alice", sub_appid: str = "wx1234567890abcdef") -> str:
        code = (await self.sandbox.post("/sandbox/login", json={"appid": sub_appid, "user": user})).json()["code"]
        r = await self.service.post("/v1/sessions", json={"code": code}, headers=self.headers())
        assert r.status_code == 200, r.text
        openid: str = r.json()["openid"]
        return openid

    async def create_payment(self, amount: int = 1000, **extra: Any) -> dict[str, Any]:
        openid = extra.pop("openid", None) or await self.login()
        body = {"amount": amount, "currency": "HKD", "description": "Coffee", "openid": openid, **extra}
        r = await self.service.post(
            "/v1/payments", json=body, headers=self.headers(**{"Idempotency-Key": secrets.token_hex(8)})
        )
        assert r.status_code == 201, r.text
        payment: dict[str, Any] = r.json()
        return payment

    async def pay(self, payment: dict[str, Any], **extra: Any) -> dict[str, Any]:
        r = await self.sandbox.post("/sandbox/pay", json={**payment["pay_params"], **extra})
        r.raise_for_status()
        answer: dict[str, Any] = r.json()
        return answer

    async def payment(self, payment_id: str) -> dict[str, Any]:
        r = await self.service.get(f"/v1/payments/{payment_id}", headers=self.headers())
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    async def refund(self, payment_id: str, amount: int) -> dict[str, Any]:
        r = await self.service.post(
            f"/v1/payments/{payment_id}/refunds",
            json={"amount": amount},
            headers=self.headers(**{"Idempotency-Key": secrets.token_hex(8)}),
        )
        assert r.status_code == 201, r.text
        found: dict[str, Any] = r.json()
        return found

    async def get_refund(self, refund_id: str) -> dict[str, Any]:
        r = await self.service.get(f"/v1/refunds/{refund_id}", headers=self.headers())
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    # -- the database -------------------------------------------------------------------------------

    async def outbox(self, event_type: str, payment_id: str | None = None) -> list[dict[str, Any]]:
        t = db.outbox_events
        query = select(t).where(t.c.type == event_type)
        if payment_id:
            query = query.where(t.c.payment_id == payment_id)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def job(self, kind: str, key: str) -> dict[str, Any]:
        t = worker_jobs
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t).where(t.c.kind == kind, t.c.key == key))).mappings().first()
        assert row is not None, f"no {kind} job for {key}"
        return dict(row)


@asynccontextmanager
async def running_stack(
    database_url: str,
    *,
    engine: AsyncEngine | None = None,
    worker_config: WorkerConfig | None = None,
    seed: int = 7,
    background: Sequence[Any] = (),
    sandbox_config: SandboxConfig | None = None,
) -> AsyncIterator[Stack]:
    """Build, start (lifespans) and tear down the whole system (the sandbox: ``sandbox_config``,
    else :data:`LENIENT`)."""
    to_service = Forward()
    sandbox_app = create_sandbox_app(sandbox_config or LENIENT, seed=seed, start=START, notify_transport=to_service)
    backend = sandbox_app.state.sandbox
    clock = SandboxTime(backend)
    receiver = Receiver()
    sub_ids = [s.sub_mch_id for i in backend.config.institutions for s in i.sub_merchants]
    keys = {"admin": "adm_" + secrets.token_hex(20), **{s: "sk_" + secrets.token_hex(20) for s in sub_ids}}
    settings = sandbox_settings(
        backend.config,
        sandbox_url="http://sandbox",
        service_url="http://service",
        database_url=database_url,
        keys=keys,
    ).model_copy(update={"webhook_dispatch": False})
    container = build_container(
        settings,
        engine=engine,
        clock=clock,
        wechat_transport=httpx2.ASGITransport(sandbox_app),
        webhook_transport=httpx2.ASGITransport(receiver.app()),
    )
    service_app = create_app(settings, container=container, routers=[build_router()], background=background)
    to_service.app = service_app
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(service_app.router.lifespan_context(service_app))
        sandbox_http = await stack.enter_async_context(
            httpx2.AsyncClient(transport=httpx2.ASGITransport(sandbox_app), base_url="http://sandbox")
        )
        service_http = await stack.enter_async_context(
            httpx2.AsyncClient(transport=httpx2.ASGITransport(service_app), base_url="http://service")
        )
        r = await service_http.post(
            "/v1/webhook-endpoints",
            json={"url": "http://receiver/hooks"},
            headers={"Authorization": f"Bearer {keys['1900000110']}"},
        )
        assert r.status_code in (200, 201), r.text
        receiver.secret = r.json()["secret"]
        s = Stack(
            sandbox_app=sandbox_app,
            service_app=service_app,
            sandbox=sandbox_http,
            service=service_http,
            settings=settings,
            container=container,
            receiver=receiver,
            keys=keys,
            engine=container.engine,
        )
        s.new_worker(worker_config, name="worker-1")
        try:
            yield s
        finally:
            for worker in s.workers:
                await worker.aclose()
