"""Operations routes: liveness, readiness, Prometheus metrics and the API docs pages."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from minipay.server._http import Metrics, route_path
from minipay.server.auth import ops_access
from minipay.server.bootstrap import Container
from minipay.server.health import Backlog, BacklogGauges, WeChatMonitor
from minipay.server.routes.schemas import ErrorOut
from minipay.server.settings import Settings

__all__ = ["LivenessMiddleware", "add_routes"]

log = logging.getLogger("minipay.server")

_HEALTHZ_BODY = b'{"status":"ok"}'
_HEALTHZ_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", str(len(_HEALTHZ_BODY)).encode()), (b"content-type", b"application/json")],
}
_HEALTHZ_END = {"type": "http.response.body", "body": _HEALTHZ_BODY}


class LivenessMiddleware:
    """Answers ``GET /healthz`` before routing: the same answer as the route, without the router's
    search and FastAPI's request handling (a liveness probe is asked often, by every orchestrator, and
    says only that the process answers).

    It sits inside :class:`~minipay.server._http.ObserveMiddleware`, so the probe is still counted
    under its route in ``/metrics`` and gets its ``X-Request-Id``; the FastAPI route stays for the
    OpenAPI document and is what answers should this layer be left out.
    """

    def __init__(self, app: ASGIApp, *, route: Any) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and route_path(scope) == "/healthz":
            scope["route"] = self.route
            await send(dict(_HEALTHZ_START))
            await send(_HEALTHZ_END)
            return
        await self.app(scope, receive, send)


def add_routes(
    app: FastAPI,
    container: Container,
    settings: Settings,
    metrics: Metrics,
    wechat_monitor: WeChatMonitor,
    backlog_gauges: BacklogGauges,
) -> None:
    ops = [Depends(ops_access)]

    # -- health -------------------------------------------------------------------------------------------

    @app.get(
        "/healthz",
        tags=["ops"],
        response_class=JSONResponse,
        responses={
            200: {
                "description": 'the process answers: {"status": "ok"}',
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}
                },
            }
        },
    )
    async def healthz() -> Response:
        # Probed often, by every replica's orchestrator: a ready-made body, no serialisation.
        return Response(_HEALTHZ_BODY, media_type="application/json")

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={
            200: {
                "description": "ok, or degraded (WeChat unreachable): {status, checks}",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            503: {
                "description": "unavailable: the database is down ({status, checks})",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        },
    )
    async def readyz() -> JSONResponse:
        # 503 only when the database is down (this replica can do nothing); WeChat unreachable is
        # "degraded": reads and notifications still work, and every replica shares that fate.
        database: dict[str, Any] = {"status": "up"}
        try:
            async with container.uow_factory().reading() as uow:
                await uow.health.ping()
        except Exception as exc:
            database = {"status": "down", "error": type(exc).__name__}
        wechat = wechat_monitor.status()
        status = "ok"
        if database["status"] == "down":
            status = "unavailable"
        elif wechat.status == "down":
            status = "degraded"
        body = {"status": status, "checks": {"database": database, "wechat": wechat.to_json()}}
        return JSONResponse(body, status_code=503 if status == "unavailable" else 200)

    if settings.metrics_enabled:
        metrics_answers: dict[int | str, dict[str, Any]] = {
            200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
        }
        if settings.ops_api_keys:
            metrics_answers[401] = {"model": ErrorOut, "description": "missing or wrong ops key"}

        @app.get("/metrics", tags=["ops"], dependencies=ops, response_class=Response, responses=metrics_answers)
        async def metrics_endpoint() -> Response:
            try:
                now = container.clock.now()
                async with container.uow_factory().reading() as uow:
                    rows = await uow.health.backlog(now)
                backlog_gauges.set(Backlog.from_rows(rows, now))
            except Exception as exc:  # the request counters are still worth serving
                log.warning("backlog metrics unavailable: %s", type(exc).__name__)
            return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    if settings.docs_enabled:

        @app.get("/openapi.json", include_in_schema=False, dependencies=ops)
        async def openapi_json() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=ops)
        async def docs_page() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

        @app.get("/redoc", include_in_schema=False, dependencies=ops)
        async def redoc_page() -> HTMLResponse:
            return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")
