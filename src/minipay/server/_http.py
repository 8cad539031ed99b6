"""Per-request observation of the HTTP API: metrics, the access log, the NUL guard.

:class:`ObserveMiddleware` is plain ASGI (no ``BaseHTTPMiddleware``: that one runs every request in
a task of its own with a memory stream between the layers). It is the one place where every request
is seen whole, so whatever is recorded per request belongs here.

- ``minipay_http_requests_total{method, route, status}`` and ``minipay_http_request_seconds{route}``:
  ``route`` is the route template (``/v1/payments/{payment_id}``), never the raw path, so ids do not
  make new series; a request no route matched is counted under ``other``, and so is a method outside
  :data:`KNOWN_METHODS` (the server passes any token as a method: junk must not grow the label set).
- The access log (logger ``minipay.access``, INFO) is written only when that logger is enabled for
  INFO: with it off, no line is formatted. The query string is left out (it may carry a secret).
- The request id: the caller's ``X-Request-Id`` when well formed, else a new one
  (:func:`minipay.server.logs.accept_request_id`), is the request's log context for everything the
  request does (its log lines, the WeChat calls it makes), goes back in the ``X-Request-Id`` header of
  every response and into every JSON error body, and is kept in ``scope["state"]["request_id"]`` for
  the error handler that runs outside this middleware (an unhandled exception's 500).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minipay.server import tracing
from minipay.server._json import dumps
from minipay.server.logs import accept_request_id, log_context

__all__ = [
    "ACCESS_LOGGER",
    "KNOWN_METHODS",
    "HttpRequestMetrics",
    "JSONBody",
    "Metrics",
    "ObserveMiddleware",
    "header",
    "method_label",
    "route_label",
    "route_path",
]

#: The access log's logger: one INFO line a request, when enabled.
ACCESS_LOGGER = "minipay.access"

#: The ``route`` label of a request no route matched (a 404 on an unknown path, say).
UNMATCHED = "other"

#: The methods counted under their own name in ``method``; any other is counted as ``other``.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = logging.getLogger(ACCESS_LOGGER)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpRequestMetrics()
        self.registry.register(self.http)
        self.notifications = Counter(
            "minipay_notifications",
            "WeChat notifications by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.webhook_attempts = Counter("minipay_webhook_attempts", "webhook delivery attempts", registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.observe(method, route, status, seconds)


class HttpRequestMetrics(Collector):
    """``minipay_http_requests_total{method, route, status}`` and the histogram
    ``minipay_http_request_seconds{route}``, exposed exactly as a prometheus_client ``Counter`` and
    ``Histogram`` with those labels would expose them (``_created`` samples included, unless
    ``prometheus_client.disable_created_metrics()`` was called).

    A collector of its own rather than those two classes: they take a lock per increment (three a
    request, plus the bucket search in Python), which cost more than the rest of the observation.
    Requests are observed on the event loop's thread, and ``/metrics`` reads on it too, so plain
    counts need no lock; a scrape from another thread copies each table in one step (atomic under
    the GIL) and sees each figure whole."""

    BUCKETS: tuple[float, ...] = Histogram.DEFAULT_BUCKETS

    def __init__(self) -> None:
        self._bounds = self.BUCKETS
        # The bucket labels as prometheus_client writes them ("0.005", "1.0", "+Inf").
        self._le = tuple(floatToGoString(b) for b in self._bounds)  # type: ignore[no-untyped-call]
        # (method, route, status) -> [count, created]; route -> [per-bucket counts..., sum, created]
        self._requests: dict[tuple[str, str, int], list[float]] = {}
        self._latency: dict[str, list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        counted = self._requests.get(key)
        if counted is None:
            counted = self._requests[key] = [0, time.time()]
        counted[0] += 1
        timed = self._latency.get(route)
        if timed is None:
            timed = self._latency[route] = [0] * len(self._bounds) + [0.0, time.time()]
        timed[bisect_left(self._bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        timed[-2] += seconds

    def collect(self) -> Iterator[Metric]:
        # prometheus_client.disable_created_metrics() leaves the _created samples out, as it does for
        # its own Counter and Histogram.
        with_created = getattr(prometheus_metrics, "_use_created", True)
        requests = CounterMetricFamily("minipay_http_requests", "HTTP requests", labels=["method", "route", "status"])
        for (method, route, status), (count, created) in self._requests.copy().items():
            requests.add_metric([method, route, str(status)], count, created=created if with_created else None)
        yield requests
        latency = HistogramMetricFamily("minipay_http_request_seconds", "HTTP latency", labels=["route"])
        for route, timed in self._latency.copy().items():
            timed = list(timed)
            cumulative, buckets = 0.0, []
            for le, count in zip(self._le, timed, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            latency.add_metric([route], buckets, timed[-2])
            if with_created:
                latency.samples.append(Sample("minipay_http_request_seconds_created", {"route": route}, timed[-1]))
        yield latency


class JSONBody(JSONResponse):
    """A ``JSONResponse`` rendered with orjson (:func:`minipay.server._json.dumps`): the same bytes
    for what the API's views hold, at a tenth of the encoding's cost."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def method_label(method: str) -> str:
    """``method`` if it is one of :data:`KNOWN_METHODS`, else ``other``."""
    return method if method in KNOWN_METHODS else UNMATCHED


def route_label(scope: Scope) -> str:
    """The route template the router matched for this request, or ``other``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def route_path(scope: Scope) -> str:
    """The path the router matches: the request's path without the root path a proxy mounts the
    service under (what Starlette's router does)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


_REQUEST_ID = b"x-request-id"


def _span_attributes(scope: Scope, request_id: str) -> dict[str, str] | None:
    if not tracing.enabled():
        return None
    # The path, never the query string (it may carry a secret).
    return {"http.request.method": scope["method"], "url.path": scope["path"], "minipay.request_id": request_id}


def _nul_response(request_id: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = (
        b'{"error":{"code":"invalid_request","message":"NUL characters are not accepted in URLs","request_id":"'
        + request_id.encode()
        + b'"}}'
    )
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the request header ``name`` (lower case), as Starlette's ``Headers`` and
    FastAPI's ``Header()`` read it, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


class ObserveMiddleware:
    """Counts and times every HTTP request by route, writes the access log when it is enabled, and
    refuses NUL characters in the URL (no id or filter contains one, and PostgreSQL refuses them in
    any text parameter)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering
        request_id = accept_request_id(header(scope, _REQUEST_ID))
        request_id_header = (_REQUEST_ID, request_id.encode())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        method = method_label(scope["method"])
        with log_context(request_id), tracing.span(f"HTTP {method}", _span_attributes(scope, request_id)) as span:
            try:
                if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
                    headers, body = _nul_response(request_id)
                    await send_observed({"type": "http.response.start", "status": 400, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                else:
                    await self.app(scope, receive, send_observed)
            finally:
                elapsed = time.perf_counter() - started
                route = route_label(scope)
                self.metrics.observe(method, route, status, elapsed)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                if access_log.isEnabledFor(logging.INFO):
                    client = scope.get("client")
                    access_log.info(
                        '%s - "%s %s HTTP/%s" %d %.1fms',
                        f"{client[0]}:{client[1]}" if client else "-",
                        method,
                        scope["path"],
                        scope.get("http_version", "1.1"),
                        status,
                        elapsed * 1000,
                    )
