"""The published OpenAPI schema against the service's behaviour (finding 9): 400 not 422, the error
model, every status a route answers, the replay 200, the constraints, and 405 with Allow."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import SUB1, SUB2, World

pytestmark = pytest.mark.anyio

METHODS = {"get", "post", "put", "patch", "delete"}


async def published(world: World) -> dict[str, Any]:
    response = await world.api.get("/openapi.json")
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in schema["paths"].items() for method, op in item.items() if method in METHODS
    ]


def declared(schema: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(code) for code in schema["paths"][path][method]["responses"]}


async def test_the_schema_declares_400_with_the_error_model_never_422(world: World) -> None:
    schema = await published(world)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, method, op in operations(schema):
        assert "422" not in op["responses"], (method, path)
        for code, answer in op["responses"].items():
            if int(code) >= 400 and path != "/readyz":  # /readyz answers its checks, 200 or 503
                assert answer["content"]["application/json"]["schema"] == error, (method, path, code)
        if path.startswith("/v1/"):
            assert op["security"] == [{"bearer": []}], (method, path)
            assert {401, 503} <= declared(schema, method, path), (method, path)
            names = [p["name"].lower() for p in op.get("parameters", [])]
            assert "authorization" not in names
            if names or "requestBody" in op:
                assert 400 in declared(schema, method, path), (method, path)


async def test_every_operation_without_a_key_answers_a_declared_401(world: World) -> None:
    schema = await published(world)
    for path, method, op in operations(schema):
        if "security" not in op:
            continue
        url = path.replace("{payment_id}", "pay_x").replace("{refund_id}", "re_x")
        url = url.replace("{endpoint_id}", "we_x").replace("{event_id}", "ev_x")
        response = await world.api.request(method.upper(), url, json={} if "requestBody" in op else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


async def test_the_statuses_the_service_answers_are_the_declared_ones(world: World) -> None:
    schema = await published(world)
    seen: list[tuple[str, str, int]] = []

    async def call(method: str, template: str, url: str, who: str = SUB1, **kwargs: Any) -> Any:
        headers = {**world.auth(who), **kwargs.pop("headers", {})}
        response = await world.api.request(method.upper(), url, headers=headers, **kwargs)
        seen.append((method, template, response.status_code))
        assert response.status_code in declared(schema, method, template), (method, url, response.status_code)
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"code", "message", "request_id"}
        return response

    payment = await world.create_payment(out_trade_no="ORDER-1")
    pid = payment["id"]
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": payment["openid"]}
    await call("post", "/v1/payments", "/v1/payments", json={**body, "amount": 0})  # 400
    await call("post", "/v1/payments", "/v1/payments", json={**body, "out_trade_no": "ORDER-1"})  # 409
    first = await call("post", "/v1/payments", "/v1/payments", json=body, headers={"Idempotency-Key": "k1"})
    again = await call("post", "/v1/payments", "/v1/payments", json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)  # the replay 200
    await call("post", "/v1/payments", "/v1/payments", json={**body, "amount": 5}, headers={"Idempotency-Key": "k1"})
    await call("get", "/v1/payments/{payment_id}", f"/v1/payments/{pid}", who=SUB2)  # 404 for another key
    await call("get", "/v1/payments", "/v1/payments?status=bogus")  # 400
    await call("get", "/v1/payments", "/v1/payments?created_gte=yesterday")  # 400
    await call("post", "/v1/payments/{payment_id}/refunds", f"/v1/payments/{pid}/refunds", json={"amount": 1})
    refund_body = {"amount": 100}
    await world.pay(payment)
    url = f"/v1/payments/{pid}/refunds"
    made = await call(
        "post", "/v1/payments/{payment_id}/refunds", url, json=refund_body, headers={"Idempotency-Key": "r"}
    )
    repeat = await call(
        "post", "/v1/payments/{payment_id}/refunds", url, json=refund_body, headers={"Idempotency-Key": "r"}
    )
    assert (made.status_code, repeat.status_code) == (201, 200)
    await call("post", "/v1/payments/{payment_id}/close", f"/v1/payments/{pid}/close")  # 409: paid
    await call("post", "/v1/webhook-endpoints", "/v1/webhook-endpoints", json={"url": "ftp://x"})  # 400
    await call("delete", "/v1/webhook-endpoints/{endpoint_id}", "/v1/webhook-endpoints/we_none")  # 404
    await call("get", "/v1/events/{event_id}", "/v1/events/ev_none")  # 404
    await call("get", "/v1/events", "/v1/events?limit=0")  # 400
    assert {status for *_, status in seen} >= {200, 201, 400, 404, 409}


async def test_405_allows_exactly_the_methods_the_schema_lists(world: World) -> None:
    schema = await published(world)
    for path, item in schema["paths"].items():
        methods = {m.upper() for m in item if m in METHODS}
        unused = next(m for m in ("PUT", "PATCH", "DELETE", "POST") if m not in methods)
        url = path.replace("{", "").replace("}", "")
        response = await world.api.request(unused, url, headers=world.auth())
        assert response.status_code == 405, (unused, path)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == methods, path


async def test_the_constraints_are_published(world: World) -> None:
    schema = await published(world)
    components = schema["components"]["schemas"]
    payment_in = components["PaymentIn"]["properties"]
    assert payment_in["amount"]["minimum"] == 1
    assert payment_in["currency"]["pattern"] == "^[A-Z]{3}$"
    assert components["RefundIn"]["properties"]["amount"]["minimum"] == 1
    assert set(components["PaymentOut"]["properties"]["status"]["enum"]) == {
        "created",
        "pending",
        "succeeded",
        "closed",
        "partially_refunded",
        "refunded",
    }
    assert components["PaymentOut"]["properties"]["created_at"]["format"] == "date-time"
    listing = {p["name"]: p for p in schema["paths"]["/v1/payments"]["get"]["parameters"]}
    assert "succeeded" in str(listing["status"]["schema"])
    assert "date-time" in str(listing["created_gte"]["schema"])
    # ... and the service holds them (400, the error model).
    openid = await world.login()
    for bad in ({"amount": 0}, {"amount": -5}, {"currency": "hkd"}, {"expires_in": 59}):
        body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid, **bad}
        response = await world.api.post("/v1/payments", json=body, headers=world.auth())
        assert response.status_code == 400, (bad, response.text)
