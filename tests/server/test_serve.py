"""`minipay serve` with no configuration: sandbox mode, a payment created with the printed key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from minipay.serve import free_ports

pytestmark = pytest.mark.slow


def test_serve_without_configuration_runs_sandbox_mode_and_takes_a_payment(tmp_path: Path) -> None:
    port, sandbox_port, tls_port = free_ports(3)
    creds = tmp_path / "creds.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from minipay.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--sandbox-port",
            str(sandbox_port),
            "--sandbox-tls-port",
            str(tls_port),
            "--credentials-out",
            str(creds),
            "--no-worker",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)
        world = json.loads(creds.read_text())
        assert set(world) == {"service_url", "sandbox_url", "admin_api_key", "sub_merchants"}
        sub = world["sub_merchants"][0]
        assert set(sub) == {"sub_mch_id", "sub_appid", "currency", "api_key"}
        auth = {"Authorization": f"Bearer {sub['api_key']}"}
        with httpx2.Client(timeout=10) as http:
            login = {"appid": sub["sub_appid"], "user": "a"}
            code = http.post(f"{world['sandbox_url']}/sandbox/login", json=login).json()
            session = http.post(f"{world['service_url']}/v1/sessions", json={"code": code["code"]}, headers=auth).json()
            payment = http.post(
                f"{world['service_url']}/v1/payments",
                json={"amount": 1000, "currency": sub["currency"], "description": "Tea", "openid": session["openid"]},
                headers=auth,
            )
            assert payment.status_code == 201, payment.text
            paid = http.post(f"{world['sandbox_url']}/sandbox/pay", json=payment.json()["pay_params"]).json()
            assert paid["errMsg"] == "requestPayment:ok"
            # Strict profile: the notification follows the cashier's answer by 1-3 s of real time.
            current = http.get(f"{world['service_url']}/v1/payments/{payment.json()['id']}", headers=auth).json()
            assert current["status"] == "pending"
            waited = time.monotonic()
            while current["status"] != "succeeded" and time.monotonic() - waited < 10:
                time.sleep(0.2)
                current = http.get(f"{world['service_url']}/v1/payments/{payment.json()['id']}", headers=auth).json()
            assert current["status"] == "succeeded"
            assert 0.5 < time.monotonic() - waited < 5
            # Strict: the service refunds over mutual TLS with the generated client certificate.
            refund = http.post(
                f"{world['service_url']}/v1/payments/{payment.json()['id']}/refunds",
                json={"amount": 300},
                headers={**auth, "Idempotency-Key": "refund-1"},
            )
            assert refund.status_code == 201, refund.text
            assert refund.json()["status"] == "processing"
            journal = http.get(f"{world['sandbox_url']}/sandbox/requests", params={"endpoint": "refund"}).json()
            assert [r["client_cert"] for r in journal["requests"]] == ["1900000109"]
            # Without the certificate (plain HTTP here) WeChat's gateway refuses it.
            bare = http.post(f"{world['sandbox_url']}/secapi/pay/refund", content=b"<xml></xml>")
            assert "证书错误" in bare.text
            # The sandbox runs on its own server: a "drop" fault really closes the connection.
            fault = {"endpoint": "unifiedorder", "fault": "drop", "times": 1}
            assert http.post(f"{world['sandbox_url']}/sandbox/faults", json=fault).status_code == 200
            order = {"amount": 500, "currency": sub["currency"], "description": "Cake", "openid": session["openid"]}
            tap = {**auth, "Idempotency-Key": "cake-1"}
            dropped = http.post(f"{world['service_url']}/v1/payments", json=order, headers=tap)
            assert dropped.status_code == 503, dropped.text
            listed = http.get(f"{world['service_url']}/v1/payments", params={"status": "created"}, headers=auth).json()
            assert [p["last_error"] for p in listed["data"]] == ["ReadTimeoutError"], listed
            retried = http.post(f"{world['service_url']}/v1/payments", json=order, headers=tap)
            assert (retried.status_code, retried.json()["status"]) == (200, "pending")
            # One clock: an hour on the sandbox's clock is an hour for the service too, so a new
            # order's time_start/time_expire are not in the sandbox's past (they used to be: PARAM_ERROR).
            moved = http.post(f"{world['sandbox_url']}/sandbox/clock", json={"advance": 3600}).json()
            later = http.post(
                f"{world['service_url']}/v1/payments",
                json={**order, "description": "Later"},
                headers={**auth, "Idempotency-Key": "later-1"},
            )
            assert later.status_code == 201, later.text
            created = datetime.fromisoformat(later.json()["created_at"])
            assert abs(created - datetime.fromisoformat(moved["now"])) < timedelta(minutes=5)
            paid = http.post(f"{world['sandbox_url']}/sandbox/pay", json=later.json()["pay_params"]).json()
            assert paid["errMsg"] == "requestPayment:ok"
        assert (tmp_path / ".minipay" / "minipay.db").is_file()
        assert (tmp_path / ".minipay" / "tls" / "apiclient_cert.p12").is_file()
    finally:
        proc.terminate()
        try:
            output = proc.communicate(timeout=10)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0].decode()
    assert "SANDBOX MODE" in output
    assert sub["api_key"] in output  # the dev keys are printed
    assert "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c" not in output  # the app secret in the login URL is not logged


def test_the_access_log_filter_masks_the_app_secret_and_the_login_code() -> None:
    import logging

    from minipay.serve import _redact_query_secrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/sns/jscode2session?appid=wx1&secret=S3CR3T&js_code=C0DE&grant_type=x", "1.1", 200),
        None,
    )
    assert _redact_query_secrets(record) is True
    line = record.getMessage()
    assert "S3CR3T" not in line
    assert "C0DE" not in line
    assert "appid=wx1" in line


def test_free_ports_are_distinct_bindable_and_out_of_the_kernels_ephemeral_range() -> None:
    import socket

    from minipay.serve import _ephemeral_ports

    ephemeral = _ephemeral_ports()
    first, second = free_ports(5), free_ports(5)
    assert len(set(first + second)) == 10  # never handed out twice by one process
    for port in first + second:
        assert port not in ephemeral
        assert 1024 <= port <= 65535
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_ports_skip_a_port_something_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import minipay.serve as serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # The other port: one free now and not handed out before (``busy + 1`` could be held by any
        # connection on the machine, which made this test fail now and then).
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                other = probe.getsockname()[1]
            if other not in serve._handed_out:
                break
        # Only the busy port and the other are outside the "ephemeral range": the busy one is passed over.
        everything_else = range(1024, 65536)
        monkeypatch.setattr(serve, "_ephemeral_ports", lambda: _Except(everything_else, {busy, other}))
        assert serve.free_ports(1) == [other]


class _Except:
    """A port range minus some ports, standing in for the kernel's ephemeral range."""

    def __init__(self, ports: range, outside: set[int]) -> None:
        self.ports, self.outside = ports, outside

    def __contains__(self, port: object) -> bool:
        return port in self.ports and port not in self.outside
