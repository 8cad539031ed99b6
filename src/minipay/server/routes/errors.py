"""HTTP errors: the JSON error body, the exception handlers of the app, and the OpenAPI schema
corrected to what they answer."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from minipay.server.logs import REQUEST_ID_HEADER, current_request_id, log_context
from minipay.server.routes.schemas import ERROR_MEANING
from minipay.server.services import (
    ServiceError,
)
from minipay.server.uow import ConcurrentUpdate

log = logging.getLogger("minipay.server")


def error_response(status: int, code: str, message: str, *, request_id: str | None = None) -> JSONResponse:
    """The JSON error body, with the request's id (``X-Request-Id``) so a report can be traced."""
    rid = request_id if request_id is not None else current_request_id()
    return JSONResponse({"error": {"code": code, "message": message, "request_id": rid}}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message)
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
        return error_response(400, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthorized",
            408: "request_timeout",
            413: "body_too_large",
        }
        response = error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
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
        response = error_response(503, "database_unavailable", "the database is unavailable; retry later")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(ConcurrentUpdate)
    async def _busy(_: Request, exc: ConcurrentUpdate) -> JSONResponse:
        response = error_response(503, "busy", "the object is being changed by other requests; retry")
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside ObserveMiddleware (in Starlette's outermost layer): its context and its header
        # are gone, so the request id comes from the request's state.
        rid = getattr(request.state, "request_id", None)
        with log_context(rid):
            log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        response = error_response(500, "internal_error", "internal error", request_id=rid)
        if rid is not None:
            response.headers[REQUEST_ID_HEADER] = rid
        return response


def honest_schema(schema: dict[str, Any], *, ops_protected: bool) -> dict[str, Any]:
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
                    "description": ERROR_MEANING[400],
                    "content": {"application/json": {"schema": error_ref}},
                }
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema
