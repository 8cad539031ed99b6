"""The unit of work's contract, checked on SQLite, PostgreSQL and the in-memory fake (``fakes.py``): the
service-layer tests that run on the fake lean on exactly these rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.server import db
from minipay.server.domain import DomainEvent, Payment, PaymentStatus, Refund, RefundStatus
from minipay.server.ports import UnitOfWorkPort
from minipay.server.uow import ConcurrentUpdate, UnitOfWork, retrying
from tests.server.conftest import START, SUB1, SUB2, fresh_pg_url, fresh_sqlite_url
from tests.server.fakes import FakeDatabase

pytestmark = pytest.mark.anyio

MCH = "1900000109"


@dataclass
class Store:
    name: str
    factory: Callable[[], UnitOfWorkPort]
    fake: FakeDatabase | None = None
    engine: AsyncEngine | None = None

    async def count(self, table: str, **where: Any) -> int:
        if self.fake is not None:
            return self.fake.count(table, **where)
        assert self.engine is not None
        t = db.metadata.tables[table]
        query = select(func.count()).select_from(t).where(*(t.c[k] == v for k, v in where.items()))
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def event_types(self, payment_id: str) -> list[str]:
        """The payment's logged event types, in the order they were written."""
        if self.fake is not None:
            return [r["type"] for r in self.fake.rows("payment_events") if r["payment_id"] == payment_id]
        assert self.engine is not None
        e = db.payment_events
        query = select(e.c.type).where(e.c.payment_id == payment_id).order_by(e.c.id)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_session: dict[str, str], _sqlite_template: dict[str, Path]
) -> AsyncIterator[Store]:
    if request.param == "fake":
        fake = FakeDatabase()
        yield Store("fake", fake.unit_of_work, fake=fake)
        return
    if request.param == "sqlite":
        url = await fresh_sqlite_url(_sqlite_template, tmp_path / "minipay.db")
    else:
        url = await fresh_pg_url(_pg_session)
    engine = db.create_engine(url)
    try:
        yield Store(request.param, lambda: UnitOfWork(engine), engine=engine)
    finally:
        await engine.dispose()


def payment(n: int | str, *, sub: str = SUB1, seconds: int = 0, **changes: Any) -> Payment:
    values: dict[str, Any] = {
        "id": f"pay_{n}",
        "institution": "sandbox",
        "appid": "wx8888888888888888",
        "mch_id": MCH,
        "sub_mch_id": sub,
        "sub_appid": "wx1234567890abcdef",
        "out_trade_no": f"ORDER{n}",
        "amount": 1000,
        "currency": "HKD",
        "description": "Coffee",
        "openid": "o-alice",
        "client_ip": "127.0.0.1",
        "created_at": START + timedelta(seconds=seconds),
        "updated_at": START + timedelta(seconds=seconds),
    }
    return Payment(**(values | changes))


def refund(
    n: int,
    paid: Payment,
    amount: int,
    status: RefundStatus = RefundStatus.PENDING,
    failure_code: str | None = None,
    *,
    out_refund_no: str | None = None,
) -> Refund:
    at = START + timedelta(seconds=n)
    return Refund(
        id=f"re_{n}",
        payment_id=paid.id,
        sub_mch_id=paid.sub_mch_id,
        mch_id=paid.mch_id,
        out_refund_no=out_refund_no or f"R{n}",
        amount=amount,
        currency=paid.currency,
        status=status,
        failure_code=failure_code,
        created_at=at,
        updated_at=at,
    )


async def add(store: Store, *entities: Payment | Refund) -> None:
    async with store.factory() as uow:
        for entity in entities:
            if isinstance(entity, Payment):
                await uow.payments.add(entity)
            else:
                await uow.refunds.add(entity)
        await uow.commit()


async def get(store: Store, payment_id: str) -> Payment | None:
    async with store.factory().reading() as uow:
        return await uow.payments.get(payment_id)


async def test_work_is_seen_by_other_units_of_work_only_once_committed(store: Store) -> None:
    async with store.factory() as uow:
        await uow.payments.add(payment(1))
        assert await uow.payments.get("pay_1") is not None  # its own writes, it sees
        async with store.factory().reading() as other:
            assert await other.payments.get("pay_1") is None
    assert await get(store, "pay_1") is None  # left without commit: rolled back

    async with store.factory() as uow:
        await uow.payments.add(payment(2))
        await uow.commit()
        await uow.payments.add(payment(3))  # a new transaction, never committed
    assert await get(store, "pay_2") is not None
    assert await get(store, "pay_3") is None

    async with store.factory() as uow:
        await uow.payments.add(payment(4))
        await uow.rollback()
        await uow.commit()
    assert await get(store, "pay_4") is None

    with pytest.raises(RuntimeError, match="nothing to commit"):
        async with store.factory().reading() as uow:
            await uow.commit()


async def test_logged_events_are_kept_with_the_commit_in_their_order_and_dropped_without_it(store: Store) -> None:
    paid = payment(1)
    await add(store, paid)

    def log(uow: UnitOfWorkPort, type: str) -> Any:
        return uow.events.append(type=type, source="api", data={"n": type}, now=START, payment_id=paid.id)

    async with store.factory() as uow:
        await log(uow, "left")  # never committed
    async with store.factory() as uow:
        await log(uow, "rolled-back")
        await uow.rollback()
        await log(uow, "first")
        await log(uow, "second")
        await uow.commit()
        await log(uow, "third")  # the next transaction: left without a commit
    async with store.factory() as uow:
        await log(uow, "fourth")
        await uow.commit()
    assert await store.event_types(paid.id) == ["first", "second", "fourth"]


async def test_save_is_conditional_on_the_version_read(store: Store) -> None:
    paid = payment(1)
    await add(store, paid, refund(1, paid, 100))
    stale = await get(store, "pay_1")
    assert stale is not None
    async with store.factory() as uow:
        current = await uow.payments.get("pay_1", for_update=True)
        assert current is not None
        current.last_error = "SYSTEMERROR"
        await uow.payments.save(current)
        assert current.version == 1
        await uow.commit()
    async with store.factory() as uow:
        stale.last_error = "ORDERPAID"
        with pytest.raises(ConcurrentUpdate):
            await uow.payments.save(stale)
    saved = await get(store, "pay_1")
    assert saved is not None
    assert (saved.version, saved.last_error) == (1, "SYSTEMERROR")

    async with store.factory().reading() as uow:
        stale_refund = await uow.refunds.get("re_1")
    assert stale_refund is not None
    for outcome in ("saved", "stale"):
        async with store.factory() as uow:
            if outcome == "saved":
                fresh = await uow.refunds.get("re_1", for_update=True)
                assert fresh is not None
                fresh.accepted("5030000001", START)
                await uow.refunds.save(fresh)
                await uow.commit()
            else:
                with pytest.raises(ConcurrentUpdate):
                    await uow.refunds.save(stale_refund)


async def test_save_writes_what_a_payment_may_change_and_leaves_what_it_never_does(store: Store) -> None:
    await add(store, payment(1))
    seen = await get(store, "pay_1")
    assert seen is not None
    seen.description, seen.amount, seen.metadata = "Tea", 1, {"x": "y"}  # fixed: not written
    seen.last_error, seen.notified_at = "SYSTEMERROR", START  # written
    async with store.factory() as uow:
        await uow.payments.save(seen)
        await uow.commit()
    saved = await get(store, "pay_1")
    assert saved is not None
    assert (saved.description, saved.amount, saved.metadata) == ("Coffee", 1000, {})
    assert (saved.last_error, saved.notified_at, saved.version) == ("SYSTEMERROR", START, 1)


async def test_a_duplicate_key_raises_and_retrying_runs_the_work_again(store: Store) -> None:
    await add(store, payment(1))
    with pytest.raises(IntegrityError):  # (mch_id, sub_mch_id, out_trade_no) is unique
        async with store.factory() as uow:
            await uow.payments.add(payment(2, out_trade_no="ORDER1"))
    await add(store, payment(3, sub=SUB2, out_trade_no="ORDER1"))  # another sub-merchant's numbers are its own
    with pytest.raises(IntegrityError):
        await add(store, payment(1, out_trade_no="OTHER"))  # the id
    paid = payment(4)
    await add(store, paid, refund(1, paid, 100))
    with pytest.raises(IntegrityError):  # (mch_id, out_refund_no)
        await add(store, refund(2, paid, 100, out_refund_no="R1"))
    with pytest.raises(IntegrityError):  # a refund of no payment
        await add(store, refund(3, payment(99), 100))

    async with store.factory() as uow:
        await uow.idempotency.add(f"{SUB1}:payments", "tap-1", "hash", "pay_1", START)
        await uow.commit()
    attempts = 0

    async def work(uow: UnitOfWorkPort) -> str:
        nonlocal attempts
        attempts += 1
        if await uow.idempotency.get(f"{SUB1}:payments", "tap-1") is None or attempts == 1:
            await uow.idempotency.add(f"{SUB1}:payments", "tap-1", "hash", "pay_3", START)  # the key is taken
        row = await uow.idempotency.get(f"{SUB1}:payments", "tap-1")
        assert row is not None
        return str(row["resource_id"])

    assert await retrying(store.factory, work) == "pay_1"
    assert attempts == 2


async def test_payments_are_found_within_their_sub_merchant_and_listed_newest_first(store: Store) -> None:
    await add(
        store,
        payment("a", seconds=1),
        payment("b", seconds=2, status=PaymentStatus.PENDING),
        payment("c", seconds=2),
        payment("d", seconds=3, sub=SUB2),
    )
    async with store.factory().reading() as uow:
        assert await uow.payments.get("pay_a", sub_mch_id=SUB2) is None
        assert await uow.payments.get("pay_a", sub_mch_id=SUB1) == payment("a", seconds=1)  # every field kept
        assert await uow.payments.get_by_out_trade_no(MCH, "ORDERa", sub_mch_id=SUB2) is None
        by_number = await uow.payments.get_by_out_trade_no(MCH, "ORDERa", sub_mch_id=SUB1, for_update=True)
        assert by_number is not None
        assert by_number.id == "pay_a"

        async def ids(**filters: Any) -> list[str]:
            return [p.id for p in await uow.payments.search(**filters)]

        two = START + timedelta(seconds=2)
        assert await ids(sub_mch_id=SUB1) == ["pay_c", "pay_b", "pay_a"]  # a tie on created_at: id descending
        assert await ids(sub_mch_id=None) == ["pay_d", "pay_c", "pay_b", "pay_a"]
        assert await ids(sub_mch_id=SUB1, status="pending") == ["pay_b"]
        assert await ids(sub_mch_id=None, out_trade_no="ORDERd") == ["pay_d"]
        assert await ids(sub_mch_id=SUB1, out_trade_no="ORDERd") == []
        assert await ids(sub_mch_id=None, created_gte=two, created_lt=two + timedelta(seconds=1)) == ["pay_c", "pay_b"]
        assert await ids(sub_mch_id=SUB1, after=(two, "pay_c")) == ["pay_b", "pay_a"]
        assert await ids(sub_mch_id=SUB1, limit=1) == ["pay_c"]


async def test_refunds_reserve_their_amount_unless_they_failed_with_the_money_back(store: Store) -> None:
    paid, other = payment(1), payment(2, sub=SUB2)
    await add(
        store,
        paid,
        other,
        refund(5, paid, 1, RefundStatus.FAILED, "REFUNDCLOSE"),
        refund(1, paid, 10),
        refund(2, paid, 100, RefundStatus.PROCESSING),
        refund(3, paid, 1000, RefundStatus.SUCCEEDED),
        refund(4, paid, 10000, RefundStatus.FAILED, "CHANGE"),
        refund(6, other, 7),
    )
    async with store.factory().reading() as uow:
        assert await uow.refunds.reserved_amount(paid.id) == 11110
        assert [r.id for r in await uow.refunds.for_payment(paid.id)] == ["re_1", "re_2", "re_3", "re_4", "re_5"]
        assert await uow.refunds.get("re_1", sub_mch_id=SUB2) is None
        assert await uow.refunds.get("re_1", sub_mch_id=SUB1) == refund(1, paid, 10)  # every field kept
        assert await uow.refunds.get_by_out_refund_no("1900000999", "R1") is None
        by_number = await uow.refunds.get_by_out_refund_no(MCH, "R6", for_update=True)
        assert by_number is not None
        assert by_number.payment_id == other.id


async def endpoint(uow: UnitOfWorkPort, endpoint_id: str, sub: str | None, seconds: int = 0) -> None:
    await uow.webhooks.add_endpoint(
        {
            "id": endpoint_id,
            "sub_mch_id": sub,
            "url": f"https://{endpoint_id}.example/hooks",
            "secret": f"whsec_{endpoint_id}",
            "created_at": START + timedelta(seconds=seconds),
            "failure_streak": 0,
        }
    )


async def test_endpoints_are_counted_listed_and_deleted_within_their_key(store: Store) -> None:
    async with store.factory() as uow:
        for n, sub in enumerate((SUB1, None, SUB2, SUB1), start=1):
            await endpoint(uow, f"we_{n}", sub, seconds=n)
        await uow.commit()
    async with store.factory() as uow:
        assert (await uow.webhooks.count_endpoints(SUB1), await uow.webhooks.count_endpoints(None)) == (2, 1)
        assert [e["id"] for e in await uow.webhooks.endpoints(SUB1)] == ["we_1", "we_4"]
        assert [e["id"] for e in await uow.webhooks.endpoints(None)] == ["we_1", "we_2", "we_3", "we_4"]
        assert await uow.webhooks.delete_endpoint("we_1", sub_mch_id=SUB2, now=START) is False
        assert await uow.webhooks.delete_endpoint("we_1", sub_mch_id=SUB1, now=START) is True
        assert await uow.webhooks.delete_endpoint("we_1", sub_mch_id=SUB1, now=START) is False
        assert await uow.webhooks.delete_endpoint("we_3", sub_mch_id=None, now=START) is True  # the admin's key
        await uow.commit()
    async with store.factory().reading() as uow:
        assert await uow.webhooks.count_endpoints(SUB1) == 1
        assert [e["id"] for e in await uow.webhooks.endpoints(None)] == ["we_2", "we_4"]


async def test_events_are_logged_and_published_once_per_key_with_a_delivery_per_endpoint(store: Store) -> None:
    paid = payment(1)
    await add(store, paid)
    async with store.factory() as uow:
        for endpoint_id, sub in (("we_mine", SUB1), ("we_admin", None), ("we_theirs", SUB2), ("we_gone", SUB1)):
            await endpoint(uow, endpoint_id, sub)
        assert await uow.webhooks.delete_endpoint("we_gone", sub_mch_id=SUB1, now=START)
        events = [
            DomainEvent("succeeded", {"transaction_id": "42"}, webhook="payment.succeeded", key="payment.succeeded:1"),
            DomainEvent("notified", {}),
        ]
        await uow.record(
            events, source="notification", sub_mch_id=SUB1, now=START, payment_id=paid.id, webhook_data={"id": paid.id}
        )
        assert events == []
        again = await uow.outbox.publish(
            key="payment.succeeded:1", type="payment.succeeded", sub_mch_id=SUB1, data={}, now=START
        )
        assert again is None  # one row per logical event
        await uow.commit()
    assert await store.count("payment_events", payment_id=paid.id, source="notification") == 2
    assert await store.count("outbox_events", payment_id=paid.id, type="payment.succeeded") == 1
    async with store.factory().reading() as uow:
        [published] = await uow.webhooks.events(sub_mch_id=SUB1, payment_id=paid.id, limit=10)
        assert published["data"] == {"id": paid.id}
        assert await uow.webhooks.events(sub_mch_id=SUB2, payment_id=None, limit=10) == []
        assert await uow.webhooks.event(published["id"], sub_mch_id=SUB2) is None
        found = await uow.webhooks.event(published["id"], sub_mch_id=SUB1)
        assert found is not None
        assert found["type"] == "payment.succeeded"
        every = await uow.webhooks.deliveries(published["id"], sub_mch_id=None)
        assert sorted(d["endpoint_id"] for d, _ in every) == ["we_admin", "we_mine"]
        mine = await uow.webhooks.deliveries(published["id"], sub_mch_id=SUB1)
        assert [(d["endpoint_id"], d["status"], list(tries)) for d, tries in mine] == [("we_mine", "pending", [])]
        [(delivery, _)] = mine
        assert (delivery["attempts"], delivery["next_attempt_at"], delivery["created_at"]) == (0, START, START)


def leased(rows: Any) -> list[tuple[str, int]]:
    return sorted((r["endpoint_id"], r["data"]["n"]) for r in rows)


async def test_deliveries_are_leased_per_endpoint_and_finished_only_under_their_lease(store: Store) -> None:
    now = START
    lease = now + timedelta(seconds=30)
    async with store.factory() as uow:
        await endpoint(uow, "we_a", SUB1)
        await endpoint(uow, "we_b", SUB1)
        for n in range(3):
            await uow.outbox.publish(key=f"k{n}", type="payment.succeeded", sub_mch_id=SUB1, data={"n": n}, now=now)
        await uow.commit()
    async with store.factory() as uow:
        first = await uow.webhooks.claim(now, 10, lease, per_endpoint=2)  # oldest due first, two per endpoint
        assert leased(first) == [("we_a", 0), ("we_a", 1), ("we_b", 0), ("we_b", 1)]
        assert first[0]["url"] == f"https://{first[0]['endpoint_id']}.example/hooks"
        assert (first[0]["type"], first[0]["secret"], first[0]["deleted_at"]) == (
            "payment.succeeded",
            f"whsec_{first[0]['endpoint_id']}",
            None,
        )
        await uow.commit()
    async with store.factory() as uow:
        assert leased(await uow.webhooks.claim(now, 10, lease, per_endpoint=2, room={"we_a": 0})) == [("we_b", 2)]
        assert leased(await uow.webhooks.claim(now, 10, lease)) == [("we_a", 2)]
        assert await uow.webhooks.claim(now, 10, lease) == []  # every one is leased
        await uow.commit()

    done = first[0]
    async with store.factory() as uow:
        values = {"status": "succeeded", "attempts": 1, "locked_until": None, "updated_at": now}
        assert await uow.webhooks.finish_attempt(done["id"], now, values) is False  # not its lease
        assert await uow.webhooks.finish_attempt(done["id"], lease, values) is True
        await uow.webhooks.log_attempt(done["id"], at=now, status_code=200, error=None, duration_ms=5)
        assert (await uow.webhooks.count_failure("we_b"), await uow.webhooks.count_failure("we_b")) == (1, 2)
        await uow.webhooks.open_breaker("we_b", lease + timedelta(minutes=1))
        await uow.commit()
    async with store.factory() as uow:
        [(delivery, tries)] = await uow.webhooks.deliveries(done["event_id"], sub_mch_id=None) and [
            (d, t) for d, t in await uow.webhooks.deliveries(done["event_id"], sub_mch_id=None) if d["id"] == done["id"]
        ]
        assert (delivery["status"], [(t["status_code"], t["duration_ms"]) for t in tries]) == ("succeeded", [(200, 5)])
        # The leases ran out: every pending delivery is due again, but none to the endpoint whose breaker is open.
        again = await uow.webhooks.claim(lease, 10, lease + timedelta(seconds=30))
        assert {r["endpoint_id"] for r in again} == {"we_a"}
        assert len(again) == 2
        await uow.webhooks.close_breaker("we_b")
        assert [(e["failure_streak"], e["open_until"]) for e in await uow.webhooks.endpoints(SUB1)] == [(0, None)] * 2
        assert leased(await uow.webhooks.claim(lease, 10, lease + timedelta(seconds=30))) == [
            ("we_b", 0),
            ("we_b", 1),
            ("we_b", 2),
        ]


@pytest.mark.parametrize("store", ["fake", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_what_postgresql_cannot_store_the_fake_refuses_too(store: Store) -> None:
    for n, bad in enumerate(
        ({"description": "x" * 401}, {"description": "a\x00b"}, {"description": "\ud800"}, {"amount": 2**63})
    ):
        with pytest.raises(DBAPIError) as refused:
            await add(store, payment(n, **bad))
        assert not isinstance(refused.value, IntegrityError)  # not a race to retry
    assert await store.count("payments") == 0


async def _decide_and_write(
    store: Store,
    seen: Payment,
    *,
    key: str,
    events: int = 2,
    publishes: int = 1,
    commit: bool = True,
    save: bool = True,
) -> None:
    """What a notification's first attempt does: no read, a save of the row it read before (not for
    an amount mismatch's alert), its event rows, its outbox event(s), then the commit."""
    async with store.factory().writing_at_commit() as uow:
        seen.last_error = key
        seen.updated_at = START + timedelta(seconds=1)
        if save:
            await uow.payments.save(seen)
        for n in range(events):
            await uow.events.append(
                type=f"{key}-{n}", source="notification", data={"n": n}, now=START, payment_id=seen.id, sub_mch_id=SUB1
            )
        for n in range(publishes):
            await uow.outbox.publish(
                key=f"{key}:{n}",
                type="payment.succeeded",
                sub_mch_id=SUB1,
                data={"n": n},
                now=START,
                payment_id=seen.id,
            )
        if commit:
            await uow.commit()


@pytest.mark.parametrize(
    ("events", "publishes", "save"),
    [(2, 1, True), (0, 0, True), (1, 0, True), (9, 1, True), (2, 2, True), (1, 1, False)],
)
async def test_writes_sent_at_commit_are_kept_whole(store: Store, events: int, publishes: int, save: bool) -> None:
    # (2, 1) is a notification's shape and (1, 1) without a save an amount mismatch's alert (one
    # statement each on PostgreSQL); (9, 1) and (2, 2) are written one statement after the other, in
    # a transaction.
    await add(store, payment(1))
    async with store.factory() as uow:
        await endpoint(uow, "we_mine", SUB1)
        await uow.commit()
    seen = await get(store, "pay_1")
    assert seen is not None
    await _decide_and_write(store, seen, key="A", events=events, publishes=publishes, save=save)
    assert seen.version == int(save)
    saved = await get(store, "pay_1")
    assert saved is not None
    if save:
        assert (saved.version, saved.last_error, saved.updated_at) == (1, "A", START + timedelta(seconds=1))
    else:
        assert (saved.version, saved.last_error) == (0, None)
    assert await store.event_types("pay_1") == [f"A-{n}" for n in range(events)]
    assert await store.count("outbox_events", payment_id="pay_1") == publishes
    assert await store.count("webhook_deliveries", endpoint_id="we_mine") == publishes
    async with store.factory().reading() as uow:
        published = await uow.webhooks.events(sub_mch_id=SUB1, payment_id="pay_1", limit=10)
    assert sorted(e["data"]["n"] for e in published) == list(range(publishes))


@pytest.mark.parametrize("events", [1, 2, 9])
async def test_a_new_payment_sent_at_commit_is_kept_whole_and_a_taken_key_writes_nothing(
    store: Store, events: int
) -> None:
    # A payment's insert with its event rows (the API's create: one statement on PostgreSQL; nine
    # rows do not fit it and go one statement after the other, in a transaction).
    async def create(new: Payment, key: str) -> None:
        async with store.factory().writing_at_commit() as uow:
            await uow.payments.add(new)
            for n in range(events):
                await uow.events.append(
                    type=f"{key}-{n}", source="test", data={}, now=START, payment_id=new.id, sub_mch_id=new.sub_mch_id
                )
            await uow.commit()

    await create(payment(1), "A")
    assert await get(store, "pay_1") == payment(1)
    assert await store.event_types("pay_1") == [f"A-{n}" for n in range(events)]
    with pytest.raises(IntegrityError):  # another payment with the same out_trade_no
        await create(payment(2, out_trade_no="ORDER1"), "B")
    assert await get(store, "pay_2") is None
    assert await store.event_types("pay_2") == []
    assert await store.count("payments") == 1


async def test_writes_sent_at_commit_on_a_stale_read_write_nothing(store: Store) -> None:
    await add(store, payment(1))
    stale = await get(store, "pay_1")
    fresh = await get(store, "pay_1")
    assert stale is not None
    assert fresh is not None
    await _decide_and_write(store, fresh, key="first")
    with pytest.raises(ConcurrentUpdate):
        await _decide_and_write(store, stale, key="second")
    assert stale.version == 0  # unchanged: nothing was written
    saved = await get(store, "pay_1")
    assert saved is not None
    assert (saved.version, saved.last_error) == (1, "first")
    assert await store.event_types("pay_1") == ["first-0", "first-1"]
    assert await store.count("outbox_events", payment_id="pay_1") == 1


async def test_writes_sent_at_commit_are_dropped_without_it_and_a_published_key_is_kept_once(store: Store) -> None:
    await add(store, payment(1))
    seen = await get(store, "pay_1")
    assert seen is not None
    await _decide_and_write(store, seen, key="A", commit=False)
    assert await store.event_types("pay_1") == []
    async with store.factory().writing_at_commit() as uow:
        await uow.events.append(type="dropped", source="api", data={}, now=START, payment_id="pay_1")
        await uow.rollback()
        await uow.events.append(type="kept", source="api", data={}, now=START, payment_id="pay_1")
        await uow.commit()
    assert await store.event_types("pay_1") == ["kept"]
    assert (await get(store, "pay_1")).version == 0  # type: ignore[union-attr]
    seen = await get(store, "pay_1")
    assert seen is not None
    await _decide_and_write(store, seen, key="A")
    again = await get(store, "pay_1")
    assert again is not None
    await _decide_and_write(store, again, key="A")  # the same outbox key: the save and the log go on
    assert (await get(store, "pay_1")).version == 2  # type: ignore[union-attr]
    assert await store.event_types("pay_1") == ["kept", "A-0", "A-1", "A-0", "A-1"]
    assert await store.count("outbox_events", payment_id="pay_1") == 1


@pytest.mark.postgres
async def test_a_unit_of_work_that_writes_at_commit_reads_nothing(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url)
    try:
        async with UnitOfWork(engine).writing_at_commit() as uow:
            with pytest.raises(RuntimeError, match="reads nothing"):
                await uow.payments.get("pay_1")
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_reads_on_the_driver_give_what_sqlalchemy_gives(postgres_url: str) -> None:
    engine = db.create_engine(postgres_url)
    try:
        store = Store("postgres", lambda: UnitOfWork(engine), engine=engine)
        await add(store, payment(1, metadata={"order": "A-1", "ünï": "cödé"}, expires_at=START + timedelta(hours=2)))
        async with UnitOfWork(engine).reading() as uow:  # autocommit: on the driver
            assert uow.autocommit
            by_id = await uow.payments.get("pay_1", sub_mch_id=SUB1)
            by_number = await uow.payments.get_by_out_trade_no(MCH, "ORDER1", sub_mch_id=SUB1)
            assert await uow.payments.get("pay_1", sub_mch_id=SUB2) is None
        async with UnitOfWork(engine) as uow:  # in a transaction: through SQLAlchemy
            assert not uow.autocommit
            through_sqlalchemy = await uow.payments.get("pay_1", for_update=True)
        assert by_id == by_number == through_sqlalchemy
        assert by_id is not None
        assert by_id.metadata == {"order": "A-1", "ünï": "cödé"}
        assert by_id.created_at == START
        assert by_id.created_at.utcoffset() == timedelta(0)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_errors_on_the_driver_are_sqlalchemys_and_a_lost_connection_is_not_reused(postgres_url: str) -> None:
    from sqlalchemy import Integer, insert, literal, literal_column, select, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.ext.asyncio import create_async_engine

    from minipay.server.repositories._pg import PgStatement

    engine = db.create_engine(postgres_url, pool_size=1)
    try:
        await add(Store("postgres", lambda: UnitOfWork(engine), engine=engine), payment(1))
        duplicate = (
            insert(db.payments).from_select(["id"], select(literal("pay_1"))).returning(db.payments.c.id).cte("dup")
        )
        with pytest.raises(IntegrityError) as caught:
            async with engine.connect() as conn:
                await PgStatement(select(duplicate.c.id)).fetchrow(conn, {})
        assert getattr(caught.value.orig, "sqlstate", None) in ("23502", "23505")  # not null / unique
        with pytest.raises(DBAPIError) as failed:
            async with engine.connect() as conn:
                await PgStatement(select(literal_column("1 / 0", Integer).label("x"))).fetchrow(conn, {})
        assert getattr(failed.value.orig, "sqlstate", None) == "22012"  # division by zero

        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await conn.rollback()
            admin = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
            async with admin.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await admin.dispose()
            with pytest.raises(OperationalError):
                await PgStatement(select(literal(1).label("one"))).fetchrow(conn, {})
        async with engine.connect() as conn:  # the one pooled connection was replaced
            assert await PgStatement(select(literal(1).label("one"))).fetchrow(conn, {}) == {"one": 1}
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_lost_connection_on_the_driver_renews_every_pooled_one(postgres_url: str) -> None:
    # After a database restart every pooled connection is gone: one failure, not one per connection.
    from sqlalchemy import literal, select, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.ext.asyncio import create_async_engine

    from minipay.server.repositories._pg import PgStatement

    engine = db.create_engine(postgres_url, pool_size=3)
    one = PgStatement(select(literal(1).label("one")))
    try:
        async with engine.connect() as a, engine.connect() as b, engine.connect() as c:
            pids = [(await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() for conn in (a, b, c)]
            for conn in (a, b, c):
                await conn.rollback()
        admin = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as other:
            for pid in pids:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await admin.dispose()
        with pytest.raises(OperationalError):
            async with engine.connect() as conn:
                await one.fetchrow(conn, {})
        for _ in range(3):  # each of the other two would fail too if only the one had been dropped
            async with engine.connect() as conn:
                assert await one.fetchrow(conn, {}) == {"one": 1}
    finally:
        await engine.dispose()


async def test_a_unit_of_work_of_lookups_finds_by_key_what_reading_finds(store: Store) -> None:
    paid = payment(1, metadata={"order": "A-1", "ünï": "cödé"}, expires_at=START + timedelta(hours=2))
    paid.status, paid.paid_at, paid.transaction_id = PaymentStatus.SUCCEEDED, START, "4200000001"
    back = refund(1, paid, 300)
    await add(store, paid, payment(2, sub=SUB2), back)

    async def lookups(uow: Any) -> tuple[Any, ...]:
        return (
            await uow.payments.get("pay_1", sub_mch_id=SUB1),
            await uow.payments.get_by_out_trade_no(MCH, "ORDER1", sub_mch_id=SUB1),
            await uow.refunds.get("re_1"),
            await uow.refunds.get_by_out_refund_no(MCH, "R1"),
        )

    async with store.factory().reading() as uow:
        read = await lookups(uow)
    async with store.factory().looking_up() as uow:
        looked_up = await lookups(uow)
        assert await uow.payments.get("pay_2", sub_mch_id=SUB1) is None  # another sub-merchant's
        assert await uow.payments.get("pay_nope") is None
        assert await uow.refunds.get("re_1", sub_mch_id=SUB2) is None
    assert looked_up == read
    found = looked_up[0]
    assert found == paid
    assert found is not None
    assert found.created_at.utcoffset() == timedelta(0)
    assert found.metadata == {"order": "A-1", "ünï": "cödé"}


async def test_a_unit_of_work_of_lookups_sees_each_commit_at_once_and_never_waits_for_the_writer(store: Store) -> None:
    await add(store, payment(1))
    async with store.factory() as writer:  # holds the write lock (SQLite) / its row lock (PostgreSQL)
        current = await writer.payments.get("pay_1", for_update=True)
        assert current is not None
        current.status = PaymentStatus.CLOSED
        await writer.payments.save(current)
        async with store.factory().looking_up() as uow:  # not blocked; sees the last commit only
            before = await uow.payments.get("pay_1")
        await writer.commit()
    assert before is not None
    assert before.status is PaymentStatus.CREATED
    async with store.factory().looking_up() as uow:
        after = await uow.payments.get("pay_1")
    assert after is not None
    assert after.status is PaymentStatus.CLOSED


@pytest.fixture(params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def lookup_url(
    request: pytest.FixtureRequest, tmp_path: Path, _pg_session: dict[str, str], _sqlite_template: dict[str, Path]
) -> str:
    """A migrated SQLite file, an in-memory SQLite database (migrated by the test) or PostgreSQL."""
    if request.param == "sqlite":
        return await fresh_sqlite_url(_sqlite_template, tmp_path / "minipay.db")
    if request.param == "memory":
        return "sqlite+aiosqlite:///:memory:"
    return await fresh_pg_url(_pg_session)


@pytest.fixture
async def sqlite_url(tmp_path: Path, _sqlite_template: dict[str, Path]) -> str:
    return await fresh_sqlite_url(_sqlite_template, tmp_path / "minipay.db")


async def test_a_unit_of_work_of_lookups_holds_no_connection(lookup_url: str) -> None:
    in_memory = lookup_url.endswith(":memory:")
    engine = db.create_engine(lookup_url)
    try:
        if in_memory:
            from minipay.server.migrations import upgrade

            await upgrade(engine)
        store = Store("lookups", lambda: UnitOfWork(engine), engine=engine)
        await add(store, payment(1))
        pool = db.reader_engine(engine).sync_engine.pool
        async with UnitOfWork(engine).looking_up() as uow:
            assert pool.checkedout() == 0  # type: ignore[attr-defined]
            with pytest.raises(RuntimeError, match="holds no connection"):
                await uow.payments.search(sub_mch_id=None)
            with pytest.raises(RuntimeError, match="nothing to commit"):
                await uow.commit()
            await uow.rollback()  # nothing to roll back: no error
            found = await uow.payments.get("pay_1")
            assert found is not None
            assert found.id == "pay_1"
            assert pool.checkedout() == 0  # type: ignore[attr-defined]
        assert (await get(store, "pay_1")) == found
    finally:
        await engine.dispose()


async def test_lookups_on_sqlite_cannot_write_and_their_errors_are_sqlalchemys(sqlite_url: str) -> None:
    import sqlite3

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from minipay.server.repositories._pg import PgStatement

    engine = db.create_engine(sqlite_url)
    try:
        assert isinstance(engine, db.SQLiteEngine)
        connection = engine.lookup_connection()
        assert connection is not None
        assert connection is engine.lookup_connection()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("DELETE FROM payments")
        missing = PgStatement(select(db.payments).where(text("no_such_column = 1")))
        async with UnitOfWork(engine).looking_up() as uow:
            with pytest.raises(OperationalError) as raised:
                await uow.lookup(missing, {})
        assert isinstance(raised.value.orig, sqlite3.OperationalError)
    finally:
        await engine.dispose()
    assert engine.lookups is not None
    assert engine.lookups._connection is None
