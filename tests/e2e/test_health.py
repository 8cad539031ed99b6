"""/readyz says which dependency is down; /metrics has WeChat calls, the worker's lag, the webhook backlog."""

from __future__ import annotations

import re

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.anyio


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text page (labels in any order), or None."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if found == labels:
            return float(m.group(3))
    return None


async def test_readyz_reports_wechat_unknown_then_up_then_down(stack: Stack) -> None:
    first = (await stack.service.get("/readyz")).json()
    assert first["status"] == "ok"
    assert first["checks"]["database"] == {"status": "up"}
    assert first["checks"]["wechat"]["status"] == "unknown"

    payment = await stack.create_payment(1000)  # login + unified order reach WeChat
    up = (await stack.service.get("/readyz")).json()
    assert up["checks"]["wechat"]["status"] == "up"
    assert up["checks"]["wechat"]["last_reached"] is not None

    await stack.fault(endpoint="orderquery", fault="lost_response", times=10)
    await stack.service.get(f"/v1/payments/{payment['id']}", params={"sync": "true"}, headers=stack.headers())
    down = await stack.service.get("/readyz")
    assert down.status_code == 200  # WeChat down degrades the service; it does not take a replica out
    body = down.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["wechat"]["status"] == "down"
    assert body["checks"]["wechat"]["last_unreached_outcome"] == "outcome_unknown"


async def test_metrics_count_wechat_calls_by_operation_outcome_and_err_code(stack: Stack) -> None:
    payment = await stack.create_payment(1000)
    await stack.fault(endpoint="orderquery", fault="SYSTEMERROR", times=1)
    await stack.service.get(f"/v1/payments/{payment['id']}", params={"sync": "true"}, headers=stack.headers())
    text = (await stack.service.get("/metrics")).text
    assert sample(text, "minipay_wechat_calls_total", operation="orders.create", outcome="ok", err_code="") == 1
    failed = sample(
        text, "minipay_wechat_calls_total", operation="orders.query", outcome="fail", err_code="SYSTEMERROR"
    )
    assert failed == 1
    assert sample(text, "minipay_wechat_calls_total", operation="orders.query", outcome="ok", err_code="") == 1
    assert sample(text, "minipay_wechat_call_seconds_count", operation="orders.create") == 1
    assert (sample(text, "minipay_wechat_last_reached_timestamp_seconds") or 0) > 0


async def test_metrics_show_the_worker_lag_and_the_webhook_backlog(stack: Stack) -> None:
    text = (await stack.service.get("/metrics")).text
    assert sample(text, "minipay_worker_job_lag_seconds") == 0
    assert sample(text, "minipay_webhook_backlog") == 0

    payment = await stack.create_payment(1000)
    await stack.worker.schedule()  # the payment's follow-up job, due after the query delay
    await stack.pay(payment)  # payment.succeeded: one delivery, due now (nobody delivers it here)
    await stack.advance(stack.worker.config.query_delay.total_seconds() + 100)
    text = (await stack.service.get("/metrics")).text
    lag = sample(text, "minipay_worker_job_lag_seconds")
    assert lag is not None
    assert lag >= 100  # the follow-up (and yesterday's bills, due since 10:00) wait for a worker
    assert lag == pytest.approx((await stack.worker.queue.overview())["overdue_seconds"], abs=1)
    assert (sample(text, "minipay_worker_jobs_due") or 0) >= 2
    assert sample(text, "minipay_webhook_backlog") == 1
    assert (sample(text, "minipay_webhook_backlog_age_seconds") or 0) >= 100

    await stack.worker.run_until_idle()  # runs the job and delivers the webhook
    text = (await stack.service.get("/metrics")).text
    assert sample(text, "minipay_worker_job_lag_seconds") == 0
    assert sample(text, "minipay_webhook_backlog") == 0
