"""OpenTelemetry spans of one payment (in-memory exporter), and no OpenTelemetry at all without the extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from minipay.server import tracing
from tests.e2e.stack import Stack

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def children(of: ReadableSpan, among: Any) -> list[ReadableSpan]:
    return [s for s in among if s.parent is not None and s.parent.span_id == of.context.span_id]


async def test_the_span_tree_of_one_payment(stack: Stack, spans: InMemorySpanExporter) -> None:
    openid = await stack.login()
    spans.clear()
    r = await stack.service.post(
        "/v1/payments",
        json={"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid},
        headers=stack.headers(**{"X-Request-Id": "span-tree-1"}),
    )
    assert r.status_code == 201, r.text
    payment = r.json()
    finished = spans.get_finished_spans()
    (root,) = [s for s in finished if s.parent is None]
    assert root.name == "POST /v1/payments"
    assert root.attributes is not None
    assert root.attributes["http.route"] == "/v1/payments"
    assert root.attributes["http.response.status_code"] == 201
    assert root.attributes["minipay.request_id"] == "span-tree-1"
    below = children(root, finished)
    assert {s.name for s in below} == {"db.unit_of_work", "wechat orders.create"}
    (call,) = [s for s in below if s.name == "wechat orders.create"]
    assert call.attributes is not None
    assert call.attributes["wechat.operation"] == "orders.create"
    assert call.attributes["wechat.return_code"] == "SUCCESS"
    assert call.attributes["wechat.result_code"] == "SUCCESS"
    assert call.attributes["wechat.outcome"] == "ok"
    assert all(s.context.trace_id == root.context.trace_id for s in finished)

    # The worker's follow-up: its own trace, a job span over a failed then a good query.
    await stack.pay(payment, notify="never")
    await stack.fault(endpoint="orderquery", fault="SYSTEMERROR", times=1, out_trade_no=payment["out_trade_no"])
    await stack.advance(stack.worker.config.query_delay.total_seconds())
    spans.clear()
    await stack.worker.run_until_idle()
    finished = spans.get_finished_spans()
    (job,) = [s for s in finished if s.name == "worker.job payment.followup"]
    assert job.parent is None
    assert job.attributes is not None
    assert str(job.attributes["minipay.request_id"]).startswith("job_")
    queries = [s for s in children(job, finished) if s.name == "wechat orders.query"]
    assert queries
    first = queries[0].attributes
    assert first is not None
    assert (first["wechat.result_code"], first["wechat.err_code"], first["wechat.outcome"]) == (
        "FAIL",
        "SYSTEMERROR",
        "fail",
    )
    assert [s for s in children(job, finished) if s.name == "db.unit_of_work"]

    # Nothing secret in any attribute of any span.
    everything = repr([dict(s.attributes or {}) for s in finished])
    for secret in [*stack.keys.values(), *(i.api_key.get_secret_value() for i in stack.settings.institutions)]:
        assert secret not in everything


def _run(script: str) -> None:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "clean"


def test_importing_the_service_loads_nothing_of_opentelemetry() -> None:
    _run(
        textwrap.dedent(
            """
            import sys
            sys.modules["opentelemetry"] = None  # not installed: every import of it fails
            import minipay.server
            import minipay.server.tracing, minipay.server.uow, minipay.server._http, minipay.server.health
            assert not minipay.server.tracing.available()
            assert not minipay.server.tracing.setup(True)
            loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v is not None]
            assert not loaded, loaded
            print("clean")
            """
        )
    )


def test_without_the_extra_a_running_service_loads_no_sdk_and_traces_nothing(tmp_path: Any) -> None:
    # FastAPI itself imports opentelemetry-api (a dependency of FastAPI); the extra is the SDK and the
    # OTLP exporter: without them the service runs, asked to trace or not, and imports neither.
    _run(
        textwrap.dedent(
            f"""
            import asyncio, os, sys
            sys.modules["opentelemetry.sdk"] = None
            sys.modules["opentelemetry.exporter"] = None
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"  # tracing is asked for
            import httpx2
            from minipay.server import tracing
            from minipay.server.api import create_app
            from tests.server.conftest import build_settings

            app = create_app(build_settings("sqlite+aiosqlite:///{tmp_path}/t.db"))

            async def main():
                async with app.router.lifespan_context(app):
                    transport = httpx2.ASGITransport(app=app)
                    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
                        assert (await http.get("/readyz")).status_code == 200

            asyncio.run(main())
            prefixes = ("opentelemetry.sdk", "opentelemetry.exporter")
            loaded = [m for m, v in sys.modules.items() if m.startswith(prefixes) and v is not None]
            assert not loaded, loaded
            assert not tracing.enabled()
            print("clean")
            """
        )
    )


def test_with_an_otlp_endpoint_in_the_environment_spans_are_exported_there(tmp_path: Any) -> None:
    # The standard variables only: the endpoint (OTLP over HTTP) and the service name.
    _run(
        textwrap.dedent(
            f"""
            import asyncio, os, threading
            from http.server import BaseHTTPRequestHandler, HTTPServer

            received = []

            class Collector(BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers["Content-Length"]))
                    received.append((self.path, self.headers["Content-Type"], body))
                    self.send_response(200)
                    self.end_headers()

                def log_message(self, *args):
                    pass

            collector = HTTPServer(("127.0.0.1", 0), Collector)
            threading.Thread(target=collector.serve_forever, daemon=True).start()
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{{collector.server_port}}"
            os.environ["OTEL_SERVICE_NAME"] = "minipay-test"

            import httpx2
            from opentelemetry import trace
            from minipay.server import tracing
            from minipay.server.api import create_app
            from tests.server.conftest import build_settings

            app = create_app(build_settings("sqlite+aiosqlite:///{tmp_path}/t.db"))
            assert tracing.enabled()

            async def main():
                async with app.router.lifespan_context(app):
                    transport = httpx2.ASGITransport(app=app)
                    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
                        headers = {{"X-Request-Id": "exported-1"}}
                        assert (await http.get("/readyz", headers=headers)).status_code == 200

            asyncio.run(main())
            trace.get_tracer_provider().force_flush()
            collector.shutdown()
            assert [(p, t) for p, t, _ in received] == [("/v1/traces", "application/x-protobuf")], received
            body = received[0][2]
            assert b"GET /readyz" in body and b"exported-1" in body and b"minipay-test" in body
            print("clean")
            """
        )
    )
