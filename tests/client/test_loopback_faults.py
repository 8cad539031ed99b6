"""Real sockets: the configured read timeout and a dropped TCP connection, against a loopback sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from minipay.client import AsyncClient, Client, ConnectError, ReadTimeoutError
from minipay.sandbox import create_app, running
from tests.profiles import LENIENT

NOTIFY_URL = "https://merchant.example.com/wxpay/notify"
SETTINGS: dict[str, Any] = {
    "appid": "wx8888888888888888",
    "mch_id": "1900000109",
    "api_key": "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
    "sub_mch_id": "1900000110",
    "sub_appid": "wx1234567890abcdef",
}


@pytest.fixture
def sandbox() -> Iterator[str]:
    with running(create_app(LENIENT, seed=11)) as server:
        yield server.base_url


def _order(client: Client, control: httpx2.Client, out_trade_no: str) -> dict[str, Any]:
    code = control.post("/sandbox/login", json={"appid": SETTINGS["sub_appid"], "user": "net"}).json()["code"]
    openid = client.code_to_session(SETTINGS["sub_appid"], "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c", code).openid
    return {
        "out_trade_no": out_trade_no,
        "total_fee": 1000,
        "fee_type": "HKD",
        "body": "Coffee",
        "notify_url": NOTIFY_URL,
        "spbill_create_ip": "203.0.113.10",
        "sub_openid": openid,
    }


def test_a_slow_answer_to_a_create_hits_the_read_timeout_and_is_not_resent(sandbox: str) -> None:
    sleeps: list[float] = []
    with (
        httpx2.Client(base_url=sandbox) as control,
        Client(**SETTINGS, base_url=sandbox, login_base_url=sandbox, read_timeout=0.1, sleep=sleeps.append) as client,
    ):
        order = _order(client, control, "SLOW0001")
        control.post("/sandbox/faults", json={"endpoint": "unifiedorder", "fault": "delay", "delay": 0.4})
        with pytest.raises(ReadTimeoutError) as caught:
            client.orders.create(**order)
        assert caught.value.outcome_unknown is True
        assert sleeps == []  # not resent by the SDK
        # The documented recovery: the caller re-runs create with the *same* arguments.
        again = client.orders.create(**order)
        assert client.orders.query(out_trade_no="SLOW0001").trade_state == "NOTPAY"
        assert again.prepay_id


def test_a_dropped_connection_on_create_is_unknown_and_on_query_is_retried(sandbox: str) -> None:
    with (
        httpx2.Client(base_url=sandbox) as control,
        Client(**SETTINGS, base_url=sandbox, login_base_url=sandbox, sleep=lambda _: None) as client,
    ):
        order = _order(client, control, "DROP0001")
        control.post("/sandbox/faults", json={"endpoint": "unifiedorder", "fault": "lost_response"})
        with pytest.raises(ReadTimeoutError):
            client.orders.create(**order)
        control.post("/sandbox/faults", json={"endpoint": "orderquery", "fault": "drop"})
        assert client.orders.query(out_trade_no="DROP0001").trade_state == "NOTPAY"


@pytest.mark.anyio
async def test_the_async_client_fails_over_from_a_dead_port_to_the_live_sandbox(sandbox: str) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    async with AsyncClient(**SETTINGS, base_url=dead, failover=[sandbox], connect_timeout=1.0) as client:
        result = await client.rates.query(fee_type="HKD", date=__import__("datetime").date(2024, 1, 1))
        assert result.rate > 0
    async with AsyncClient(**SETTINGS, base_url=dead, max_retries=0, connect_timeout=1.0) as lonely:
        with pytest.raises(ConnectError):
            await lonely.orders.query(out_trade_no="X")
