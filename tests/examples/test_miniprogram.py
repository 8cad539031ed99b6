"""The sample mini program plays a real user against ``minipay serve`` (sandbox mode) + the shop backend.

This starts both on free loopback ports and runs the node test (examples/miniprogram/test), which
renders the pages with miniprogram-simulate and forwards ``wx.login`` / ``wx.requestPayment`` to the
sandbox and ``wx.request`` to the shop backend. Node and npm are needed: without them the test skips,
except in CI (``MINIPAY_REQUIRE_POSTGRES=1``), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx2
import pytest

from minipay.serve import free_ports

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
MINIPROGRAM = ROOT / "examples" / "miniprogram"


def require_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    reason = "node and npm are needed for the mini program's test (apt-get install nodejs npm)"
    if os.environ.get("MINIPAY_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason + "; CI must have them")
    pytest.skip(reason)


@contextmanager
def running(args: list[str], cwd: Path, ready_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIPAY_", "SHOP_"))}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                if httpx2.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, f"{args[3:5]} did not start: " + log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_user_pays_in_the_mini_program(tmp_path: Path) -> None:
    node, npm = require_node()
    if not (MINIPROGRAM / "node_modules").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=MINIPROGRAM, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    port, sandbox_port, shop_port = free_ports(3)
    creds, shop_db = tmp_path / "creds.json", tmp_path / "shop.db"
    serve = [sys.executable, "-c", "from minipay.cli import main; main()", "serve", "--port", str(port)]
    serve += ["--sandbox-port", str(sandbox_port), "--credentials-out", str(creds), "--no-access-log"]
    shop = [sys.executable, "-m", "examples.shop_backend", "--credentials", str(creds), "--port", str(shop_port)]
    shop += ["--db", str(shop_db)]
    with (
        running(serve, tmp_path, f"http://127.0.0.1:{port}/readyz", tmp_path / "serve.log"),
        running(shop, tmp_path, f"http://127.0.0.1:{shop_port}/products", tmp_path / "shop.log"),
    ):
        world = json.loads(creds.read_text())
        env = {**os.environ, "SHOP_URL": f"http://127.0.0.1:{shop_port}", "SANDBOX_URL": world["sandbox_url"]}
        run = subprocess.run(
            [node, "--test", "test/shop.test.js"], cwd=MINIPROGRAM, env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "# pass 4" in run.stdout, run.stdout[-3000:]
        # Each paid order also got its signed payment.succeeded webhook, verified and applied once.
        deadline = time.monotonic() + 20
        while True:
            with closing(sqlite3.connect(shop_db)) as db:
                orders = db.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall()
                events = db.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall()
            if dict(events).get("payment.succeeded") == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert dict(orders) == {"paid": 3}
        assert dict(events) == {"payment.succeeded": 3}, (tmp_path / "shop.log").read_text()[-3000:]

        # A refund made at the service reaches the shop as a signed refund.succeeded webhook.
        with closing(sqlite3.connect(shop_db)) as db:
            payment_id, amount = db.execute("SELECT payment_id, amount FROM orders LIMIT 1").fetchone()
        auth = {"Authorization": f"Bearer {world['sub_merchants'][0]['api_key']}", "Idempotency-Key": "refund-1"}
        refund = httpx2.post(
            f"{world['service_url']}/v1/payments/{payment_id}/refunds",
            json={"amount": amount},
            headers=auth,
            timeout=30,
        )
        assert refund.status_code == 201, refund.text
        # The sandbox completes refunds after refund_delay (60 s) of its clock, which the service shares.
        assert httpx2.post(f"{world['sandbox_url']}/sandbox/clock", json={"advance": 61}, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            with closing(sqlite3.connect(shop_db)) as db:
                refunded = db.execute("SELECT status FROM orders WHERE payment_id = ?", (payment_id,)).fetchone()[0]
            if refunded == "refunded" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert refunded == "refunded", (tmp_path / "shop.log").read_text()[-3000:]
