"""The HTTP API (FastAPI), built by :func:`create_app` — never at import time.

JSON in and out, ``Authorization: Bearer <api key>``; errors are ``{"error": {"code", "message", "request_id"}}``
with a fitting status, never a traceback. OpenAPI at ``/docs``. See ``docs/server.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx2
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from minipay.server import tracing
from minipay.server._guards import BodyDeadlineMiddleware, BodyReadTimeout
from minipay.server._http import Metrics, ObserveMiddleware
from minipay.server._redact import install_url_redaction
from minipay.server.bootstrap import Container, build_container
from minipay.server.console import build_console_router
from minipay.server.db import reader_engine
from minipay.server.domain import PaymentStatus, RefundStatus
from minipay.server.health import BacklogGauges, WeChatMonitor, refresh_backlog
from minipay.server.logs import REQUEST_ID_HEADER, current_request_id, log_context
from minipay.server.notifications import NotifyReply, handle_payment_notification, handle_refund_notification, reply
from minipay.server.ports import Clock, PaymentGateway, WebhookSender
from minipay.server.services import (
    MAX_AMOUNT,
    Conflict,
    CreatePayment,
    InvalidRequest,
    NotFound,
    Principal,
    ServiceError,
    payment_view,
    refund_view,
)
from minipay.server.settings import Settings
from minipay.server.uow import ConcurrentUpdate
from minipay.server.webhooks import (
    DeliveryLimits,
    EndpointLimitReached,
    WebhookDispatcher,
    create_endpoint,
    delete_endpoint,
    get_event,
    list_endpoints,
    list_events,
)

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("minipay.server")

BackgroundTask = Callable[[Container, asyncio.Event], Coroutine[Any, Any, None]]
NotifyHandler = Callable[..., Awaitable[NotifyReply]]


def _error(status: int, code: str, message: str, *, request_id: str | None = None) -> JSONResponse:
    """The JSON error body, with the request's id (``X-Request-Id``) so a report can be traced."""
    rid = request_id if request_id is not None else current_request_id()
    return JSONResponse({"error": {"code": code, "message": message, "request_id": rid}}, status_code=status)


# -- request bodies ----------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionIn(_Body):
    code: str = Field(min_length=1, max_length=128)
    sub_appid: str | None = None


# Constraints the service checks itself (answering 400 invalid_field) are published in the schema
# with json_schema_extra, so generated clients know them and the error codes stay the service's.
def _schema(**constraints: Any) -> Any:
    return Field(json_schema_extra=constraints)


DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class PaymentIn(_Body):
    amount: StrictInt = Field(
        description="minor units of currency (e.g. 1050 = 10.50 HKD)",
        json_schema_extra={"minimum": 1, "maximum": MAX_AMOUNT},
    )
    currency: str = Field(
        description="ISO 4217: the sub-merchant's settlement currency or CNY",
        json_schema_extra={"pattern": "^[A-Z]{3}$"},
    )
    description: str = _schema(minLength=1, maxLength=127)
    openid: str = _schema(minLength=1, maxLength=128)
    out_trade_no: str | None = None
    attach: str | None = None
    client_ip: str | None = None
    expires_in: StrictInt | None = Field(
        default=None,
        description="seconds until the payment expires",
        json_schema_extra={"minimum": 60, "maximum": 7 * 24 * 3600},
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    sub_mch_id: str | None = Field(default=None, description="admin key only: which sub-merchant")


class RefundIn(_Body):
    amount: StrictInt = Field(
        description="minor units, at most what is left to refund", json_schema_extra={"minimum": 1}
    )
    reason: str | None = None


class EndpointIn(_Body):
    url: str
    sub_mch_id: str | None = Field(default=None, description="admin key only: limit to one sub-merchant")


# -- auth ---------------------------------------------------------------------------------------------


def _key_digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


async def _principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hand-off per request.
    if not authorization or not authorization.startswith("Bearer "):
        raise ServiceError("missing 'Authorization: Bearer <api key>'", code="unauthorized", status=401)
    digest = _key_digest(authorization.removeprefix("Bearer ").strip().encode())
    # Keys are looked up by their SHA-256 (the lookup's timing tells nothing about a key), then the
    # digest is compared in constant time.
    entry: tuple[bytes, Principal] | None = request.app.state.auth_index.get(digest)
    if entry is None or not hmac.compare_digest(entry[0], digest):
        raise ServiceError("invalid API key", code="unauthorized", status=401)
    return entry[1]


def _ops_access(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """With ``ops_api_keys`` configured, the operations pages need one of them as the bearer token."""
    ops_keys: list[bytes] = request.app.state.ops_keys
    if not ops_keys:
        return
    presented = (authorization or "").removeprefix("Bearer ").strip().encode()
    found = False
    for key in ops_keys:  # compare with every key, each in constant time
        found |= hmac.compare_digest(key, presented)
    if not found or not (authorization or "").startswith("Bearer "):
        raise ServiceError("this page needs 'Authorization: Bearer <ops key>'", code="unauthorized", status=401)


Caller = Annotated[Principal, Depends(_principal)]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


# -- response shapes (OpenAPI documentation; the views in services.py produce them) ------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = Field(description="the request's id, as in its response header and the logs")


class ErrorOut(BaseModel):
    error: ErrorDetail


class PayParamsOut(BaseModel):
    timeStamp: str  # the names wx.requestPayment takes
    nonceStr: str
    package: str
    signType: str
    paySign: str


class PaymentOut(BaseModel):
    id: str
    object: str = "payment"
    status: str = Field(json_schema_extra={"enum": [s.value for s in PaymentStatus]})
    paid_after_close: bool
    out_trade_no: str
    amount: int
    currency: str = _schema(pattern="^[A-Z]{3}$")
    amount_refunded: int
    description: str
    openid: str
    attach: str | None
    metadata: dict[str, str]
    sub_mch_id: str
    sub_appid: str
    transaction_id: str | None
    cash_fee: int | None
    cash_fee_type: str | None
    pay_params: PayParamsOut | None
    expires_at: DateTime | None
    paid_at: DateTime | None
    closed_at: DateTime | None
    created_at: DateTime
    updated_at: DateTime
    last_error: str | None


class PaymentListOut(BaseModel):
    data: list[PaymentOut]
    has_more: bool
    next_cursor: str | None


class RefundOut(BaseModel):
    id: str
    object: str = "refund"
    payment_id: str
    status: str = Field(json_schema_extra={"enum": [s.value for s in RefundStatus]})
    amount: int
    currency: str
    out_refund_no: str
    refund_id: str | None
    reason: str | None
    failure_code: str | None
    sub_mch_id: str
    succeeded_at: DateTime | None
    created_at: DateTime
    updated_at: DateTime


class RefundListOut(BaseModel):
    data: list[RefundOut]


class SessionOut(BaseModel):
    openid: str
    unionid: str | None = None


class EndpointItem(BaseModel):
    id: str
    url: str
    sub_mch_id: str | None
    created_at: DateTime


class EndpointOut(EndpointItem):
    secret: str = Field(description="the signing secret: shown only now, when the endpoint is created")


class EndpointListOut(BaseModel):
    data: list[EndpointItem]


class DeletedOut(BaseModel):
    id: str
    deleted: bool


class EventOut(BaseModel):
    id: str
    type: str
    created: int = Field(description="Unix seconds")
    data: dict[str, Any]


class EventListOut(BaseModel):
    data: list[EventOut]


class AttemptOut(BaseModel):
    at: DateTime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    endpoint_id: str
    status: str = _schema(enum=["pending", "succeeded", "failed"])
    attempts: list[AttemptOut]
    next_attempt_at: DateTime | None


class EventDetailOut(EventOut):
    deliveries: list[DeliveryOut] = Field(description="to this key's endpoints only (all, for the admin key)")


_HEALTHZ_BODY = b'{"status":"ok"}'

_ERROR_MEANING = {
    400: "invalid request: a field, parameter or header fails its constraints (never 422)",
    401: "missing or invalid API key",
    404: "no such object for this key (another sub-merchant's object is not found either)",
    408: "the request body did not arrive within request_read_timeout",
    409: "conflict: state, a reused Idempotency-Key or out_trade_no, a limit",
    502: "WeChat refused the request for good",
    503: "database or WeChat unavailable, or the object is busy: retry (Retry-After)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, each with the error model; 401 and 503 come with every /v1 route."""
    every = {401, 503, *codes}
    return {code: {"model": ErrorOut, "description": _ERROR_MEANING[code]} for code in sorted(every)}


def _replay(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": model, "description": "a repeat with a seen Idempotency-Key and the same body: the original"}
    }


# -- the app ------------------------------------------------------------------------------------------


#: Real seconds a stopping app waits for its background tasks (worker, webhook dispatcher) to return
#: after setting their stop event, before it cancels them.
SHUTDOWN_GRACE = 10.0


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
        # Served below, behind settings.docs_enabled and the ops keys.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.container = container
    app.state.metrics = metrics
    app.state.wechat_monitor = wechat_monitor
    services = container.services

    # -- errors ----------------------------------------------------------------------------------------

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        response = _error(exc.status, exc.code, exc.message)
        if exc.status == 503:
            response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid request"))
        )
        return _error(400, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthorized",
            408: "request_timeout",
            413: "body_too_large",
        }
        response = _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Every method of every route on this path (the router names only the first route's).
            allowed: set[str] = set()
            for route in request.app.router.routes:
                if route.matches(request.scope)[0] != Match.NONE:
                    allowed |= getattr(route, "methods", None) or set()
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request: Request, _: ClientDisconnect) -> Response:
        # The client went away while sending its body: nobody reads this answer, and it is no error.
        log.debug("client disconnected before its request body was read: %s %s", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(ConnectionError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", type(exc).__name__)
        response = _error(503, "database_unavailable", "the database is unavailable; retry later")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(ConcurrentUpdate)
    async def _busy(_: Request, exc: ConcurrentUpdate) -> JSONResponse:
        response = _error(503, "busy", "the object is being changed by other requests; retry")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside ObserveMiddleware (in Starlette's outermost layer): its context and its header
        # are gone, so the request id comes from the request's state.
        rid = getattr(request.state, "request_id", None)
        with log_context(rid):
            log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        response = _error(500, "internal_error", "internal error", request_id=rid)
        if rid is not None:
            response.headers[REQUEST_ID_HEADER] = rid
        return response

    app.add_middleware(BodyDeadlineMiddleware, seconds=settings.request_read_timeout)
    app.add_middleware(ObserveMiddleware, metrics=metrics)
    install_url_redaction()  # uvicorn's access log and httpx2 write whole URLs

    # -- auth --------------------------------------------------------------------------------------------

    keys: list[tuple[bytes, Principal]] = [
        (k.get_secret_value().encode(), Principal(None)) for k in settings.admin_api_keys
    ]
    for sub in settings.sub_merchants:
        keys.extend((k.get_secret_value().encode(), Principal(sub.sub_mch_id)) for k in sub.api_keys)
    app.state.auth_keys = keys
    app.state.auth_index = {_key_digest(key): (_key_digest(key), who) for key, who in keys}
    app.state.ops_keys = [k.get_secret_value().encode() for k in settings.ops_api_keys]
    ops = [Depends(_ops_access)]
    app.include_router(build_console_router(container))  # the ops console's pages, /console

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
            async with reader_engine(container.engine).connect() as conn:
                await conn.execute(text("SELECT 1"))
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
                backlog_gauges.set(await refresh_backlog(container.engine, container.clock))
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

    # -- sessions & payments ------------------------------------------------------------------------------

    @app.post("/v1/sessions", tags=["payments"], response_model=SessionOut, responses=_errors(400, 404, 408))
    async def create_session(body: SessionIn, caller: Caller) -> dict[str, Any]:
        """Step 1: exchange the ``wx.login`` code for the payer's ``openid`` (the session_key is never returned)."""
        return await services.login(caller, body.code, body.sub_appid)

    def _payment_json(p: Any, *, with_params: bool = True) -> dict[str, Any]:
        return payment_view(p, pay_params=services.pay_params_for(p) if with_params else None)

    @app.post(
        "/v1/payments",
        status_code=201,
        tags=["payments"],
        response_model=PaymentOut,
        responses=_replay(PaymentOut) | _errors(400, 404, 408, 409, 502),
    )
    async def create_payment(body: PaymentIn, caller: Caller, idempotency_key: IdemKey = None) -> JSONResponse:
        cmd = CreatePayment(**body.model_dump())
        payment, created = await services.create_payment(caller, cmd, idempotency_key)
        return JSONResponse(_payment_json(payment), status_code=201 if created else 200)

    @app.get(
        "/v1/payments/{payment_id}", tags=["payments"], response_model=PaymentOut, responses=_errors(400, 404, 502)
    )
    async def get_payment(payment_id: str, caller: Caller, sync: bool = False) -> JSONResponse:
        payment = await (
            services.sync_payment(caller, payment_id) if sync else services.get_payment(caller, payment_id)
        )
        # The view is built here to the documented shape: no response-model validation of it again.
        return JSONResponse(_payment_json(payment))

    @app.get("/v1/payments", tags=["payments"], response_model=PaymentListOut, responses=_errors(400))
    async def list_payments(
        caller: Caller,
        status: Annotated[str | None, Query(json_schema_extra={"enum": [s.value for s in PaymentStatus]})] = None,
        out_trade_no: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        for value in (created_gte, created_lt):
            if value is not None and value.tzinfo is None:
                raise InvalidRequest("created_gte/created_lt need a timezone offset", code="invalid_field")
            try:
                if value is not None:
                    value.astimezone(UTC)  # 0001-01-01T00:00+14:00 has no UTC equivalent
            except OverflowError:
                raise InvalidRequest("created_gte/created_lt is out of range", code="invalid_field") from None
        rows, next_cursor = await services.list_payments(
            caller,
            status=status,
            out_trade_no=out_trade_no,
            created_gte=created_gte,
            created_lt=created_lt,
            cursor=cursor,
            limit=limit,
        )
        return {
            "data": [_payment_json(p, with_params=False) for p in rows],
            "has_more": next_cursor is not None,
            "next_cursor": next_cursor,
        }

    @app.post(
        "/v1/payments/{payment_id}/pay-params",
        tags=["payments"],
        response_model=PaymentOut,
        responses=_errors(404, 409, 502),
    )
    async def pay_params(payment_id: str, caller: Caller) -> dict[str, Any]:
        return _payment_json(await services.refresh_pay_params(caller, payment_id))

    @app.post(
        "/v1/payments/{payment_id}/close",
        tags=["payments"],
        response_model=PaymentOut,
        responses=_errors(404, 409, 502),
    )
    async def close_payment(payment_id: str, caller: Caller) -> dict[str, Any]:
        return _payment_json(await services.close_payment(caller, payment_id))

    # -- refunds ------------------------------------------------------------------------------------------

    @app.post(
        "/v1/payments/{payment_id}/refunds",
        status_code=201,
        tags=["refunds"],
        response_model=RefundOut,
        responses=_replay(RefundOut) | _errors(400, 404, 408, 409, 502),
    )
    async def create_refund(
        payment_id: str, body: RefundIn, caller: Caller, idempotency_key: IdemKey = None
    ) -> JSONResponse:
        if not idempotency_key:
            raise InvalidRequest("refunds need an Idempotency-Key header", code="idempotency_key_required")
        refund, created = await services.create_refund(caller, payment_id, body.amount, body.reason, idempotency_key)
        return JSONResponse(refund_view(refund), status_code=201 if created else 200)

    @app.get(
        "/v1/payments/{payment_id}/refunds", tags=["refunds"], response_model=RefundListOut, responses=_errors(404)
    )
    async def list_refunds(payment_id: str, caller: Caller) -> dict[str, Any]:
        return {"data": [refund_view(r) for r in await services.list_refunds(caller, payment_id)]}

    @app.get("/v1/refunds/{refund_id}", tags=["refunds"], response_model=RefundOut, responses=_errors(404))
    async def get_refund(refund_id: str, caller: Caller) -> dict[str, Any]:
        return refund_view(await services.get_refund(caller, refund_id))

    # -- webhook endpoints --------------------------------------------------------------------------------

    @app.post(
        "/v1/webhook-endpoints",
        status_code=201,
        tags=["webhooks"],
        response_model=EndpointOut,
        responses=_errors(400, 404, 408, 409),
    )
    async def add_endpoint(body: EndpointIn, caller: Caller) -> dict[str, Any]:
        scope = caller.sub_mch_id
        if body.sub_mch_id is not None:
            scope = services.sub_merchant(caller, body.sub_mch_id).sub_mch_id
        try:
            return await create_endpoint(
                container.uow_factory,
                url=body.url,
                sub_mch_id=scope,
                clock=container.clock,
                allow_private=container.settings.allow_private_webhook_urls,
                max_endpoints=container.settings.max_webhook_endpoints,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), code="invalid_field") from None
        except EndpointLimitReached as exc:
            raise Conflict(str(exc), code="endpoint_limit_reached") from None

    @app.get("/v1/webhook-endpoints", tags=["webhooks"], response_model=EndpointListOut, responses=_errors())
    async def get_endpoints(caller: Caller) -> dict[str, Any]:
        return {"data": await list_endpoints(container.uow_factory, sub_mch_id=caller.sub_mch_id)}

    @app.delete(
        "/v1/webhook-endpoints/{endpoint_id}", tags=["webhooks"], response_model=DeletedOut, responses=_errors(404)
    )
    async def remove_endpoint(endpoint_id: str, caller: Caller) -> dict[str, Any]:
        if not await delete_endpoint(
            container.uow_factory, endpoint_id, sub_mch_id=caller.sub_mch_id, clock=container.clock
        ):
            raise NotFound("no such webhook endpoint")
        return {"id": endpoint_id, "deleted": True}

    @app.get("/v1/events", tags=["webhooks"], response_model=EventListOut, responses=_errors(400))
    async def events(
        caller: Caller, payment_id: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
    ) -> dict[str, Any]:
        """Webhook events (the outbox), newest first."""
        rows = await list_events(
            container.uow_factory, sub_mch_id=caller.sub_mch_id, payment_id=payment_id, limit=limit
        )
        return {"data": rows}

    @app.get("/v1/events/{event_id}", tags=["webhooks"], response_model=EventDetailOut, responses=_errors(404))
    async def event(event_id: str, caller: Caller) -> dict[str, Any]:
        """One event with its delivery log (every attempt, status code, error, duration)."""
        found = await get_event(container.uow_factory, event_id, sub_mch_id=caller.sub_mch_id)
        if found is None:
            raise NotFound("no such event")
        return found

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

    @app.post("/wechatpay/notify/payment", include_in_schema=False)
    async def notify_payment(request: Request) -> Response:
        return await _notify(request, "payment", handle_payment_notification)

    @app.post("/wechatpay/notify/refund", include_in_schema=False)
    async def notify_refund(request: Request) -> Response:
        return await _notify(request, "refund", handle_refund_notification)

    for router in routers:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _honest_schema(
                get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes),
                ops_protected=bool(settings.ops_api_keys),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _honest_schema(schema: dict[str, Any], *, ops_protected: bool) -> dict[str, Any]:
    """FastAPI's schema, corrected to what the service does: validation errors are 400 with the error
    model (FastAPI declares 422 and its own shape), and the API key is a bearer security scheme (the
    ``Authorization`` header parameter the routes read it from is not a parameter to fill in)."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key of this service (a sub-merchant's, or an admin key)",
    }
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            parameters = operation.get("parameters", [])
            kept = [
                p for p in parameters if not (p.get("in") == "header" and p.get("name", "").lower() == "authorization")
            ]
            if len(kept) != len(parameters) and (path.startswith("/v1/") or ops_protected):
                operation["security"] = [{"bearer": []}]
            if kept:
                operation["parameters"] = kept
            else:
                operation.pop("parameters", None)
            if (kept or "requestBody" in operation) and "400" not in responses:
                responses["400"] = {
                    "description": _ERROR_MEANING[400],
                    "content": {"application/json": {"schema": error_ref}},
                }
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def app_from_env() -> FastAPI:
    """The app from ``$MINIPAY_CONFIG`` + ``MINIPAY_*`` env, for ASGI servers and replicas::

    MINIPAY_CONFIG=/etc/minipay.toml uvicorn --factory minipay.server.api:app_from_env --workers 4
    """
    from minipay.server.settings import load_settings
    from minipay.server.worker.api import build_router

    # The same read API as ``minipay serve`` (reconciliation, queue health); the worker itself runs
    # as ``minipay worker`` processes beside the replicas.
    return create_app(load_settings(), routers=[build_router()])
