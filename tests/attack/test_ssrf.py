"""SSRF: a sub-merchant key must not aim webhook deliveries at internal addresses, in any spelling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.server.conftest import SUB1, SUB2, World, make_world

pytestmark = pytest.mark.anyio

INTERNAL_SPELLINGS = [
    "http://127.0.0.1:18111/h",
    "http://2130706433:18111/h",  # decimal
    "http://0x7f000001:18111/h",  # hex
    "http://127.1:18111/h",  # short form
    "http://017700000001:18111/h",  # octal
    "http://0:18111/h",  # 0.0.0.0 reaches the local host
    "http://0x7f.0.0.1:18111/h",
    "http://127.0.0.1.:18111/h",  # trailing dot
    "http://[::1]:18111/h",
    "http://[::ffff:127.0.0.1]:18111/h",  # IPv4-mapped
    "http://[::ffff:7f00:1]:18111/h",
    "http://[64:ff9b::7f00:1]:18111/h",  # NAT64
    "http://[2002:7f00:1::]:18111/h",  # 6to4
    "http://[::]:18111/h",
    "http://[fe80::1]:18111/h",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://2852039166/latest/meta-data/",  # the same, decimal
    "http://10.0.0.1/h",
    "http://192.168.1.1/h",
    "http://100.64.0.1/h",  # shared address space
    "http://224.0.0.1/h",  # multicast
    "http://localhost:18111/h",
    "http://api.localhost/h",
    "http://user@127.0.0.1/h",
]


@pytest.fixture
async def strict_world(database_url: str) -> AsyncIterator[World]:
    async with make_world(database_url, allow_private_webhook_urls=False, max_webhook_endpoints=3) as w:
        yield w


@pytest.mark.parametrize("url", INTERNAL_SPELLINGS)
async def test_every_spelling_of_an_internal_address_is_refused_at_registration(strict_world: World, url: str) -> None:
    # Finding 1: only the dotted 127.0.0.1 was refused; 2130706433, 0x7f000001, 127.1 ... were delivered.
    response = await strict_world.api.post("/v1/webhook-endpoints", json={"url": url}, headers=strict_world.auth())
    assert response.status_code == 400, (url, response.text)
    assert response.json()["error"]["code"] == "invalid_field"


async def test_a_public_address_in_another_spelling_is_stored_in_its_canonical_form(strict_world: World) -> None:
    response = await strict_world.api.post(
        "/v1/webhook-endpoints", json={"url": "http://134744072:8080/h?x=1"}, headers=strict_world.auth()
    )
    assert response.status_code == 201, response.text
    assert response.json()["url"] == "http://8.8.8.8:8080/h?x=1"


async def test_webhook_endpoints_are_capped_per_key(strict_world: World) -> None:
    # One key made 116 endpoints in the attack run.
    for n in range(3):
        ok = await strict_world.api.post(
            "/v1/webhook-endpoints", json={"url": f"https://hooks.example/{n}"}, headers=strict_world.auth()
        )
        assert ok.status_code == 201
    over = await strict_world.api.post(
        "/v1/webhook-endpoints", json={"url": "https://hooks.example/4"}, headers=strict_world.auth()
    )
    assert over.status_code == 409
    assert over.json()["error"]["code"] == "endpoint_limit_reached"
    # Another key has its own allowance; deleting one frees a place.
    other = await strict_world.api.post(
        "/v1/webhook-endpoints", json={"url": "https://hooks.example/x"}, headers=strict_world.auth(SUB2)
    )
    assert other.status_code == 201
    first = (await strict_world.api.get("/v1/webhook-endpoints", headers=strict_world.auth())).json()["data"][0]
    assert (
        await strict_world.api.delete(f"/v1/webhook-endpoints/{first['id']}", headers=strict_world.auth())
    ).is_success
    again = await strict_world.api.post(
        "/v1/webhook-endpoints", json={"url": "https://hooks.example/5"}, headers=strict_world.auth()
    )
    assert again.status_code == 201


async def test_the_endpoint_cap_holds_under_concurrent_requests(strict_world: World) -> None:
    async def register(n: int) -> httpx2.Response:
        return await strict_world.api.post(
            "/v1/webhook-endpoints", json={"url": f"https://hooks.example/{n}"}, headers=strict_world.auth(SUB1)
        )

    responses = await asyncio.gather(*(register(n) for n in range(12)))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * 9
    listed = (await strict_world.api.get("/v1/webhook-endpoints", headers=strict_world.auth())).json()["data"]
    assert len(listed) == 3
