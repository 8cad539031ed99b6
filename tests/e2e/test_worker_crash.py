"""A real ``minipay worker`` process killed with SIGKILL in the middle of a job: another worker takes the
stalled job over once its lease has run out, and completes it exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from minipay.sandbox import create_app as create_sandbox_app
from minipay.serve import sandbox_settings
from minipay.server.adapters import OffsetClock
from minipay.server.api import create_app
from minipay.server.bootstrap import build_container
from minipay.server.settings import Settings
from minipay.server.worker import PAYMENT_FOLLOWUP, Worker, WorkerConfig, worker_jobs
from tests.e2e.stack import Forward, serving
from tests.profiles import LENIENT

pytestmark = pytest.mark.anyio

SUB1 = "1900000110"
LEASE = 5  # seconds (worker A's lease, on the real clock)


def _toml(settings: Settings) -> str:
    """The settings as a configuration file for the worker process."""

    def s(value: object) -> str:
        return json.dumps(str(value))

    lines = [
        f"database_url = {s(settings.database_url)}",
        f"public_base_url = {s(settings.public_base_url)}",
        "allow_local_notify_url = true",
        f"admin_api_keys = [{', '.join(s(k.get_secret_value()) for k in settings.admin_api_keys)}]",
    ]
    for inst in settings.institutions:
        lines += [
            "",
            "[[institutions]]",
            f"name = {s(inst.name)}",
            f"appid = {s(inst.appid)}",
            f"mch_id = {s(inst.mch_id)}",
            f"api_key = {s(inst.api_key.get_secret_value())}",
            f"sign_type = {s(inst.sign_type)}",
            f"base_url = {s(inst.base_url)}",
            f"login_base_url = {s(inst.login_base_url)}",
        ]
    for sub in settings.sub_merchants:
        lines += [
            "",
            "[[sub_merchants]]",
            f"institution = {s(sub.institution)}",
            f"sub_mch_id = {s(sub.sub_mch_id)}",
            f"sub_appid = {s(sub.sub_appid)}",
            f"app_secret = {s(sub.app_secret.get_secret_value())}",
            f"currency = {s(sub.currency)}",
            f"api_keys = [{', '.join(s(k.get_secret_value()) for k in sub.api_keys)}]",
        ]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
async def test_a_worker_killed_mid_job_has_its_job_completed_once_by_another(tmp_path: Path) -> None:
    to_service = Forward()
    sandbox_app = create_sandbox_app(LENIENT, seed=3, notify_transport=to_service)
    async with serving(sandbox_app) as sandbox_url:
        keys = {"admin": "adm_" + "a" * 40, SUB1: "sk_" + "b" * 40, "1900000111": "sk_" + "c" * 40}
        settings = sandbox_settings(
            sandbox_app.state.sandbox.config,
            sandbox_url=sandbox_url,
            service_url="http://service",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}",
            keys=keys,
        ).model_copy(update={"webhook_dispatch": False})
        container = build_container(settings)
        service_app = create_app(settings, container=container)
        to_service.app = service_app
        async with (
            service_app.router.lifespan_context(service_app),
            httpx2.AsyncClient(base_url=sandbox_url) as sandbox,
            httpx2.AsyncClient(transport=httpx2.ASGITransport(service_app), base_url="http://service") as service,
        ):
            auth = {"Authorization": f"Bearer {keys[SUB1]}"}
            login = (await sandbox.post("/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "bob"})).json()
            openid = (await service.post("/v1/sessions", json={"code": login["code"]}, headers=auth)).json()["openid"]
            r = await service.post(
                "/v1/payments",
                json={"amount": 1000, "currency": "HKD", "description": "Tea", "openid": openid},
                headers=auth,
            )
            assert r.status_code == 201, r.text
            payment = r.json()
            paid = (await sandbox.post("/sandbox/pay", json={**payment["pay_params"], "notify": "never"})).json()
            assert paid["errMsg"] == "requestPayment:ok"
            # Worker A's order query will hang (a slow WeChat): it is killed while waiting for the answer.
            fault = {"endpoint": "orderquery", "fault": "delay", "delay": 20, "out_trade_no": payment["out_trade_no"]}
            (await sandbox.post("/sandbox/faults", json=fault)).raise_for_status()

            config_file = tmp_path / "minipay.toml"
            config_file.write_text(_toml(settings))
            env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
            command = [sys.executable, "-c", "from minipay.cli import main; main()", "worker"]
            command += ["--config", str(config_file), "--name", "worker-A", "--lease", str(LEASE)]
            command += ["--query-delay", "0", "--no-bills", "--no-webhooks", "--poll-interval", "0.2"]
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            try:
                job = await _wait_for_claim(container.engine, payment["id"], proc)
                assert job["lease_owner"] == "worker-A"
                await _wait_for_fault_taken(sandbox)  # A's query reached WeChat and hangs there
                proc.send_signal(signal.SIGKILL)
                assert await asyncio.wait_for(proc.wait(), timeout=10) == -signal.SIGKILL
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await asyncio.wait_for(proc.wait(), timeout=10)
                if proc.stdout is not None:
                    await proc.stdout.read()

            # Worker B, in this process. Before A's lease has run out it must not touch the job...
            clock = OffsetClock(datetime.now(UTC))
            worker_b = Worker(
                settings=settings,
                engine=container.engine,
                gateway=container.gateway,
                clock=clock,
                uow_factory=container.uow_factory,
                config=WorkerConfig(bills=False, webhooks=False),
                name="worker-B",
            )
            try:
                summary = await worker_b.tick()
                assert summary.ran == 0
                # ...and once it has, B takes the stalled job over and completes it.
                clock.advance(LEASE + 1)
                summary = await worker_b.tick()
            finally:
                await worker_b.aclose()
            assert (summary.ran, summary.completed) == (1, 1)

            found = (await service.get(f"/v1/payments/{payment['id']}", headers=auth)).json()
            assert found["status"] == "succeeded"
            job = await _job(container.engine, payment["id"])
            assert (job["status"], job["attempts"], job["lease_owner"]) == ("done", 2, "worker-B")
            assert job["result"]["via"] == "query"
            async with container.engine.connect() as conn:
                from minipay.server import db

                rows = (
                    await conn.execute(
                        select(db.outbox_events).where(
                            db.outbox_events.c.payment_id == payment["id"],
                            db.outbox_events.c.type == "payment.succeeded",
                        )
                    )
                ).all()
            assert len(rows) == 1


async def _job(engine: Any, payment_id: str) -> dict[str, Any]:
    t = worker_jobs
    async with engine.connect() as conn:
        row = (await conn.execute(select(t).where(t.c.kind == PAYMENT_FOLLOWUP, t.c.key == payment_id))).mappings()
        found = row.first()
    return dict(found) if found is not None else {}


async def _wait_for_claim(engine: Any, payment_id: str, proc: asyncio.subprocess.Process) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
            pytest.fail(f"worker A exited early ({proc.returncode}):\n{output}")
        job = await _job(engine, payment_id)
        if job.get("status") == "running":
            return job
        await asyncio.sleep(0.05)
    pytest.fail("worker A never claimed the job")


async def _wait_for_fault_taken(sandbox: httpx2.AsyncClient) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not (await sandbox.get("/sandbox/faults")).json()["faults"]:
            return
        await asyncio.sleep(0.05)
    pytest.fail("worker A's order query never reached the sandbox")
