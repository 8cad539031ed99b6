"""``minipay worker --once`` and ``minipay reconcile --date``: the commands' work against a sandbox on a
real loopback port (the commands build their own container from the settings, like in production)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner

from minipay.cli import app
from minipay.sandbox import create_app as create_sandbox_app
from minipay.serve import sandbox_settings
from minipay.server.api import create_app
from minipay.server.bootstrap import build_container
from minipay.server.settings import Settings
from minipay.server.worker import WorkerConfig
from minipay.server.worker._cli import UsageError, reconcile_main, worker_main
from minipay.server.worker.api import build_router
from tests.e2e.stack import START, Forward, SandboxTime, serving
from tests.profiles import LENIENT

SUB1 = "1900000110"


@dataclass
class Loopback:
    settings: Settings
    sandbox: httpx2.AsyncClient
    service: httpx2.AsyncClient
    auth: dict[str, str]

    async def paid_payment(self, amount: int, **pay: Any) -> dict[str, Any]:
        login = (await self.sandbox.post("/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "eve"})).json()
        session = await self.service.post("/v1/sessions", json={"code": login["code"]}, headers=self.auth)
        body = {"amount": amount, "currency": "HKD", "description": "Cake", "openid": session.json()["openid"]}
        payment: dict[str, Any] = (await self.service.post("/v1/payments", json=body, headers=self.auth)).json()
        paid = (await self.sandbox.post("/sandbox/pay", json={**payment["pay_params"], **pay})).json()
        assert paid["errMsg"] == "requestPayment:ok"
        return payment


@pytest.fixture
async def loopback(tmp_path: Path) -> AsyncIterator[Loopback]:
    to_service = Forward()
    sandbox_app = create_sandbox_app(LENIENT, seed=5, start=START, notify_transport=to_service)
    async with serving(sandbox_app) as sandbox_url:
        keys = {"admin": "adm_" + secrets.token_hex(20), SUB1: "sk_" + secrets.token_hex(20)}
        keys["1900000111"] = "sk_" + secrets.token_hex(20)
        settings = sandbox_settings(
            sandbox_app.state.sandbox.config,
            sandbox_url=sandbox_url,
            service_url="http://service",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}",
            keys=keys,
        ).model_copy(update={"webhook_dispatch": False})
        container = build_container(settings, clock=SandboxTime(sandbox_app.state.sandbox))
        service_app = create_app(settings, container=container, routers=[build_router()])
        to_service.app = service_app
        async with (
            service_app.router.lifespan_context(service_app),
            httpx2.AsyncClient(base_url=sandbox_url) as sandbox,
            httpx2.AsyncClient(transport=httpx2.ASGITransport(service_app), base_url="http://service") as service,
        ):
            yield Loopback(settings, sandbox, service, {"Authorization": f"Bearer {keys[SUB1]}"})


@pytest.mark.anyio
async def test_worker_once_runs_every_due_job_and_prints_a_summary(loopback: Loopback) -> None:
    payment = await loopback.paid_payment(1000, notify="never")
    lines: list[str] = []
    # The command's own clock is the machine's: with no delay, the active query is due at once.
    config = WorkerConfig(query_delay=timedelta(0), bills=False)
    status = await worker_main(loopback.settings, config=config, once=True, revive_dead=True, echo=lines.append)
    assert status == 0
    assert lines[0] == "revived 0 dead job(s)"
    summary = json.loads(lines[-1])
    assert summary["completed"] >= 1
    assert summary["failed"] == 0
    found = (await loopback.service.get(f"/v1/payments/{payment['id']}", headers=loopback.auth)).json()
    assert found["status"] == "succeeded"


@pytest.mark.anyio
async def test_reconcile_replaces_the_days_run_and_exits_1_on_discrepancies(loopback: Loopback) -> None:
    for amount in (1000, 2000):
        await loopback.paid_payment(amount)
    next_morning = START + timedelta(days=1)
    (await loopback.sandbox.post("/sandbox/clock", json={"set": next_morning.isoformat()})).raise_for_status()

    lines: list[str] = []
    day = START.date()
    assert await reconcile_main(loopback.settings, day=day, as_json=True, echo=lines.append) == 0
    report = json.loads(lines[-1])
    runs = {r["sub_mch_id"]: r for r in report["runs"]}
    assert (runs[SUB1]["status"], runs[SUB1]["bill_rows"], runs[SUB1]["ledger_rows"]) == ("ok", 2, 2)

    fault = {"endpoint": "downloadbill", "fault": "bill_missing_trade"}
    (await loopback.sandbox.post("/sandbox/faults", json=fault)).raise_for_status()
    lines.clear()
    status = await reconcile_main(loopback.settings, day=day, sub_mch_ids=[SUB1], as_json=True, echo=lines.append)
    assert status == 1
    report = json.loads(lines[-1])
    assert [d["kind"] for d in report["discrepancies"]] == ["missing_in_bill"]
    assert report["runs"][0]["discrepancies"] == 1  # the earlier clean run was replaced, not added to

    lines.clear()
    assert await reconcile_main(loopback.settings, day=day, download=False, as_json=True, echo=lines.append) == 1
    shown = json.loads(lines[-1])
    assert len(shown["discrepancies"]) == 1

    # The command and GET /v1/reconciliation/{date} tell the same story, field for field.
    admin = {"Authorization": f"Bearer {loopback.settings.admin_api_keys[0].get_secret_value()}"}
    api = await loopback.service.get(f"/v1/reconciliation/{day.isoformat()}", headers=admin)
    assert api.status_code == 200, api.text
    assert api.json() == shown
    mine = (await loopback.service.get(f"/v1/reconciliation/{day.isoformat()}", headers=loopback.auth)).json()
    lines.clear()
    await reconcile_main(
        loopback.settings, day=day, sub_mch_ids=[SUB1], download=False, as_json=True, echo=lines.append
    )
    assert mine == json.loads(lines[-1])


@pytest.mark.anyio
async def test_reconcile_refuses_a_day_whose_bill_is_not_published_yet(loopback: Loopback) -> None:
    day = START.date()
    before = START + timedelta(hours=23)  # 09:00 China time the next day: not yet
    with pytest.raises(UsageError, match="published from"):
        await reconcile_main(loopback.settings, day=day, now=before, echo=lambda _: None)
    assert await reconcile_main(loopback.settings, day=day, now=before, force=True, echo=lambda _: None) == 0


def test_the_commands_refuse_a_bad_date_and_a_missing_configuration(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["reconcile", "--date", "2026-3-2"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    for command in (["reconcile", "--date", "2026-03-02"], ["worker", "--once"]):
        result = runner.invoke(app, [*command, "--config", str(empty)])
        assert result.exit_code == 2, result.output
        assert "needs a configuration" in result.output
