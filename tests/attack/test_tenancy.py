"""Tenant isolation: one sub-merchant's key learns nothing of another's objects or order numbers."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from minipay.server.webhooks import deliver_webhooks
from tests.server.conftest import SUB1, SUB2, World

pytestmark = pytest.mark.anyio


def error(response: httpx2.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_out_trade_no_is_scoped_per_sub_merchant(world: World) -> None:
    # Finding 3: key B's order number used to give key A a 409, revealing (and letting A squat) it.
    theirs = await world.create_payment(SUB2, currency="JPY", out_trade_no="SHOP-0001")
    mine = await world.create_payment(SUB1, out_trade_no="SHOP-0001")
    assert mine["out_trade_no"] == theirs["out_trade_no"] == "SHOP-0001"
    assert mine["id"] != theirs["id"]
    assert mine["status"] == "pending"
    # Within one sub-merchant the number is still unique.
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": "o", "out_trade_no": "SHOP-0001"}
    assert error(await world.api.post("/v1/payments", json=body, headers=world.auth(SUB1))) == (
        409,
        "out_trade_no_used",
    )
    # Both are paid and each notification reaches its own payment.
    await world.pay(mine)
    assert (await world.get(mine["id"]))["status"] == "succeeded"
    assert (await world.get(theirs["id"], SUB2))["status"] == "pending"
    await world.pay(theirs)
    assert (await world.get(theirs["id"], SUB2))["status"] == "succeeded"
    listed = await world.api.get("/v1/payments", params={"out_trade_no": "SHOP-0001"}, headers=world.auth(SUB1))
    assert [p["id"] for p in listed.json()["data"]] == [mine["id"]]


async def _admin_endpoint(world: World) -> str:
    response = await world.api.post(
        "/v1/webhook-endpoints", json={"url": "http://merchant.test/hooks"}, headers=world.auth("admin")
    )
    assert response.status_code == 201, response.text
    endpoint_id: str = response.json()["id"]
    return endpoint_id


async def test_a_sub_merchant_sees_only_deliveries_to_its_own_endpoints(world: World) -> None:
    # Finding 7: GET /v1/events/{id} with a sub-merchant key listed the admin's deliveries too.
    admin_endpoint = await _admin_endpoint(world)
    own = await world.api.post(
        "/v1/webhook-endpoints", json={"url": "http://merchant.test/hooks"}, headers=world.auth(SUB1)
    )
    own_endpoint = own.json()["id"]
    payment = await world.create_payment()
    await world.pay(payment)
    await deliver_webhooks(world.container.uow_factory, world.container.webhook_sender, world.clock)
    events = (await world.api.get("/v1/events", headers=world.auth(SUB1))).json()["data"]
    event_id = events[0]["id"]
    as_sub = (await world.api.get(f"/v1/events/{event_id}", headers=world.auth(SUB1))).json()
    assert [d["endpoint_id"] for d in as_sub["deliveries"]] == [own_endpoint]
    as_admin = (await world.api.get(f"/v1/events/{event_id}", headers=world.auth("admin"))).json()
    assert {d["endpoint_id"] for d in as_admin["deliveries"]} == {own_endpoint, admin_endpoint}


async def test_no_object_of_one_sub_merchant_is_readable_with_another_ones_key(world: World) -> None:
    """Every kind: payment, its refunds, a refund, pay-params, close, events, event, endpoints."""
    hook = await world.api.post(
        "/v1/webhook-endpoints", json={"url": "http://merchant.test/hooks"}, headers=world.auth(SUB1)
    )
    payment = await world.create_payment()
    await world.pay(payment)
    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds",
        json={"amount": 100},
        headers={**world.auth(SUB1), "Idempotency-Key": "r-1"},
    )
    assert refund.status_code == 201, refund.text
    events = (await world.api.get("/v1/events", headers=world.auth(SUB1))).json()["data"]
    assert events
    other = world.auth(SUB2)
    reads: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/v1/payments/{payment['id']}", None),
        ("GET", f"/v1/payments/{payment['id']}?sync=true", None),
        ("GET", f"/v1/payments/{payment['id']}/refunds", None),
        ("GET", f"/v1/refunds/{refund.json()['id']}", None),
        ("POST", f"/v1/payments/{payment['id']}/pay-params", None),
        ("POST", f"/v1/payments/{payment['id']}/close", None),
        ("POST", f"/v1/payments/{payment['id']}/refunds", {"amount": 1}),
        ("DELETE", f"/v1/webhook-endpoints/{hook.json()['id']}", None),
        *[("GET", f"/v1/events/{e['id']}", None) for e in events],
    ]
    for method, path, body in reads:
        headers = {**other, "Idempotency-Key": "x-1"}
        response = await world.api.request(method, path, json=body, headers=headers)
        assert error(response) == (404, "not_found"), (method, path, response.text)
    for path in ("/v1/events", f"/v1/events?payment_id={payment['id']}", "/v1/webhook-endpoints"):
        assert (await world.api.get(path, headers=other)).json()["data"] == [], path
    listed = await world.api.get("/v1/payments", params={"out_trade_no": payment["out_trade_no"]}, headers=other)
    assert listed.json()["data"] == []
