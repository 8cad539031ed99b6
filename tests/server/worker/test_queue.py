"""The job queue: idempotent enqueue, leases, fencing, and no job ever claimed twice at once."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.server.worker import JobQueue, JobStatus
from tests.server.worker.conftest import ManualClock, units

pytestmark = pytest.mark.anyio


async def test_enqueue_is_idempotent_per_kind_and_key(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock)
    assert await queue.enqueue("payment.followup", "pay_1", {"payment_id": "pay_1"}) is True
    assert await queue.enqueue("payment.followup", "pay_1", {"payment_id": "other"}) is False
    assert await queue.enqueue("refund.followup", "pay_1") is True
    row = await queue.get("payment.followup", "pay_1")
    assert row is not None
    assert row["payload"] == {"payment_id": "pay_1"}
    assert await queue.counts() == {JobStatus.PENDING: 2}


async def test_only_due_jobs_are_claimed(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock, lease=timedelta(hours=1))
    await queue.enqueue("k", "now")
    await queue.enqueue("k", "later", run_at=clock.now() + timedelta(minutes=5))
    jobs = await queue.claim("w1")
    assert [j.key for j in jobs] == ["now"]
    assert jobs[0].attempts == 1
    assert jobs[0].run_at.tzinfo is not None
    clock.advance(300)
    assert [j.key for j in await queue.claim("w1")] == ["later"]


async def test_a_leased_job_is_not_claimed_again_until_its_lease_expires(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    queue = JobQueue(units(engine), clock, lease=timedelta(seconds=30))
    await queue.enqueue("k", "a")
    (first,) = await queue.claim("w1")
    clock.advance(29)
    assert await queue.claim("w2") == []
    clock.advance(1)
    (again,) = await queue.claim("w2")
    assert again.id == first.id
    assert again.attempts == 2
    assert again.lease_token != first.lease_token


async def test_a_worker_that_lost_its_lease_cannot_finish_the_job(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock, lease=timedelta(seconds=30))
    await queue.enqueue("k", "a")
    (stale,) = await queue.claim("w1")
    clock.advance(31)
    (fresh,) = await queue.claim("w2")
    assert await queue.complete(stale, {"by": "w1"}) is False
    assert await queue.retry(stale, clock.now()) is False
    assert await queue.complete(fresh, {"by": "w2"}) is True
    row = await queue.get("k", "a")
    assert row is not None
    assert row["status"] == JobStatus.DONE
    assert row["result"] == {"by": "w2"}


async def test_a_heartbeat_keeps_the_lease(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock, lease=timedelta(seconds=30))
    await queue.enqueue("k", "a")
    (job,) = await queue.claim("w1")
    clock.advance(20)
    assert await queue.extend(job) is True
    clock.advance(20)
    assert await queue.claim("w2") == []


async def test_a_planned_follow_up_does_not_use_up_attempts(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock)
    await queue.enqueue("k", "a", {"n": 0})
    (job,) = await queue.claim("w1")
    assert await queue.retry(job, clock.now() + timedelta(seconds=10), payload={"n": 1}, count_attempt=False)
    assert await queue.claim("w1") == []
    assert await queue.next_run_at() == clock.now() + timedelta(seconds=10)
    clock.advance(10)
    (job,) = await queue.claim("w1")
    assert job.attempts == 1
    assert job.payload == {"n": 1}
    assert await queue.fail(job, "gave up")
    row = await queue.get("k", "a")
    assert row is not None
    assert (row["status"], row["last_error"]) == (JobStatus.DEAD, "gave up")


async def test_concurrent_claimers_never_share_a_job(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock)
    await queue.enqueue_many([("k", f"job{i}", {}, None) for i in range(60)])
    claimed: list[int] = []

    async def claimer(name: str) -> None:
        while True:
            jobs = await queue.claim(name, limit=3)
            if not jobs:
                return
            claimed.extend(j.id for j in jobs)
            for job in jobs:
                assert await queue.complete(job)

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(claimer, f"w{n}")
    assert len(claimed) == 60
    assert len(set(claimed)) == 60
    assert await queue.counts() == {JobStatus.DONE: 60}


async def test_the_overview_shows_counts_lateness_stalls_and_dead_jobs(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock, lease=timedelta(seconds=30))
    await queue.enqueue("a", "1")
    await queue.enqueue("a", "2")
    await queue.enqueue("b", "1", run_at=clock.now() + timedelta(hours=1))
    (first, second) = await queue.claim("w1", kinds=["a"])
    await queue.fail(first, "boom")
    clock.advance(45)  # the second one's lease has run out: stalled
    view = await queue.overview()
    assert view["counts"] == {"a": {"dead": 1, "running": 1}, "b": {"pending": 1}}
    assert view["stalled"] == 1
    assert view["overdue_seconds"] == 0.0
    assert [(d["kind"], d["key"], d["last_error"]) for d in view["dead"]] == [("a", first.key, "boom")]
    await queue.enqueue("c", "late")
    clock.advance(20)
    assert (await queue.overview())["overdue_seconds"] == 20.0
    assert second.key != first.key


async def test_dead_jobs_can_be_revived(engine: AsyncEngine, clock: ManualClock) -> None:
    queue = JobQueue(units(engine), clock)
    await queue.enqueue("a", "1")
    (job,) = await queue.claim("w1")
    await queue.fail(job, "fixed since")
    assert await queue.revive_dead(kind="other") == 0
    assert await queue.revive_dead() == 1
    (again,) = await queue.claim("w1")
    assert (again.id, again.attempts) == (job.id, 1)


async def test_a_job_enqueued_in_a_unit_of_work_exists_only_if_it_commits(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    factory = units(engine)
    queue = JobQueue(factory, clock)
    async with factory() as uow:
        assert await queue.enqueue("k", "rolled-back", uow=uow) is True
    async with factory() as uow:
        assert await queue.enqueue("k", "committed", uow=uow) is True
        await uow.commit()
    assert await queue.get("k", "rolled-back") is None
    row = await queue.get("k", "committed")
    assert row is not None
    assert row["status"] == JobStatus.PENDING
