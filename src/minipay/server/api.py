"""The HTTP API (FastAPI), built by :func:`create_app` — never at import time.

JSON in and out, ``Authorization: Bearer <api key>``; errors are ``{"error": {"code", "message", "request_id"}}``
with a fitting status, never a traceback. OpenAPI at ``/docs``. See ``docs/server.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import httpx2
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from minipay.server import db, tracing
from minipay.server._guards import BodyDeadlineMiddleware
from minipay.server._http import Metrics, ObserveMiddleware
from minipay.server._redact import install_url_redaction
from minipay.server.auth import install_api_keys
from minipay.server.bootstrap import Container, build_container
from minipay.server.console import build_console_router
from minipay.server.health import BacklogGauges, WeChatMonitor
from minipay.server.ports import Clock, PaymentGateway, WebhookSender
from minipay.server.routes import notify, ops, payments, refunds, webhooks
from minipay.server.routes.early import EarlyRoutes, shadowed
from minipay.server.routes.errors import honest_schema, install_error_handlers
from minipay.server.settings import SHUTDOWN_GRACE, Settings
from minipay.server.webhooks import (
    DeliveryLimits,
    WebhookDispatcher,
)

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("minipay.server")

#: Seconds the start-up waits for the statement pool's connections before it serves without them.
STATEMENT_POOL_OPEN_TIMEOUT = 10.0


async def _open_statement_pool(container: Container) -> None:
    """On PostgreSQL, open the statement pool's connections (each warmed up, ``_postgres``) before
    the first request: otherwise the first requests each wait for a connection to be made and its
    first statements planned. A database not reachable yet is no reason not to start: connections
    are then made as requests need them (and readiness says what is wrong)."""
    engine = container.engine
    if not isinstance(engine, db.PgEngine):
        return
    try:
        async with asyncio.timeout(STATEMENT_POOL_OPEN_TIMEOUT):
            await engine.statements.fill()
    except Exception as error:  # the message may quote the server: the type is enough here
        log.warning(
            "statement pool not opened at start-up (%s): connections are made as requests need them",
            type(error).__name__,
        )


BackgroundTask = Callable[[Container, asyncio.Event], Coroutine[Any, Any, None]]


# -- the app ------------------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    container: Container | None = None,
    gateway: PaymentGateway | None = None,
    clock: Clock | None = None,
    webhook_sender: WebhookSender | None = None,
    wechat_transport: httpx2.AsyncBaseTransport | None = None,
    webhook_transport: httpx2.AsyncBaseTransport | None = None,
    background: Sequence[BackgroundTask] = (),
    routers: Sequence[APIRouter] = (),
    shutdown_grace: float = SHUTDOWN_GRACE,
) -> FastAPI:
    """Build the service. ``background`` tasks (e.g. the worker) run for the app's lifetime and get
    the container and a stop event; ``routers`` are mounted as they are (e.g. reconciliation).
    At shutdown the stop event is set and the tasks get ``shutdown_grace`` real seconds (in all) to
    return, so a delivery or job in flight completes; the ones still running are then cancelled.

    Under ASGI servers the lifespan runs migrations (``settings.run_migrations``) and starts the
    webhook dispatcher (``settings.webhook_dispatch``); in-process tests enter
    ``app.router.lifespan_context(app)`` themselves.
    """
    if container is None:
        container = build_container(
            settings,
            gateway=gateway,
            clock=clock,
            webhook_sender=webhook_sender,
            wechat_transport=wechat_transport,
            webhook_transport=webhook_transport,
        )
    metrics = Metrics()
    wechat_monitor = WeChatMonitor(metrics.registry)
    backlog_gauges = BacklogGauges(metrics.registry)
    observers = getattr(container.gateway, "observers", None)
    if isinstance(observers, list):  # the SDK gateway (a test may plug in another)
        observers += [wechat_monitor, tracing.wechat_observer]
    tracing.setup(settings.tracing)
    wake = asyncio.Event()

    async def dispatcher(c: Container, stop: asyncio.Event) -> None:
        # Deliveries run concurrently in tasks of their own (webhooks.WebhookDispatcher): a receiver
        # that hangs holds its own slots until the attempt's deadline, nobody else's.
        webhooks = WebhookDispatcher(
            c.uow_factory,
            c.webhook_sender,
            c.clock,
            limits=DeliveryLimits.from_settings(c.settings),
            on_attempt=metrics.webhook_attempts.inc,
        )
        await webhooks.run(stop, interval=settings.webhook_dispatch_interval, wake=wake)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations:
            from minipay.server.migrations import upgrade

            await upgrade(container.engine)
        await _open_statement_pool(container)
        stop = asyncio.Event()
        tasks_to_run: list[BackgroundTask] = list(background)
        if settings.webhook_dispatch:
            tasks_to_run.append(dispatcher)
        tasks = [asyncio.create_task(task(container, stop)) for task in tasks_to_run]
        try:
            yield
        finally:
            stop.set()
            wake.set()
            # A webhook delivery or a job in flight finishes first (up to `shutdown_grace` seconds in
            # all, for every task together); whatever is still running then is cancelled.
            if tasks:
                _, unfinished = await asyncio.wait(tasks, timeout=shutdown_grace)
                if unfinished:
                    log.warning(
                        "%d background task(s) still running %.1f s after stop: cancelled",
                        len(unfinished),
                        shutdown_grace,
                    )
                for task in unfinished:
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await container.aclose()

    app = FastAPI(
        title="Minipay payment service",
        version="1",
        description="WeChat Pay Global Mini Program payments as a JSON API (see docs/server.md).",
        lifespan=lifespan,
        # The service observes its requests itself (_http.ObserveMiddleware: metrics, the request's
        # span when tracing is on): FastAPI's own OpenTelemetry instrumentation would record every
        # request a second time, and even switched off by an unconfigured provider it asks the
        # providers at every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Served below, behind settings.docs_enabled and the ops keys.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.container = container
    app.state.metrics = metrics
    app.state.wechat_monitor = wechat_monitor

    install_error_handlers(app)
    install_url_redaction()  # uvicorn's access log and httpx2 write whole URLs
    install_api_keys(app, settings)
    # The router tries routes in the order they were added, a path match each: the busiest first
    # (WeChat's notifications, then the API); no two of these groups share a path.
    notify_routes = notify.add_routes(app, container, settings, metrics, wake)
    payment_read, payment_create = payments.add_routes(app, container)
    refunds.add_routes(app, container)
    webhooks.add_routes(app, container)
    ops.add_routes(app, container, settings, metrics, wechat_monitor, backlog_gauges)
    app.include_router(build_console_router(container))  # the ops console's pages, /console

    for router in routers:
        app.include_router(router)
    taken = shadowed(app.routes, [payment_read])
    if taken:
        raise ValueError(f"route(s) {', '.join(taken)} would be answered as GET /v1/payments/{{payment_id}}")

    # Plain ASGI layers, innermost first: /healthz, WeChat's notifications, the payment creation and read
    # answered before routing (routes.early), the body-read deadline, then the observer that sees
    # every request whole (metrics, access log, request id).
    healthz_route = next(r for r in app.routes if getattr(r, "path", None) == "/healthz")
    app.add_middleware(EarlyRoutes, routes=[*notify_routes, payment_create.route], items=[payment_read])
    app.add_middleware(ops.LivenessMiddleware, route=healthz_route)
    app.add_middleware(BodyDeadlineMiddleware, seconds=settings.request_read_timeout)
    app.add_middleware(ObserveMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = honest_schema(
                get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes),
                ops_protected=bool(settings.ops_api_keys),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """Deprecated: start ``uvicorn --factory minipay.server.asgi:app_from_env`` instead (the same app).

    Kept so that existing deployments keep starting; it builds the app exactly as
    :func:`minipay.server.asgi.app_from_env` does.
    """
    warnings.warn(
        "minipay.server.api:app_from_env is deprecated; use minipay.server.asgi:app_from_env",
        DeprecationWarning,
        stacklevel=2,
    )
    from minipay.server.settings import load_settings
    from minipay.server.worker.api import build_router

    return create_app(load_settings(), routers=[build_router()])
