"""Two real service processes on one database (PostgreSQL, and a shared SQLite file): a notification
delivered 50 times concurrently to both is applied exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import func, select

from minipay.protocol import decode_xml
from minipay.serve import free_ports
from minipay.server import db
from tests.server.conftest import KEYS, SUB1, make_world
from tests.server.test_notifications import SUCCESS_XML, notification

pytestmark = pytest.mark.anyio


def write_config(path: Path, database_url: str) -> None:
    path.write_text(
        f"""
database_url = "{database_url}"
public_base_url = "http://127.0.0.1:9"
admin_api_keys = ["{KEYS["admin"]}"]
webhook_dispatch = false

[[institutions]]
name = "sandbox"
appid = "wx8888888888888888"
mch_id = "1900000109"
api_key = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
base_url = "http://127.0.0.1:9"
login_base_url = "http://127.0.0.1:9"

[[sub_merchants]]
institution = "sandbox"
sub_mch_id = "{SUB1}"
sub_appid = "wx1234567890abcdef"
app_secret = "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c"
currency = "HKD"
api_keys = ["{KEYS[SUB1]}"]
"""
    )


@pytest.fixture
def replica_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def replicas(tmp_path: Path, replica_db: str) -> Iterator[list[str]]:
    config = tmp_path / "minipay.toml"
    write_config(config, replica_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")} | {"MINIPAY_CONFIG": str(config)}
    ports = free_ports(2)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "minipay.server.asgi:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 120  # two interpreters starting on a loaded 2-core CI box
        for url, proc in zip(urls, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"replica died: {proc.stderr.read().decode() if proc.stderr else ''}")
                try:
                    if httpx2.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("replica did not become ready")
                time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


@pytest.mark.parametrize("replica_db", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"], indirect=True)
async def test_same_notification_fifty_times_to_two_processes_is_applied_once(
    replica_db: str, replicas: list[str]
) -> None:
    async with make_world(replica_db) as world:  # creates the payment through the sandbox, same database
        payment = await world.create_payment()
        engine = world.container.engine
        body = notification(payment)
        async with httpx2.AsyncClient(timeout=30) as http:

            async def deliver(n: int) -> httpx2.Response:
                return await http.post(f"{replicas[n % 2]}/wechatpay/notify/payment", content=body)

            replies = await asyncio.gather(*(deliver(n) for n in range(50)))
        assert [r.status_code for r in replies] == [200] * 50
        assert all(r.content == SUCCESS_XML for r in replies), {decode_xml(r.content)["return_msg"] for r in replies}
        async with engine.connect() as conn:
            transitions = await conn.execute(
                select(func.count())
                .select_from(db.payment_events)
                .where(db.payment_events.c.payment_id == payment["id"], db.payment_events.c.type == "succeeded")
            )
            outbox = await conn.execute(
                select(func.count())
                .select_from(db.outbox_events)
                .where(db.outbox_events.c.payment_id == payment["id"], db.outbox_events.c.type == "payment.succeeded")
            )
            received = await conn.execute(
                select(func.count())
                .select_from(db.payment_events)
                .where(db.payment_events.c.payment_id == payment["id"], db.payment_events.c.source == "notification")
            )
            assert transitions.scalar_one() == 1
            assert outbox.scalar_one() == 1
            # The transition (its "succeeded" event) and every delivery that went through a write
            # transaction are logged; one arriving after the payment was applied is answered from a
            # read and leaves no row.
            assert 2 <= received.scalar_one() <= 51
        assert (await world.get(payment["id"]))["status"] == "succeeded"
