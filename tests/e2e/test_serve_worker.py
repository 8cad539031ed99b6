"""``minipay serve`` runs the worker in-process and stops it cleanly on SIGINT (``--no-worker``: see
tests/server/test_serve.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from minipay.serve import free_ports

pytestmark = pytest.mark.slow


def _serve(
    tmp_path: Path, *extra: str, ports: tuple[int, int, int] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """A real ``minipay serve`` in sandbox mode, ready; and the world it printed."""
    port, sandbox_port, tls_port = ports or free_ports(3)
    creds = tmp_path / "creds.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    command = [sys.executable, "-c", "from minipay.cli import main; main()", "serve"]
    command += ["--port", str(port), "--sandbox-port", str(sandbox_port), "--sandbox-tls-port", str(tls_port)]
    command += ["--credentials-out", str(creds), *extra]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read().decode() if proc.stdout else "minipay serve exited")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the service did not start within 120 s")
        time.sleep(0.1)
    return proc, json.loads(creds.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM, as systemd or Kubernetes sends it; the exit status and the output (a hang past 15 s fails)."""
    proc.send_signal(signal.SIGTERM)
    try:
        output = proc.communicate(timeout=15)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0].decode()
        pytest.fail(f"minipay serve did not stop within 15 s of SIGINT:\n{output}")
    return proc.returncode, output


def _followups(world: dict[str, Any], http: httpx2.Client) -> dict[str, int]:
    admin = {"Authorization": f"Bearer {world['admin_api_key']}"}
    overview = http.get(f"{world['service_url']}/v1/worker/jobs", headers=admin)
    assert overview.status_code == 200, overview.text
    counts: dict[str, int] = overview.json()["counts"].get("payment.followup", {})
    return counts


def _create_payment(world: dict[str, Any], http: httpx2.Client) -> None:
    sub = world["sub_merchants"][0]
    auth = {"Authorization": f"Bearer {sub['api_key']}"}
    code = http.post(f"{world['sandbox_url']}/sandbox/login", json={"appid": sub["sub_appid"], "user": "w"}).json()
    session = http.post(f"{world['service_url']}/v1/sessions", json={"code": code["code"]}, headers=auth).json()
    body = {"amount": 700, "currency": sub["currency"], "description": "Tea", "openid": session["openid"]}
    created = http.post(f"{world['service_url']}/v1/payments", json=body, headers=auth)
    assert created.status_code == 201, created.text


def test_serve_runs_the_worker_in_process_and_stops_it_cleanly(tmp_path: Path) -> None:
    proc, world = _serve(tmp_path)
    try:
        with httpx2.Client(timeout=10) as http:
            _create_payment(world, http)
            # The in-process worker schedules the payment's active query on its next tick (every second).
            deadline = time.monotonic() + 10
            while not _followups(world, http):
                assert time.monotonic() < deadline, "the in-process worker never scheduled the payment's follow-up"
                time.sleep(0.1)
            assert _followups(world, http) == {"pending": 1}
    finally:
        status, output = _stop(proc)
    # uvicorn re-raises SIGTERM once its shutdown is complete, so the process ends by that signal.
    assert status in (0, -signal.SIGTERM), output
    assert output.count("Waiting for application shutdown.") == output.count("Application shutdown complete.") > 0
    assert "Traceback" not in output, output
    assert "worker tick failed" not in output, output


def test_a_restarted_serve_still_knows_the_pending_orders(tmp_path: Path) -> None:
    # The sandbox's orders are kept in .minipay/sandbox.sqlite3 next to the service's database: an
    # order the database holds as pending can still be paid (and notified) after a restart.
    port, sandbox_port, tls_port = free_ports(3)
    ports = (port, sandbox_port, tls_port)
    proc, world = _serve(tmp_path, "--no-worker", ports=ports)
    sub = world["sub_merchants"][0]
    auth = {"Authorization": f"Bearer {sub['api_key']}"}
    try:
        with httpx2.Client(timeout=10) as http:
            login = {"appid": sub["sub_appid"], "user": "r"}
            code = http.post(f"{world['sandbox_url']}/sandbox/login", json=login).json()["code"]
            openid = http.post(f"{world['service_url']}/v1/sessions", json={"code": code}, headers=auth).json()
            body = {"amount": 800, "currency": sub["currency"], "description": "Tea", "openid": openid["openid"]}
            payment = http.post(f"{world['service_url']}/v1/payments", json=body, headers=auth).json()
            assert payment["status"] == "pending", payment
    finally:
        _stop(proc)
    assert (tmp_path / ".minipay" / "sandbox.sqlite3").is_file()
    proc, world = _serve(tmp_path, "--no-worker", ports=ports)
    try:
        with httpx2.Client(timeout=10) as http:
            paid = http.post(f"{world['sandbox_url']}/sandbox/pay", json=payment["pay_params"]).json()
            assert paid["errMsg"] == "requestPayment:ok", paid  # the restarted sandbox knows the prepay_id
            url = f"{world['service_url']}/v1/payments/{payment['id']}"
            deadline = time.monotonic() + 15
            while (status := http.get(url, headers=auth).json()["status"]) != "succeeded":
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
    finally:
        _stop(proc)
