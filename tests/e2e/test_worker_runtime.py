"""The worker as it runs for real: inside the app's lifespan, failing jobs, unknown jobs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from minipay.server.api import create_app
from minipay.server.worker import PAYMENT_FOLLOWUP, JobStatus, WorkerConfig
from minipay.server.worker.api import worker_task
from tests.e2e.stack import Stack, running_stack

pytestmark = pytest.mark.anyio


async def test_the_worker_runs_inside_the_service_lifespan(tmp_path: Path) -> None:
    task = worker_task(WorkerConfig(poll_interval=0.02, bills=False))
    async with running_stack(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", background=[task]) as stack:
        payment = await stack.create_payment(1000)
        await stack.pay(payment, notify="never")
        await stack.advance(60)
        for _ in range(250):  # the background worker polls every 20 ms (real time); at most 5 s
            if (await stack.payment(payment["id"]))["status"] == "succeeded":
                break
            await asyncio.sleep(0.02)
        assert (await stack.payment(payment["id"]))["status"] == "succeeded"
        for _ in range(250):
            if stack.receiver.types():
                break
            await asyncio.sleep(0.02)
        assert stack.receiver.types() == ["payment.succeeded"]


async def test_a_failing_job_backs_off_and_is_left_dead_after_its_attempts(stack: Stack) -> None:
    worker = stack.new_worker(WorkerConfig(max_attempts=3, bills=False), name="fragile")
    payment = await stack.create_payment(1000)
    # A forged-looking answer (bad signature): never trusted, never retried by the SDK itself.
    await stack.fault(endpoint="orderquery", fault="bad_signature", times=100, out_trade_no=payment["out_trade_no"])
    await stack.advance(60)
    await worker.run_until_idle()
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert (job["status"], job["attempts"]) == (JobStatus.PENDING, 1)
    assert job["last_error"].startswith("ResponseSignatureError: [orderquery] response wrong signature")
    assert job["run_at"] == stack.container.clock.now() + timedelta(seconds=5)
    await stack.advance(5)
    await worker.run_until_idle()
    assert (await stack.job(PAYMENT_FOLLOWUP, payment["id"]))["attempts"] == 2
    await stack.advance(10)  # the gap doubles
    await worker.run_until_idle()
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert (job["status"], job["attempts"]) == (JobStatus.DEAD, 3)
    assert (await stack.payment(payment["id"]))["status"] == "pending"  # nothing invented


async def test_a_job_of_an_unknown_kind_is_left_dead(stack: Stack) -> None:
    await stack.worker.queue.enqueue("mystery.kind", "x1")
    await stack.worker.run_until_idle()
    job = await stack.job("mystery.kind", "x1")
    assert job["status"] == JobStatus.DEAD
    assert "no handler" in job["last_error"]


async def test_the_queue_overview_is_for_the_admin_key_only(stack: Stack) -> None:
    await stack.worker.queue.enqueue("mystery.kind", "x1")
    await stack.worker.run_until_idle()
    r = await stack.service.get("/v1/worker/jobs", headers={"Authorization": f"Bearer {stack.keys['admin']}"})
    assert r.status_code == 200
    view = r.json()
    assert view["counts"]["mystery.kind"] == {"dead": 1}
    assert view["dead"][0]["key"] == "x1"
    r = await stack.service.get("/v1/worker/jobs", headers=stack.headers())
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"


async def wait_until_the_job_queries_wechat(stack: Stack, payment: dict[str, Any]) -> None:
    """Wait until the follow-up job is inside its (delayed) order query at the sandbox.

    Its row says RUNNING from the claim on, but a worker told to stop between the claim and the
    job's start hands the job back unstarted (see the test below): only the sandbox having taken
    the delay fault says the job is under way.
    """
    for _ in range(250):  # at most 5 s
        if not stack.backend.faults:
            break
        await asyncio.sleep(0.02)
    assert not stack.backend.faults, "the follow-up job never queried the order"
    row = await stack.worker.queue.get(PAYMENT_FOLLOWUP, payment["id"])
    assert row is not None
    assert row["status"] == JobStatus.RUNNING


async def test_stopping_the_service_lets_the_worker_finish_the_job_it_is_running(stack: Stack) -> None:
    payment = await stack.create_payment(1000)
    await stack.pay(payment, notify="never")
    # WeChat answers the order query slowly (real time): the service is told to stop meanwhile.
    await stack.fault(endpoint="orderquery", fault="delay", delay=0.5, out_trade_no=payment["out_trade_no"])
    await stack.advance(60)
    task = worker_task(WorkerConfig(poll_interval=0.02, bills=False, webhooks=False), name="in-process")
    app = create_app(stack.settings, container=stack.container, background=[task])
    async with app.router.lifespan_context(app):
        await wait_until_the_job_queries_wechat(stack, payment)
    # The app has stopped: the worker finished its job first (not cancelled mid-way, left to a lease).
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert job["status"] == JobStatus.DONE, job
    assert (job["lease_owner"], job["result"]["via"]) == ("in-process", "query")
    assert (await stack.payment(payment["id"]))["status"] == "succeeded"


async def test_the_apps_shutdown_grace_bounds_the_worker_too(stack: Stack) -> None:
    payment = await stack.create_payment(1000)
    await stack.pay(payment, notify="never")
    # The order query takes 1 s (real time); the app gives its tasks 0.2 s once it stops.
    await stack.fault(endpoint="orderquery", fault="delay", delay=1.0, out_trade_no=payment["out_trade_no"])
    await stack.advance(60)
    task = worker_task(WorkerConfig(poll_interval=0.02, bills=False, webhooks=False), name="cut-off")
    app = create_app(stack.settings, container=stack.container, background=[task], shutdown_grace=0.2)
    async with app.router.lifespan_context(app):
        await wait_until_the_job_queries_wechat(stack, payment)
    # Past the app's grace the worker did not wait its own STOP_GRACE on top: the job was cut off
    # and is left to its lease (another worker takes it over), the payment untouched.
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert (job["status"], job["lease_owner"]) == (JobStatus.RUNNING, "cut-off"), job
    assert (await stack.payment(payment["id"]))["status"] == "pending"


async def test_a_stopping_worker_hands_back_the_jobs_it_claimed_but_did_not_start(stack: Stack) -> None:
    payment = await stack.create_payment(1000)
    await stack.pay(payment, notify="never")
    await stack.advance(60)
    worker = stack.new_worker(WorkerConfig(bills=False, webhooks=False), name="stopping")
    stop = anyio.Event()
    stop.set()
    worker._stop = stop  # what run_forever(stop) sets: the app is stopping while this tick claims
    summary = await worker.tick()
    assert summary.ran == 0
    job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
    assert (job["status"], job["attempts"], job["lease_token"]) == (JobStatus.PENDING, 0, None)
    assert (await stack.payment(payment["id"]))["status"] == "pending"
    await stack.worker.tick()  # any worker runs it now, no lease to wait for
    assert (await stack.payment(payment["id"]))["status"] == "succeeded"


async def test_a_failed_lease_renewal_does_not_cut_the_running_job_off(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = await stack.create_payment(1000)
    await stack.pay(payment, notify="never")
    # The order query takes 0.8 s (real time), longer than the heartbeat's 0.5 s.
    await stack.fault(endpoint="orderquery", fault="delay", delay=0.8, out_trade_no=payment["out_trade_no"])
    await stack.advance(60)
    worker = stack.new_worker(WorkerConfig(lease=timedelta(seconds=1.5), bills=False, webhooks=False), name="hb")
    renewals = 0

    async def database_blip(job: Any) -> bool:
        nonlocal renewals
        renewals += 1
        raise ConnectionError("database unreachable for a moment")

    monkeypatch.setattr(worker.queue, "extend", database_blip)
    summary = await worker.tick()
    assert renewals >= 1
    assert (summary.ran, summary.completed) == (1, 1)
    assert (await stack.payment(payment["id"]))["status"] == "succeeded"
