"""OpenTelemetry traces, optional: ``pip install "minipay[otel]"``.

Spans: one per HTTP request (``POST /v1/payments``: method, route, status, ``minipay.request_id``),
one per WeChat call attempt under it (``wechat orders.create``: ``wechat.operation``,
``wechat.return_code`` / ``wechat.result_code`` / ``wechat.err_code``, ``wechat.outcome``,
``wechat.attempt``; never a body, a signature or a key), one per database unit of work
(``db.unit_of_work``, ``db.read_only``) and one per worker job run (``worker.job payment.followup``).

On when the extra is installed and either the ``tracing`` setting is ``true`` or (setting unset) an
OTLP endpoint is configured the standard way (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), unless ``OTEL_SDK_DISABLED=true``. Spans are exported over
OTLP/HTTP with the standard variables (endpoint, headers, timeout; ``OTEL_SERVICE_NAME``, default
``minipay``; ``OTEL_RESOURCE_ATTRIBUTES``). A program that already installed a global tracer
provider keeps its own. Off, this module imports nothing of OpenTelemetry and each hook costs one
test of a global.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from minipay.server.health import ClientEvent, call_codes

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["available", "current_span", "enabled", "setup", "span", "start_span", "use", "wechat_observer"]

#: The instrumentation scope of every span.
SCOPE = "minipay.server"

_tracer: Tracer | None = None
_open_call: ContextVar[Span | None] = ContextVar("minipay_wechat_span", default=None)


def available() -> bool:
    """Whether the ``otel`` extra is installed (this imports the ``opentelemetry`` namespace only)."""
    try:
        return importlib.util.find_spec("opentelemetry") is not None and (
            importlib.util.find_spec("opentelemetry.sdk") is not None
        )
    except (ImportError, ValueError):
        return False


def enabled() -> bool:
    return _tracer is not None


def _wanted(setting: bool | None) -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if setting is not None:
        return setting
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(setting: bool | None) -> bool:
    """Turn tracing on if wanted (see the module docstring) and possible; returns whether it is on.

    Idempotent: the first call that turns it on installs the exporter, later calls keep it.
    """
    global _tracer
    if _tracer is not None:
        return True
    if not _wanted(setting) or not available():
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, SdkTracerProvider):
        provider = current  # the embedding program set one up: export there
    else:
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "minipay"})
        provider = SdkTracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (tests: an SDK provider with an in-memory exporter); ``None``: off."""
    global _tracer
    _tracer = provider.get_tracer(SCOPE) if provider is not None else None


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(name: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Span | None]:
    """A span that is the current one inside the ``with`` block (``None`` there when tracing is off:
    then this is one shared no-op context manager, nothing is allocated)."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name, attributes=dict(attributes or {}))


def start_span(name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """A child of the current span, not made current (end it with ``.end()``); ``None`` when off."""
    tracer = _tracer
    if tracer is None:
        return None
    return tracer.start_span(name, attributes=dict(attributes or {}))


def end_span(s: Span | None, error: BaseException | None = None) -> None:
    if s is None:
        return
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        s.set_status(Status(StatusCode.ERROR, type(error).__name__))
    s.end()


def current_span() -> Span | None:
    if _tracer is None:
        return None
    from opentelemetry import trace

    return trace.get_current_span()


def wechat_observer(event: ClientEvent) -> None:
    """The SDK's ``on_event`` hook: a span per WeChat call attempt, ended with its codes."""
    tracer = _tracer
    if tracer is None:
        return
    if event.kind == "request":
        s = tracer.start_span(
            f"wechat {event.operation}",
            attributes={
                "wechat.operation": event.operation,
                "wechat.attempt": event.attempt,
                "server.address": _host(event.host),
            },
        )
        _open_call.set(s)
    elif event.kind == "response":
        call = _open_call.get()
        if call is None:
            return
        _open_call.set(None)
        outcome, codes = call_codes(event)
        call.set_attribute("wechat.outcome", outcome)
        for key, value in codes.items():
            call.set_attribute(f"wechat.{key}", value)
        if outcome != "ok":
            from opentelemetry.trace import Status, StatusCode

            call.set_status(Status(StatusCode.ERROR, outcome))
        call.end()


def _host(url: str) -> str:
    # The base URL of the attempt (https://apihk.mch.weixin.qq.com): its host only, never a query.
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].split("?", 1)[0]
