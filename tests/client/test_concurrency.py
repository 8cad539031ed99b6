"""One client, many threads or tasks: no shared mutable state between calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx2
import pytest

from minipay.client import AsyncClient, Client
from minipay.sandbox import create_app
from tests.client.conftest import APPID, KEY, MCH_ID, ORDER, SUB_APPID, SUB_MCH_ID, FakeWeChat
from tests.profiles import LENIENT


def test_one_sync_client_serves_many_threads(fake: FakeWeChat) -> None:
    with Client(
        appid=APPID,
        mch_id=MCH_ID,
        api_key=KEY,
        sub_mch_id=SUB_MCH_ID,
        sub_appid=SUB_APPID,
        transport=httpx2.MockTransport(fake),
    ) as client:

        def create(n: int) -> str:
            return client.orders.create(**(ORDER | {"out_trade_no": f"THREAD{n:04d}"})).prepay_id

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(create, range(40)))
    assert len(results) == 40
    sent = sorted(body["out_trade_no"] for body in fake.bodies)
    assert sent == [f"THREAD{n:04d}" for n in range(40)]
    assert len({body["nonce_str"] for body in fake.bodies}) == 40


@pytest.mark.anyio
async def test_one_async_client_serves_many_tasks_against_the_sandbox() -> None:
    app = create_app(LENIENT, seed=21)
    transport = httpx2.ASGITransport(app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url="http://sandbox") as control,
        AsyncClient(
            appid=APPID,
            mch_id=MCH_ID,
            api_key=KEY,
            sub_mch_id=SUB_MCH_ID,
            sub_appid=SUB_APPID,
            base_url="http://sandbox",
            login_base_url="http://sandbox",
            transport=transport,
        ) as client,
    ):
        code = (await control.post("/sandbox/login", json={"appid": SUB_APPID, "user": "crowd"})).json()["code"]
        openid = (await client.code_to_session(SUB_APPID, "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c", code)).openid
        prepay_ids: dict[str, str] = {}

        async def create(n: int) -> None:
            out_trade_no = f"TASK{n:04d}"
            order = await client.orders.create(**(ORDER | {"out_trade_no": out_trade_no, "sub_openid": openid}))
            prepay_ids[out_trade_no] = order.prepay_id

        async with anyio.create_task_group() as group:
            for n in range(25):
                group.start_soon(create, n)
        assert len(set(prepay_ids.values())) == 25
        states = [(await client.orders.query(out_trade_no=key)).out_trade_no for key in sorted(prepay_ids)]
        assert states == sorted(prepay_ids)
