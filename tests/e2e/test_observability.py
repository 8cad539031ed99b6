"""Following one payment: request ids in responses, error bodies and on every log line, and the
payment's ids on every log line about it (HTTP request, WeChat call, notification, worker job)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from minipay.server.logs import ContextFilter, JsonFormatter, TextFormatter
from tests.e2e.stack import Stack

pytestmark = pytest.mark.anyio


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    loggers = {name: logging.getLogger(name) for name in ("minipay", "minipay.access")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


async def test_a_well_formed_request_id_comes_back_in_the_header_and_in_error_bodies(stack: Stack) -> None:
    ok = await stack.service.get("/healthz", headers={"X-Request-Id": "client-req.42:a/b+c=@"})
    assert ok.headers["x-request-id"] == "client-req.42:a/b+c=@"
    missing = await stack.service.get("/v1/payments/pay_nope", headers=stack.headers(**{"X-Request-Id": "r-404"}))
    assert missing.status_code == 404
    assert missing.headers["x-request-id"] == "r-404"
    assert missing.json()["error"]["request_id"] == "r-404"
    unauthorized = await stack.service.get("/v1/payments")
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["request_id"] == unauthorized.headers["x-request-id"]


async def test_a_malformed_request_id_is_replaced_by_a_fresh_one(stack: Stack) -> None:
    for bad in ["", "x" * 129, "has space", 'quote"d', "ctl\x01", "ünï"]:
        response = await stack.service.get("/nowhere", headers={"X-Request-Id": bad.encode("latin-1")})
        rid = response.headers["x-request-id"]
        assert rid != bad
        assert len(rid) == 24
        assert int(rid, 16) >= 0
        assert response.json()["error"]["request_id"] == rid


async def test_each_request_without_an_id_gets_its_own(stack: Stack) -> None:
    first = await stack.service.get("/healthz")
    second = await stack.service.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_nul_refusal_carries_the_request_id_too(stack: Stack) -> None:
    response = await stack.service.get("/v1/payments/a%00b", headers={"X-Request-Id": "nul-check"})
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "nul-check"
    assert response.json()["error"]["request_id"] == "nul-check"


async def test_one_payment_can_be_followed_through_request_wechat_call_notification_and_job(
    stack: Stack, logs: Collect
) -> None:
    openid = await stack.login()
    r = await stack.service.post(
        "/v1/payments",
        json={"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid},
        headers=stack.headers(**{"X-Request-Id": "trace-me-1"}),
    )
    assert r.status_code == 201, r.text
    payment = r.json()
    ids = {"payment_id": payment["id"], "out_trade_no": payment["out_trade_no"]}

    def about_payment(record: logging.LogRecord) -> bool:
        return all(getattr(record, k, None) == v for k, v in ids.items())

    mine = [r for r in logs.records if r.request_id == "trace-me-1"]  # type: ignore[attr-defined]
    # The WeChat call the request caused (the SDK's own line) and the access line: same id, same payment.
    unified = [r for r in mine if r.name == "minipay.client" and getattr(r, "operation", "") == "orders.create"]
    assert unified
    assert all(about_payment(r) for r in unified)
    access = [r for r in mine if r.name == "minipay.access"]
    assert len(access) == 1
    assert about_payment(access[0])

    # The notification is a request of its own, with its own id, about the same payment.
    await stack.pay(payment, notify="never")
    await stack.advance(stack.worker.config.query_delay.total_seconds())
    start = len(logs.records)
    await stack.worker.run_until_idle()
    job_lines = [r for r in logs.records[start:] if getattr(r, "job_kind", None) == "payment.followup"]
    assert job_lines
    job_rids = {r.request_id for r in job_lines}  # type: ignore[attr-defined]
    assert len(job_rids) == 1
    assert next(iter(job_rids)).startswith("job_")
    query_lines = [r for r in job_lines if getattr(r, "operation", "") == "orders.query"]
    assert query_lines
    assert all(about_payment(r) for r in query_lines)

    # Every record formats as one JSON object a line carrying those fields, and as one text line;
    # in neither format does a secret of the service's configuration appear.
    secrets = [k for k in stack.keys.values()]
    secrets += [i.api_key.get_secret_value() for i in stack.settings.institutions]
    secrets += [s.app_secret.get_secret_value() for s in stack.settings.sub_merchants]
    formatted = "\n".join(f.format(r) for r in logs.records for f in (JsonFormatter(), TextFormatter()))
    assert not [s for s in secrets if s in formatted]
    for record in logs.records:
        line = JsonFormatter().format(record)
        assert "\n" not in line
        obj = json.loads(line)
        assert {"time", "level", "logger", "message", "request_id"} <= obj.keys()
        assert obj["time"].endswith("Z")
    obj = json.loads(JsonFormatter().format(query_lines[0]))
    assert obj["payment_id"] == payment["id"]
    assert obj["out_trade_no"] == payment["out_trade_no"]
    assert obj["request_id"].startswith("job_")
    text = TextFormatter().format(query_lines[0])
    assert f"[{obj['request_id']}]" in text
    assert f"payment_id={payment['id']} out_trade_no={payment['out_trade_no']}" in text


async def test_a_notification_gets_its_own_request_id_and_the_payment_ids(stack: Stack, logs: Collect) -> None:
    payment = await stack.create_payment(1000)
    logs.records.clear()
    await stack.pay(payment)
    notify = [r for r in logs.records if r.name == "minipay.access" and "/notify" in r.getMessage()]
    assert len(notify) == 1
    record = notify[0]
    assert record.request_id  # type: ignore[attr-defined]
    assert getattr(record, "payment_id", None) == payment["id"]
    assert getattr(record, "out_trade_no", None) == payment["out_trade_no"]


async def test_a_webhook_attempt_logs_with_its_own_id_and_the_payment_ids(stack: Stack, logs: Collect) -> None:
    payment = await stack.create_payment(1000)
    stack.receiver.fail_next = 1  # the merchant's systems answer 500 once
    await stack.pay(payment)
    start = len(logs.records)
    await stack.worker.run_until_idle()
    failed = [r for r in logs.records[start:] if r.getMessage() == "webhook attempt failed"]
    assert len(failed) == 1
    record = failed[0]
    assert record.request_id.startswith("wh_")  # type: ignore[attr-defined]
    assert getattr(record, "payment_id", None) == payment["id"]
    assert getattr(record, "out_trade_no", None) == payment["out_trade_no"]
