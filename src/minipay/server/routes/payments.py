"""Routes for sessions (``wx.login`` codes) and payments: create, read, list, pay params, close."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minipay.server._http import JSONBody, header
from minipay.server._json import dumps
from minipay.server.auth import AuthIndex, Caller, bearer_owner
from minipay.server.bootstrap import Container
from minipay.server.domain import PaymentStatus
from minipay.server.errors import ServiceError
from minipay.server.routes.schemas import (
    IdemKey,
    PaymentIn,
    PaymentListOut,
    PaymentOut,
    SessionIn,
    SessionOut,
    error_responses,
    replay_response,
)
from minipay.server.services import (
    CreatePayment,
    InvalidRequest,
    Services,
    payment_view,
)

__all__ = ["PaymentCreate", "PaymentRead", "add_routes"]

_AUTHORIZATION = b"authorization"
_CONTENT_TYPE = b"content-type"
_IDEMPOTENCY_KEY = b"idempotency-key"
_JSON_TYPE = (b"content-type", b"application/json")


def payment_json(services: Services, payment: Any, *, with_params: bool = True, fresh: bool = False) -> dict[str, Any]:
    """The API's view of a payment, with its ``pay_params`` while it can be paid (``with_params``;
    signed anew if ``fresh``, else possibly the ones signed a moment ago)."""
    params = services.pay_params_for(payment, fresh=fresh) if with_params else None
    return payment_view(payment, pay_params=params)


class PaymentRead:
    """``GET /v1/payments/{payment_id}`` (without a query string) as a plain ASGI endpoint, for
    :class:`~minipay.server.routes.early.EarlyRoutes`: the answer of the FastAPI route, without
    FastAPI's dependency solving, which costs more than the read itself. The same steps as the
    route: the bearer key (:func:`~minipay.server.auth.bearer_owner`), ``services.get_payment``,
    the view as a :class:`~minipay.server._http.JSONBody`; an error goes to the app's own exception handlers, which
    answer it as they answer the route's (an unhandled one propagates to the server-error handler)."""

    prefix = "/v1/payments/"
    method = "GET"
    param = "payment_id"

    def __init__(
        self, route: BaseRoute, services: Services, state: State, exception_handlers: Mapping[Any, Any]
    ) -> None:
        self.route, self.services, self.state = route, services, state
        # The app's own (live) mapping of exception handlers: looked up at each error, as FastAPI's
        # ExceptionMiddleware would, without the 500 one (the server-error layer's).
        self._exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = header(scope, _AUTHORIZATION)
            authorization = None if raw is None else raw.decode("latin-1")
            auth_index: AuthIndex = self.state.auth_index  # the app's keys (auth.install_api_keys)
            caller = bearer_owner(auth_index, authorization)
            services = self.services
            payment = await services.get_payment(caller, scope["path_params"]["payment_id"])
            body = dumps(payment_json(services, payment))
        except Exception as error:
            await _under_app_handlers(_raising(error), self._exception_handlers)(scope, receive, send)
            return
        # What JSONBody(...) sends, without building the response object.
        headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _under_app_handlers(app: ASGIApp, exception_handlers: Mapping[Any, Any]) -> ExceptionMiddleware:
    """``app`` under the app's own (live) exception handlers, looked up at each error as FastAPI's
    ExceptionMiddleware would, without the 500 one (the server-error layer's)."""
    handlers = {k: v for k, v in exception_handlers.items() if k not in (500, Exception)}
    return ExceptionMiddleware(app, handlers=handlers)


def _raising(error: Exception) -> ASGIApp:
    """An ASGI app that raises ``error``: to have the app's handlers answer it."""

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    return failing


class PaymentCreate:
    """``POST /v1/payments`` as a plain ASGI endpoint, for :class:`~minipay.server.routes.early.EarlyRoutes`
    (``route``: its path and method there): the answer of the FastAPI route to a request it takes
    whole, without FastAPI's per-request work, which costs a tenth of what a payment's creation does.

    It takes a request with no query string, an ``application/json`` body that is a valid
    :class:`~minipay.server.routes.schemas.PaymentIn`, at most one ``Idempotency-Key`` of 1-255
    characters and an API key that names a caller: then the route's own steps (the bearer key,
    ``services.create_payment``, the view as a 201 or, replayed, a 200), an error of the service
    going to the app's exception handlers. Any other request goes on to the FastAPI route with the
    very messages it sent (its body, a disconnect, a failed read), through the layers the router's
    routes run under (the app's exception handlers, FastAPI's exit stack): every refusal, its order
    and its wording stay the route's."""

    def __init__(
        self, api_route: APIRoute, services: Services, state: State, exception_handlers: Mapping[Any, Any]
    ) -> None:
        self.api_route, self.services, self.state = api_route, services, state
        self._exception_handlers = exception_handlers
        self.route = Route(api_route.path, self, methods=["POST"], include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["query_string"]:
            await self._routed(scope, receive, send)
            return
        messages: list[Message] = []
        failure: Exception | None = None
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except Exception as error:  # the body deadline, the body limit: the route's to answer
            failure = error
        taken = None if failure is not None else self._taken(scope, messages)
        if taken is None:
            await self._routed(scope, _replay(messages, failure, receive), send)
            return
        caller, body, idempotency_key = taken
        services = self.services
        try:
            cmd = CreatePayment(**body.model_dump())
            payment, created = await services.create_payment(caller, cmd, idempotency_key)
            content = dumps(payment_json(services, payment))
        except Exception as error:
            await self._handling(_raising(error))(scope, receive, send)
            return
        # What JSONBody(...) sends, without building the response object.
        headers = [(b"content-length", str(len(content)).encode()), _JSON_TYPE]
        await send({"type": "http.response.start", "status": 201 if created else 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _taken(self, scope: Scope, messages: list[Message]) -> tuple[Any, PaymentIn, str | None] | None:
        """The caller, the body and the idempotency key of a request taken whole, or None."""
        if messages[-1]["type"] != "http.request":
            return None  # the client left before its body was in
        content_type = idempotency = authorization = None
        keys = 0
        for name, value in scope["headers"]:
            if name == _CONTENT_TYPE and content_type is None:
                content_type = value
            elif name == _IDEMPOTENCY_KEY:
                idempotency, keys = value, keys + 1
            elif name == _AUTHORIZATION and authorization is None:
                authorization = value
        if content_type is None or content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            return None
        if keys > 1 or (idempotency is not None and not 1 <= len(idempotency.decode("latin-1")) <= 255):
            return None
        raw = b"".join(message.get("body", b"") for message in messages)
        try:
            # orjson refuses what json refuses (and a little more: NaN, a lone surrogate, a BOM):
            # what it takes, it reads as json does; the rest is the route's.
            body = PaymentIn.model_validate(orjson.loads(raw))
            auth_index: AuthIndex = self.state.auth_index  # the app's keys (auth.install_api_keys)
            caller = bearer_owner(auth_index, None if authorization is None else authorization.decode("latin-1"))
        except (orjson.JSONDecodeError, ValidationError, ServiceError):
            return None
        return caller, body, None if idempotency is None else idempotency.decode("latin-1")

    async def _routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The FastAPI route, as the router and the layers inside the app's middleware run it."""
        await self._handling(self._route)(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        match, child_scope = self.api_route.matches(scope)
        assert match is Match.FULL  # the path and method EarlyRoutes took it for
        scope.update(child_scope)
        scope["route"] = self.api_route
        await self.api_route.handle(scope, receive, send)

    def _handling(self, app: ASGIApp) -> ExceptionMiddleware:
        # FastAPI's layers between the app's middleware and its router (FastAPI.build_middleware_stack).
        return _under_app_handlers(AsyncExitStackMiddleware(app), self._exception_handlers)


def _replay(messages: list[Message], failure: Exception | None, receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then raises ``failure`` (if any), then receives."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        if failure is not None:
            raise failure
        return await receive()

    return replayed


def add_routes(app: FastAPI, container: Container) -> tuple[PaymentRead, PaymentCreate]:
    """Add the session and payment routes; returns the early endpoints of the payment read and the
    payment creation (for :class:`~minipay.server.routes.early.EarlyRoutes`)."""
    services = container.services

    # -- sessions & payments ------------------------------------------------------------------------------

    @app.post("/v1/sessions", tags=["payments"], response_model=SessionOut, responses=error_responses(400, 404, 408))
    async def create_session(body: SessionIn, caller: Caller) -> dict[str, Any]:
        """Step 1: exchange the ``wx.login`` code for the payer's ``openid`` (the session_key is never returned)."""
        return await services.login(caller, body.code, body.sub_appid)

    def _payment_json(p: Any, *, with_params: bool = True, fresh: bool = False) -> dict[str, Any]:
        return payment_json(services, p, with_params=with_params, fresh=fresh)

    @app.post(
        "/v1/payments",
        status_code=201,
        tags=["payments"],
        response_model=PaymentOut,
        responses=replay_response(PaymentOut) | error_responses(400, 404, 408, 409, 502),
    )
    async def create_payment(body: PaymentIn, caller: Caller, idempotency_key: IdemKey = None) -> JSONBody:
        cmd = CreatePayment(**body.model_dump())
        payment, created = await services.create_payment(caller, cmd, idempotency_key)
        return JSONBody(_payment_json(payment), status_code=201 if created else 200)

    @app.get(
        "/v1/payments/{payment_id}",
        tags=["payments"],
        response_model=PaymentOut,
        responses=error_responses(400, 404, 502),
    )
    async def get_payment(payment_id: str, caller: Caller, sync: bool = False) -> JSONBody:
        payment = await (
            services.sync_payment(caller, payment_id) if sync else services.get_payment(caller, payment_id)
        )
        # The view is built here to the documented shape: no response-model validation of it again.
        return JSONBody(_payment_json(payment))

    route = next(r for r in app.router.routes if getattr(r, "endpoint", None) is get_payment)
    read = PaymentRead(route, services, app.state, app.exception_handlers)
    create_route = next(r for r in app.router.routes if getattr(r, "endpoint", None) is create_payment)
    assert isinstance(create_route, APIRoute)
    create = PaymentCreate(create_route, services, app.state, app.exception_handlers)

    @app.get("/v1/payments", tags=["payments"], response_model=PaymentListOut, responses=error_responses(400))
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
        responses=error_responses(404, 409, 502),
    )
    async def pay_params(payment_id: str, caller: Caller) -> dict[str, Any]:
        # Asked for: signed anew (the mini program pays again after a cancel, say).
        return _payment_json(await services.refresh_pay_params(caller, payment_id), fresh=True)

    @app.post(
        "/v1/payments/{payment_id}/close",
        tags=["payments"],
        response_model=PaymentOut,
        responses=error_responses(404, 409, 502),
    )
    async def close_payment(payment_id: str, caller: Caller) -> dict[str, Any]:
        return _payment_json(await services.close_payment(caller, payment_id))

    return read, create
