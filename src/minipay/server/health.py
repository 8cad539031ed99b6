"""What operators watch: WeChat calls, the worker's lag and the webhook backlog (``/metrics``), and
which dependency is down (``/readyz``).

- :class:`WeChatMonitor` is the SDK's ``on_event`` hook on every WeChat call the service (and its
  in-process worker) makes: ``minipay_wechat_calls_total{operation, outcome, err_code}``,
  ``minipay_wechat_call_seconds{operation}`` and when WeChat was last reached. Each *attempt* counts
  (a retried call is two). ``outcome`` is ``ok``, ``fail`` (``result_code=FAIL``, the ``err_code``
  says why), ``communication_error`` (``return_code=FAIL``), ``signature_error``, ``login_error``
  (jscode2session's ``errcode``, in ``err_code``), ``unexpected_response``, ``connect_error`` or
  ``outcome_unknown`` (timeout, connection lost). Only the last two mean WeChat was not reached.
- :class:`Backlog` is read (``uow.health.backlog``, :meth:`Backlog.from_rows`) when ``/metrics`` is
  scraped: ``minipay_worker_job_lag_seconds`` (how long the oldest due job has waited),
  ``minipay_worker_jobs_due``, ``minipay_webhook_backlog`` (due deliveries) and
  ``minipay_webhook_backlog_age_seconds`` (the oldest pending delivery's event age).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from minipay.server.repositories import BacklogRows

__all__ = ["Backlog", "BacklogGauges", "ClientEvent", "WeChatMonitor", "WeChatStatus", "call_codes"]


class ClientEvent(Protocol):
    """What the hooks read of the SDK's :class:`minipay.client.ClientEvent` (only the gateway, an
    adapter, knows the SDK itself)."""

    @property
    def kind(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def latency(self) -> float | None: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def err_code(self) -> str | None: ...


#: Outcomes of an attempt that never reached WeChat (or whose answer never came back).
UNREACHED = frozenset({"connect_error", "outcome_unknown"})

_OUTCOMES = frozenset(
    {"ok", "communication_error", "signature_error", "unexpected_response", "connect_error", "outcome_unknown"}
)


def call_codes(event: ClientEvent) -> tuple[str, dict[str, str]]:
    """The outcome label of a response event and the WeChat codes it implies (``return_code``,
    ``result_code``, ``err_code``, as far as the answer had them); never a body or a key."""
    outcome = event.outcome or "error"
    if outcome == "ok":
        return "ok", {"return_code": "SUCCESS", "result_code": "SUCCESS"}
    if outcome.startswith("errcode_"):
        return "login_error", {"err_code": event.err_code or outcome.removeprefix("errcode_")}
    if event.err_code:
        return "fail", {"return_code": "SUCCESS", "result_code": "FAIL", "err_code": event.err_code}
    if outcome == "communication_error":
        return outcome, {"return_code": "FAIL"}
    return (outcome if outcome in _OUTCOMES else "error"), {}


@dataclass(frozen=True)
class WeChatStatus:
    """``up`` (the last call reached WeChat), ``down`` (it did not) or ``unknown`` (no call yet)."""

    status: Literal["up", "down", "unknown"]
    last_reached: datetime | None
    last_unreached: datetime | None
    last_unreached_outcome: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "last_reached": self.last_reached.isoformat() if self.last_reached else None,
            "last_unreached": self.last_unreached.isoformat() if self.last_unreached else None,
            "last_unreached_outcome": self.last_unreached_outcome,
        }


class WeChatMonitor:
    """Counts and times every WeChat call attempt and remembers when WeChat was last reached."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "minipay_wechat_calls",
            "WeChat API call attempts by operation, outcome and err_code",
            ["operation", "outcome", "err_code"],
            registry=registry,
        )
        self.latency = Histogram(
            "minipay_wechat_call_seconds",
            "WeChat API call latency (one attempt, answer or failure)",
            ["operation"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.reached = Gauge(
            "minipay_wechat_last_reached_timestamp_seconds",
            "Unix time of the last WeChat call that got an answer",
            registry=registry,
        )
        self._last_reached: float | None = None
        self._last_unreached: float | None = None
        self._last_unreached_outcome: str | None = None

    def __call__(self, event: ClientEvent) -> None:
        if event.kind != "response":
            return
        outcome, codes = call_codes(event)
        self.calls.labels(event.operation, outcome, codes.get("err_code", "")).inc()
        if event.latency is not None:
            self.latency.labels(event.operation).observe(event.latency)
        now = time.time()
        if outcome in UNREACHED:
            self._last_unreached, self._last_unreached_outcome = now, outcome
        else:
            self._last_reached = now
            self.reached.set(now)

    def status(self) -> WeChatStatus:
        reached, unreached = self._last_reached, self._last_unreached
        if reached is None and unreached is None:
            state: Literal["up", "down", "unknown"] = "unknown"
        elif unreached is not None and (reached is None or unreached > reached):
            state = "down"
        else:
            state = "up"
        return WeChatStatus(
            state,
            datetime.fromtimestamp(reached, UTC) if reached is not None else None,
            datetime.fromtimestamp(unreached, UTC) if unreached is not None else None,
            self._last_unreached_outcome,
        )


@dataclass(frozen=True)
class Backlog:
    job_lag_seconds: float
    jobs_due: int
    webhook_backlog: int
    webhook_backlog_age_seconds: float

    @classmethod
    def from_rows(cls, rows: BacklogRows, now: datetime) -> Backlog:
        """The backlog at ``now`` (the service's clock: the sandbox's virtual one in sandbox mode)."""
        oldest_job, oldest_delivery = rows.oldest_due_job, rows.oldest_pending_delivery
        return cls(
            job_lag_seconds=max((now - oldest_job).total_seconds(), 0.0) if oldest_job is not None else 0.0,
            jobs_due=rows.jobs_due,
            webhook_backlog=rows.deliveries_due,
            webhook_backlog_age_seconds=max((now - oldest_delivery).total_seconds(), 0.0) if oldest_delivery else 0.0,
        )


class BacklogGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.job_lag = Gauge(
            "minipay_worker_job_lag_seconds", "How long the oldest due worker job has waited", registry=registry
        )
        self.jobs_due = Gauge("minipay_worker_jobs_due", "Worker jobs due and not yet taken", registry=registry)
        self.webhooks = Gauge(
            "minipay_webhook_backlog", "Webhook deliveries due (pending, next attempt now or past)", registry=registry
        )
        self.webhook_age = Gauge(
            "minipay_webhook_backlog_age_seconds",
            "Age of the event of the oldest webhook delivery still pending",
            registry=registry,
        )

    def set(self, backlog: Backlog) -> None:
        self.job_lag.set(backlog.job_lag_seconds)
        self.jobs_due.set(backlog.jobs_due)
        self.webhooks.set(backlog.webhook_backlog)
        self.webhook_age.set(backlog.webhook_backlog_age_seconds)
