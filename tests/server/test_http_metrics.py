"""The request metrics' exposition is what prometheus_client's own Counter and Histogram give."""

from __future__ import annotations

import re
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from minipay.server._http import HttpRequestMetrics, Metrics

OBSERVED = [
    ("GET", "/v1/payments/{payment_id}", 200, 0.0042),
    ("GET", "/v1/payments/{payment_id}", 200, 0.005),  # on a bucket's bound: counted in that bucket
    ("GET", "/v1/payments/{payment_id}", 404, 0.3),
    ("POST", "/wechatpay/notify/payment", 200, 0.012),
    ("GET", "other", 404, 0.0001),
    ("other", "/healthz", 405, 11.0),  # past the last finite bound: +Inf only
    ("GET", "/v1/payments/{payment_id}", 200, 2.5),
]


def _without_created_values(text: bytes) -> list[str]:
    # *_created samples hold the time each series was first seen: the same names, not the same values.
    return [re.sub(r"(_created\{.*\}) \S+$", r"\1 <time>", line) for line in text.decode().splitlines()]


@pytest.fixture(params=["with _created", "without _created"])
def created(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "without _created":
        prometheus_client.disable_created_metrics()
    yield request.param
    prometheus_client.enable_created_metrics()


@pytest.mark.usefixtures("created")
def test_the_exposition_is_prometheus_clients_own() -> None:
    ours = CollectorRegistry()
    metrics = HttpRequestMetrics()
    ours.register(metrics)
    theirs = CollectorRegistry()
    requests = Counter("minipay_http_requests", "HTTP requests", ["method", "route", "status"], registry=theirs)
    latency = Histogram("minipay_http_request_seconds", "HTTP latency", ["route"], registry=theirs)
    for method, route, status, seconds in OBSERVED:
        metrics.observe(method, route, status, seconds)
        requests.labels(method, route, str(status)).inc()
        latency.labels(route).observe(seconds)
    got = _without_created_values(generate_latest(ours))
    assert got == _without_created_values(generate_latest(theirs))
    assert 'minipay_http_requests_total{method="GET",route="/v1/payments/{payment_id}",status="200"} 3.0' in got
    assert 'minipay_http_request_seconds_bucket{le="0.005",route="/v1/payments/{payment_id}"} 2.0' in got
    assert 'minipay_http_request_seconds_bucket{le="10.0",route="/healthz"} 0.0' in got
    assert 'minipay_http_request_seconds_bucket{le="+Inf",route="/healthz"} 1.0' in got


def test_the_apps_metrics_expose_requests_beside_the_other_series() -> None:
    metrics = Metrics()
    metrics.observe("GET", "/healthz", 200, 0.001)
    metrics.notifications.labels("payment", "applied").inc()
    text = generate_latest(metrics.registry).decode()
    assert 'minipay_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'minipay_http_request_seconds_count{route="/healthz"} 1.0' in text
    assert 'minipay_notifications_total{kind="payment",outcome="applied"} 1.0' in text
    assert "minipay_webhook_attempts_total 0.0" in text
