"""Workers on one PostgreSQL database (four, claiming at the same moment) never run the same job twice
(FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from minipay.server.worker import PAYMENT_FOLLOWUP, WorkerConfig
from tests.e2e.stack import running_stack
from tests.server.worker.conftest import PG_URL, postgres_schema

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_two_workers_on_postgres_never_run_the_same_job_twice() -> None:
    async with postgres_schema("e2e") as engine, running_stack(PG_URL, engine=engine) as stack:
        payments = []
        openid = await stack.login()
        for n in range(12):
            payment = await stack.create_payment(1000 + n, openid=openid)
            await stack.pay(payment, notify="never")
            payments.append(payment)
        await stack.advance(60)
        small_batches = WorkerConfig(batch_size=1, bills=False)
        workers = [stack.new_worker(small_batches, name=f"pg-worker-{n}") for n in range(4)]
        # Every worker's first claim starts at the same moment (their schedule() runs first,
        # one after the other): without SKIP LOCKED two claims select the same due rows.
        await workers[0].schedule()
        summaries = await asyncio.gather(*(worker.tick() for worker in workers))

        assert sum(s.ran for s in summaries) == 12
        assert sum(s.ran > 0 for s in summaries) >= 2
        queried = Counter(r["fields"].get("out_trade_no") for r in await stack.journal("orderquery"))
        assert queried == Counter({p["out_trade_no"]: 1 for p in payments})
        for payment in payments:
            assert (await stack.payment(payment["id"]))["status"] == "succeeded"
            job = await stack.job(PAYMENT_FOLLOWUP, payment["id"])
            assert (job["status"], job["attempts"]) == ("done", 1)
            assert len(await stack.outbox("payment.succeeded", payment["id"])) == 1
