"""SSRF: a sub-merchant key must not aim webhook deliveries at internal addresses, in any spelling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from minipay.server.adapters import HttpWebhookSender
from minipay.server.webhooks import InternalAddressRefused, Resolver, deliver_webhooks
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


# -- at delivery: the host is resolved on every attempt and the checked address is the one connected to --


class Recorder:
    """A transport that answers ``status`` (with ``location``) and records every request it gets."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.status = status
        self.location = location

    def transport(self) -> httpx2.MockTransport:
        def handle(request: httpx2.Request) -> httpx2.Response:
            self.requests.append(request)
            headers = {"Location": self.location} if self.location else {}
            return httpx2.Response(self.status, headers=headers)

        return httpx2.MockTransport(handle)


def dns(table: dict[str, list[list[str]]]) -> tuple[Resolver, list[str]]:
    """A resolver answering each name's next answer in turn (the last one again when they run out)."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        answers = table[host]
        return answers[min(asked.count(host), len(answers)) - 1]

    return resolve, asked


HOOK = {"Content-Type": "application/json"}


async def test_a_name_that_rebinds_to_loopback_after_registration_is_refused_at_delivery() -> None:
    # Finding 1: registration sees a public address; the delivery must check again, on every attempt.
    resolver, asked = dns({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    recorder = Recorder()
    sender = HttpWebhookSender(resolver=resolver, transport=recorder.transport())
    assert await sender.send("https://rebind.example:8443/h?x=1", b"{}", HOOK) == 200
    with pytest.raises(InternalAddressRefused):
        await sender.send("https://rebind.example:8443/h?x=1", b"{}", HOOK)
    assert asked == ["rebind.example", "rebind.example"]
    assert len(recorder.requests) == 1
    # The first attempt connected to the address it checked; the name stayed in Host and in the SNI.
    sent = recorder.requests[0]
    assert (sent.url.host, sent.url.port, sent.url.raw_path) == ("93.184.216.34", 8443, b"/h?x=1")
    assert sent.headers["Host"] == "rebind.example:8443"
    assert sent.extensions["sni_hostname"] == "rebind.example"


@pytest.mark.parametrize(
    "answer",
    [
        ["93.184.216.34", "10.0.0.7"],  # one private record among public ones
        ["::ffff:127.0.0.1"],
        ["fe80::1%eth0"],
        ["169.254.169.254"],
        ["0.0.0.0"],
        [],
    ],
)
async def test_a_name_resolving_to_any_internal_address_is_never_connected_to(answer: list[str]) -> None:
    resolver, _ = dns({"hooks.example": [answer]})
    recorder = Recorder()
    sender = HttpWebhookSender(resolver=resolver, transport=recorder.transport())
    with pytest.raises(InternalAddressRefused):
        await sender.send("http://hooks.example/h", b"{}", HOOK)
    assert recorder.requests == []


@pytest.mark.parametrize("url", [u for u in INTERNAL_SPELLINGS if "@" not in u])
async def test_stored_internal_urls_are_refused_at_delivery_in_every_spelling(url: str) -> None:
    # A row written before the registration check existed (or by hand) is caught when sending.
    resolver, _ = dns({"localhost": [["127.0.0.1"]], "api.localhost": [["127.0.0.1"]]})
    recorder = Recorder()
    sender = HttpWebhookSender(resolver=resolver, transport=recorder.transport())
    with pytest.raises(InternalAddressRefused):
        await sender.send(url, b"{}", HOOK)
    assert recorder.requests == []


async def test_redirects_are_not_followed() -> None:
    resolver, _ = dns({"hooks.example": [["93.184.216.34"]]})
    recorder = Recorder(status=302, location="http://127.0.0.1:18111/internal")
    sender = HttpWebhookSender(resolver=resolver, transport=recorder.transport())
    assert await sender.send("http://hooks.example/h", b"{}", HOOK) == 302
    assert [r.url.host for r in recorder.requests] == ["93.184.216.34"]


async def test_a_refused_delivery_is_a_failed_attempt_without_a_port_scan_answer(strict_world: World) -> None:
    world = strict_world
    created = await world.api.post(
        "/v1/webhook-endpoints", json={"url": "http://rebind.example:18111/hooks"}, headers=world.auth()
    )
    assert created.status_code == 201, created.text
    paid = await world.pay(await world.create_payment())
    assert paid
    resolver, _ = dns({"rebind.example": [["127.0.0.1"]]})
    recorder = Recorder()
    sender = HttpWebhookSender(resolver=resolver, transport=recorder.transport())
    assert await deliver_webhooks(world.container.uow_factory, sender, world.clock) == 1
    assert recorder.requests == []
    event_id = (await world.api.get("/v1/events", headers=world.auth())).json()["data"][0]["id"]
    deliveries = (await world.api.get(f"/v1/events/{event_id}", headers=world.auth())).json()["deliveries"]
    (attempt,) = deliveries[0]["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("InternalAddressRefused")
