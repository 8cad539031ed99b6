"""Observability: one :class:`ClientEvent` per request, response and retry, and matching log lines.

Log records go to the ``minipay.client`` logger with structured extras (``operation``, ``ids``,
``attempt``, ``latency``, ``host``, ``outcome``) so a JSON formatter can ship them as is. Nothing
secret is ever passed in: ids are the merchant's identifiers (``mch_id``, ``sub_mch_id``,
``out_trade_no``, ``out_refund_no``, ``transaction_id``, ``refund_id``), never the API key, an app
secret, a ``session_key``, a body, a signature or a string-to-sign.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

__all__ = ["ClientEvent", "EventHook", "emit"]

LOGGER_NAME: Final = "minipay.client"

EventKind: TypeAlias = Literal["request", "response", "retry"]


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """What happened on one attempt; handed to ``on_event`` (for metrics) and logged.

    ``kind``: ``"request"`` before sending, ``"response"`` after an answer or a failure,
    ``"retry"`` when the retry rule decided to send again (``delay`` seconds later).
    ``outcome``: ``"ok"``, an ``err_code``, ``"errcode_<n>"`` (login), ``"connect_error"``,
    ``"outcome_unknown"`` (read timeout, connection lost), ``"signature_error"``,
    ``"communication_error"``, ``"unexpected_response"``...
    """

    kind: EventKind
    operation: str
    attempt: int
    host: str
    ids: Mapping[str, str] = field(default_factory=dict)
    latency: float | None = None
    outcome: str | None = None
    err_code: str | None = None
    delay: float | None = None


EventHook: TypeAlias = Callable[[ClientEvent], None]


def emit(event: ClientEvent, logger: logging.Logger, hook: EventHook | None) -> None:
    """Log ``event`` and pass it to ``hook``. A failing hook is logged, never raised into the payment."""
    extra = {
        "operation": event.operation,
        "ids": dict(event.ids),
        "attempt": event.attempt,
        "host": event.host,
        "latency": event.latency,
        "outcome": event.outcome,
    }
    if event.kind == "request":
        logger.debug("%s attempt %d -> %s", event.operation, event.attempt, event.host, extra=extra)
    elif event.kind == "response":
        level = logging.DEBUG if event.outcome == "ok" else logging.INFO
        latency_ms = (event.latency or 0.0) * 1000
        logger.log(
            level,
            "%s attempt %d <- %s (%s, %.1f ms)",
            event.operation,
            event.attempt,
            event.host,
            event.outcome,
            latency_ms,
            extra=extra,
        )
    else:
        logger.warning(
            "%s retrying after %s in %.2f s (attempt %d)",
            event.operation,
            event.outcome,
            event.delay or 0.0,
            event.attempt + 1,
            extra=extra,
        )
    if hook is not None:
        try:
            hook(event)
        except Exception:
            logger.exception("on_event hook failed for %s", event.operation)
