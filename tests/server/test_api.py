"""The HTTP API: every error path, key scoping between sub-merchants, idempotency, refunds, close."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import select

from minipay.server import adapters, db
from minipay.server.api import create_app
from minipay.server.routes.early import EarlyRoutes
from minipay.server.routes.payments import PaymentCreate, PaymentRead
from minipay.server.uow import ConcurrentUpdate
from tests.server.conftest import KEYS, SUB1, SUB2, World, build_settings, on_the_fake

pytestmark = pytest.mark.anyio


def error(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "request_id"}, body
    assert body["error"]["request_id"] == response.headers["x-request-id"], body  # the id a report can quote
    return response.status_code, body["error"]["code"]


async def paid_payment(world: World, amount: int = 1000) -> dict[str, Any]:
    payment = await world.create_payment(amount=amount)
    await world.pay(payment)
    return await world.get(payment["id"])


# -- auth and scoping ---------------------------------------------------------------------------------


@on_the_fake
async def test_requests_without_or_with_a_wrong_key_get_401(world: World) -> None:
    assert error(await world.api.get("/v1/payments")) == (401, "unauthorized")
    assert error(await world.api.get("/v1/payments", headers={"Authorization": "Bearer nope"})) == (401, "unauthorized")
    assert error(await world.api.get("/v1/payments", headers={"Authorization": KEYS[SUB1]})) == (401, "unauthorized")


@on_the_fake
async def test_a_sub_merchant_key_sees_only_its_own_objects_and_the_admin_key_sees_all(world: World) -> None:
    mine = await paid_payment(world)
    theirs = await world.create_payment(SUB2, amount=500, currency="JPY")
    for path in (f"/v1/payments/{theirs['id']}", f"/v1/payments/{theirs['id']}/refunds"):
        assert error(await world.api.get(path, headers=world.auth(SUB1))) == (404, "not_found")
    for method, path in (("post", "close"), ("post", "pay-params")):
        response = await getattr(world.api, method)(f"/v1/payments/{theirs['id']}/{path}", headers=world.auth(SUB1))
        assert error(response) == (404, "not_found")
    refund = await world.api.post(
        f"/v1/payments/{mine['id']}/refunds", json={"amount": 100}, headers={**world.auth(SUB1), "Idempotency-Key": "k"}
    )
    assert refund.status_code == 201
    assert error(await world.api.get(f"/v1/refunds/{refund.json()['id']}", headers=world.auth(SUB2))) == (
        404,
        "not_found",
    )
    listed = (await world.api.get("/v1/payments", headers=world.auth(SUB1))).json()["data"]
    assert [p["id"] for p in listed] == [mine["id"]]
    everything = (await world.api.get("/v1/payments", headers=world.auth("admin"))).json()["data"]
    assert {p["id"] for p in everything} == {mine["id"], theirs["id"]}
    assert (await world.api.get(f"/v1/refunds/{refund.json()['id']}", headers=world.auth("admin"))).status_code == 200
    # A sub-merchant key cannot act for another sub-merchant by naming it.
    body = {"amount": 1, "currency": "JPY", "description": "x", "openid": "o", "sub_mch_id": SUB2}
    assert error(await world.api.post("/v1/payments", json=body, headers=world.auth(SUB1))) == (404, "not_found")
    hook = {"url": "https://a.example/h", "sub_mch_id": SUB2}
    assert error(await world.api.post("/v1/webhook-endpoints", json=hook, headers=world.auth(SUB1))) == (
        404,
        "not_found",
    )
    # Events: another sub-merchant's payment is not visible, even by naming it.
    theirs_events = await world.api.get("/v1/events", params={"payment_id": mine["id"]}, headers=world.auth(SUB2))
    assert theirs_events.json()["data"] == []
    own_events = await world.api.get("/v1/events", params={"payment_id": mine["id"]}, headers=world.auth(SUB1))
    assert [e["type"] for e in own_events.json()["data"]] == ["payment.succeeded"]


@on_the_fake
async def test_webhook_endpoints_are_scoped_and_deletable(world: World) -> None:
    created = await world.api.post(
        "/v1/webhook-endpoints", json={"url": "https://a.example/h"}, headers=world.auth(SUB1)
    )
    assert created.status_code == 201
    assert created.json()["secret"].startswith("whsec_")
    assert (await world.api.get("/v1/webhook-endpoints", headers=world.auth(SUB2))).json()["data"] == []
    listed = (await world.api.get("/v1/webhook-endpoints", headers=world.auth(SUB1))).json()["data"]
    assert [e["id"] for e in listed] == [created.json()["id"]]
    assert "secret" not in listed[0]
    gone = await world.api.delete(f"/v1/webhook-endpoints/{created.json()['id']}", headers=world.auth(SUB2))
    assert error(gone) == (404, "not_found")
    assert (
        await world.api.delete(f"/v1/webhook-endpoints/{created.json()['id']}", headers=world.auth(SUB1))
    ).status_code == 200
    assert (await world.api.get("/v1/webhook-endpoints", headers=world.auth(SUB1))).json()["data"] == []
    for url in ("ftp://x", "https://a.example/\u0000", "https://a.example/a b", "https://\u00e9.example/"):
        bad = await world.api.post("/v1/webhook-endpoints", json={"url": url}, headers=world.auth(SUB1))
        assert error(bad) == (400, "invalid_field"), url


INTERNAL_WEBHOOK_URLS = (
    "http://localhost/h",
    "http://api.localhost./h",
    "http://127.0.0.1:8080/h",
    "http://10.0.0.5/h",
    "http://192.168.1.1/h",
    "http://172.16.0.1/h",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/h",
    "http://[::ffff:127.0.0.1]/h",
    "http://[fd00::1]/h",
    "http://0.0.0.0/h",
)


@on_the_fake
async def test_a_sub_merchant_key_cannot_aim_webhooks_at_internal_hosts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test world is sandbox mode (loopback allowed); production settings refuse internal hosts.
    monkeypatch.setattr(world.settings, "allow_private_webhook_urls", False)
    assert world.service.state.container.settings.allow_private_webhook_urls is False
    for url in INTERNAL_WEBHOOK_URLS:
        bad = await world.api.post("/v1/webhook-endpoints", json={"url": url}, headers=world.auth(SUB1))
        assert error(bad) == (400, "invalid_field"), url
    assert (await world.api.get("/v1/webhook-endpoints", headers=world.auth(SUB1))).json()["data"] == []
    public = await world.api.post("/v1/webhook-endpoints", json={"url": "https://8.8.8.8/h"}, headers=world.auth(SUB1))
    assert public.status_code == 201


def test_sandbox_mode_allows_loopback_webhooks() -> None:
    from minipay.sandbox import SandboxConfig
    from minipay.serve import sandbox_settings
    from minipay.server.webhooks._addresses import check_url

    config = SandboxConfig.default()
    keys = {"admin": "adm_" + "0" * 40} | {
        sub.sub_mch_id: f"sk_{n:040d}"
        for n, sub in enumerate(sub for inst in config.institutions for sub in inst.sub_merchants)
    }
    settings = sandbox_settings(
        config,
        sandbox_url="http://127.0.0.1:8001",
        service_url="http://127.0.0.1:8000",
        database_url="sqlite+aiosqlite:///unused.db",
        keys=keys,
    )
    assert settings.allow_private_webhook_urls
    assert check_url("http://127.0.0.1:9000/hooks", allow_private=True) == "http://127.0.0.1:9000/hooks"
    with pytest.raises(ValueError, match="private"):
        check_url("http://127.0.0.1:9000/hooks")


# -- sessions ----------------------------------------------------------------------------------------------


@on_the_fake
async def test_sessions_return_the_openid_and_never_the_session_key(world: World) -> None:
    code = (await world.wx.post("/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "bob"})).json()
    response = await world.api.post("/v1/sessions", json={"code": code["code"]}, headers=world.auth())
    assert response.status_code == 200
    assert response.json()["openid"] == code["openid"]
    assert "session_key" not in response.text
    again = await world.api.post("/v1/sessions", json={"code": code["code"]}, headers=world.auth())
    assert error(again) == (400, "invalid_code")  # single use


@on_the_fake
async def test_session_errors(world: World) -> None:
    assert error(await world.api.post("/v1/sessions", json={"code": "bogus"}, headers=world.auth())) == (
        400,
        "invalid_code",
    )
    assert error(await world.api.post("/v1/sessions", json={}, headers=world.auth())) == (400, "invalid_request")
    admin = await world.api.post("/v1/sessions", json={"code": "x"}, headers=world.auth("admin"))
    assert error(admin) == (400, "sub_appid_required")
    unknown = await world.api.post(
        "/v1/sessions", json={"code": "x", "sub_appid": "wxnope"}, headers=world.auth("admin")
    )
    assert error(unknown) == (404, "not_found")
    code = (await world.wx.post("/sandbox/login", json={"appid": "wx2234567890abcdef", "user": "c"})).json()["code"]
    ok = await world.api.post(
        "/v1/sessions", json={"code": code, "sub_appid": "wx2234567890abcdef"}, headers=world.auth("admin")
    )
    assert ok.status_code == 200
    await world.wx.post("/sandbox/faults", json={"endpoint": "jscode2session", "fault": "-1", "times": 5})
    busy = await world.api.post("/v1/sessions", json={"code": "whatever"}, headers=world.auth())
    assert error(busy) == (503, "login_unavailable")


# -- payments ------------------------------------------------------------------------------------------


# What no database could store (a 64-bit overflow, NUL characters) is refused before it reaches one.
UNSTORABLE_PAYMENTS = [
    ({"amount": 2**63}, "invalid_field"),
    ({"openid": "o\u0000x"}, "invalid_field"),
    ({"metadata": {"k\u0000": "v"}}, "invalid_field"),
    ({"metadata": {"k": "v\u0000"}}, "invalid_field"),
]


async def refused_payment(world: World, change: dict[str, Any], code: str) -> None:
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": "oX"}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    assert error(await world.api.post("/v1/payments", json=body, headers=world.auth())) == (400, code)
    assert await world.snapshot(("payments",)) == {"payments": []}


@on_the_fake
@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"amount": 10.5}, "invalid_request"),
        ({"amount": "1000"}, "invalid_request"),
        ({"amount": 0}, "invalid_field"),
        ({"amount": -5}, "invalid_field"),
        ({"currency": "EUR"}, "invalid_field"),
        ({"currency": "hkd"}, "invalid_field"),
        ({"description": ""}, "invalid_field"),
        ({"description": "x" * 200}, "invalid_field"),
        ({"out_trade_no": "bad no!"}, "invalid_field"),
        ({"client_ip": "not-an-ip"}, "invalid_field"),
        ({"expires_in": 5}, "invalid_field"),
        ({"unexpected": 1}, "invalid_request"),
        ({"openid": None}, "invalid_request"),
        ({"openid": "x" * 129}, "invalid_field"),
        *UNSTORABLE_PAYMENTS,
    ],
)
async def test_invalid_payment_requests_get_400_and_create_nothing(
    world: World, change: dict[str, Any], code: str
) -> None:
    await refused_payment(world, change, code)


async def test_payments_no_database_could_store_get_400_never_a_500(world: World) -> None:
    for change, code in UNSTORABLE_PAYMENTS:
        await refused_payment(world, change, code)


async def test_a_lone_surrogate_in_metadata_gets_400_and_creates_nothing(world: World) -> None:
    body = b'{"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": "oX", "metadata": {"k": "\\ud800"}}'
    response = await world.api.post(
        "/v1/payments", content=body, headers={**world.auth(), "Content-Type": "application/json"}
    )
    assert error(response) == (400, "invalid_field")
    assert await world.snapshot(("payments",)) == {"payments": []}


@on_the_fake
async def test_malformed_json_gets_400(world: World) -> None:
    response = await world.api.post(
        "/v1/payments", content=b"{not json", headers={**world.auth(), "Content-Type": "application/json"}
    )
    assert error(response) == (400, "invalid_request")


@on_the_fake
async def test_unknown_payment_route_and_method(world: World) -> None:
    assert error(await world.api.get("/v1/payments/pay_nope", headers=world.auth())) == (404, "not_found")
    assert error(await world.api.get("/v1/refunds/re_nope", headers=world.auth())) == (404, "not_found")
    assert error(await world.api.get("/v1/nothing", headers=world.auth()))[0] == 404
    assert error(await world.api.put("/v1/payments", headers=world.auth()))[0] == 405


@on_the_fake
async def test_same_idempotency_key_returns_the_same_payment_and_a_different_body_conflicts(world: World) -> None:
    openid = await world.login()
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid}
    headers = {**world.auth(), "Idempotency-Key": "tap-1"}
    first = await world.api.post("/v1/payments", json=body, headers=headers)
    second = await world.api.post("/v1/payments", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["out_trade_no"] == second.json()["out_trade_no"]
    conflict = await world.api.post("/v1/payments", json={**body, "amount": 999}, headers=headers)
    assert error(conflict) == (409, "idempotency_key_reused")
    # Another sub-merchant may use the same key for its own request.
    other = await world.api.post(
        "/v1/payments",
        json={**body, "currency": "JPY", "openid": await world.login(SUB2)},
        headers={**world.auth(SUB2), "Idempotency-Key": "tap-1"},
    )
    assert other.status_code == 201


async def test_double_tap_with_one_idempotency_key_creates_one_order(world: World) -> None:
    openid = await world.login()
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid}
    headers = {**world.auth(), "Idempotency-Key": "double-tap"}
    responses = await asyncio.gather(*(world.api.post("/v1/payments", json=body, headers=headers) for _ in range(5)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["id"] for r in responses}) == 1
    orders = (await world.wx.get("/sandbox/state")).json()["orders"]
    assert len(orders) == 1


@on_the_fake
async def test_reused_out_trade_no_conflicts(world: World) -> None:
    first = await world.create_payment(out_trade_no="ORDER-0001")
    assert first["out_trade_no"] == "ORDER-0001"
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": "o", "out_trade_no": "ORDER-0001"}
    assert error(await world.api.post("/v1/payments", json=body, headers=world.auth())) == (409, "out_trade_no_used")


@on_the_fake
async def test_lost_unified_order_answer_is_resolved_by_query_with_the_same_out_trade_no(world: World) -> None:
    openid = await world.login()
    await world.wx.post("/sandbox/faults", json={"endpoint": "unifiedorder", "fault": "lost_response", "times": 1})
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid}
    headers = {**world.auth(), "Idempotency-Key": "lost-1"}
    first = await world.api.post("/v1/payments", json=body, headers=headers)
    assert error(first) == (503, "upstream_unavailable")
    retry = await world.api.post("/v1/payments", json=body, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "pending"
    assert retry.json()["pay_params"] is not None
    requests = (await world.wx.get("/sandbox/requests", params={"endpoint": "unifiedorder"})).json()["requests"]
    assert {r["fields"]["out_trade_no"] for r in requests} == {retry.json()["out_trade_no"]}
    assert len((await world.wx.get("/sandbox/state")).json()["orders"]) == 1
    queries = (await world.wx.get("/sandbox/requests", params={"endpoint": "orderquery"})).json()["requests"]
    assert len(queries) == 1  # asked WeChat before calling unified order again


@on_the_fake
async def test_systemerror_on_unified_order_is_an_unknown_outcome_503(world: World) -> None:
    openid = await world.login()
    await world.wx.post("/sandbox/faults", json={"endpoint": "unifiedorder", "fault": "SYSTEMERROR", "times": 1})
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid}
    response = await world.api.post("/v1/payments", json=body, headers=world.auth())
    # SYSTEMERROR means "retry with the same parameters": unknown, not refused.
    assert error(response) == (503, "upstream_unavailable")
    payments = (await world.api.get("/v1/payments", headers=world.auth())).json()["data"]
    assert [(p["status"], p["last_error"]) for p in payments] == [("created", "SYSTEMERROR")]


@on_the_fake
async def test_definitive_wechat_refusal_gets_502_and_closes_the_local_payment(world: World) -> None:
    from datetime import timedelta

    from minipay.server.ports import OrderRequest

    openid = await world.login()
    sub = world.settings.sub_merchant(SUB1)
    assert sub is not None
    now = world.clock.now()
    # Someone already used this out_trade_no at WeChat with other parameters.
    await world.container.gateway.create_order(
        sub,
        OrderRequest(
            out_trade_no="TAKEN-0001",
            total_fee=5,
            fee_type="HKD",
            body="other",
            notify_url="http://minipay.test/x",
            sub_openid=openid,
            spbill_create_ip="127.0.0.1",
            time_start=now,
            time_expire=now + timedelta(hours=1),
        ),
    )
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid, "out_trade_no": "TAKEN-0001"}
    response = await world.api.post("/v1/payments", json=body, headers=world.auth())
    assert error(response) == (502, "upstream_rejected")
    assert "INVALID_REQUEST" in response.json()["error"]["message"]
    payments = (await world.api.get("/v1/payments", headers=world.auth())).json()["data"]
    assert [(p["status"], p["last_error"]) for p in payments] == [("closed", "INVALID_REQUEST")]


@on_the_fake
async def test_list_payments_filters_and_pages(world: World) -> None:
    openid = await world.login()
    ids = []
    for n in range(5):
        world.clock.advance(1)
        body = {"amount": 100 + n, "currency": "HKD", "description": f"item {n}", "openid": openid}
        ids.append((await world.api.post("/v1/payments", json=body, headers=world.auth())).json()["id"])
    page1 = (await world.api.get("/v1/payments", params={"limit": 2}, headers=world.auth())).json()
    assert [p["id"] for p in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"] is True
    page2 = (
        await world.api.get("/v1/payments", params={"limit": 2, "cursor": page1["next_cursor"]}, headers=world.auth())
    ).json()
    page3 = (
        await world.api.get("/v1/payments", params={"limit": 2, "cursor": page2["next_cursor"]}, headers=world.auth())
    ).json()
    assert [p["id"] for p in page2["data"] + page3["data"]] == ids[::-1][2:]
    assert page3["has_more"] is False
    assert (await world.api.get("/v1/payments", params={"status": "succeeded"}, headers=world.auth())).json()[
        "data"
    ] == []
    assert error(await world.api.get("/v1/payments", params={"status": "weird"}, headers=world.auth())) == (
        400,
        "invalid_field",
    )
    assert error(await world.api.get("/v1/payments", params={"cursor": "pay_x"}, headers=world.auth())) == (
        400,
        "invalid_cursor",
    )
    assert error(await world.api.get("/v1/payments", params={"limit": 0}, headers=world.auth())) == (
        400,
        "invalid_request",
    )


@on_the_fake
async def test_get_with_sync_true_queries_wechat(world: World) -> None:
    payment = await world.create_payment()
    await world.wx.post("/sandbox/notify-mode", json={"mode": "never"})
    await world.pay(payment)
    assert (await world.get(payment["id"]))["status"] == "pending"
    synced = await world.api.get(f"/v1/payments/{payment['id']}", params={"sync": "true"}, headers=world.auth())
    assert synced.json()["status"] == "succeeded"


@on_the_fake
async def test_pay_params_are_renewed_with_a_new_prepay_id_after_two_hours(world: World) -> None:
    payment = await world.create_payment(expires_in=6 * 3600)
    same = (await world.api.post(f"/v1/payments/{payment['id']}/pay-params", headers=world.auth())).json()
    assert same["pay_params"]["package"] == payment["pay_params"]["package"]
    await world.advance(2 * 3600 + 60)
    fresh = (await world.api.post(f"/v1/payments/{payment['id']}/pay-params", headers=world.auth())).json()
    assert fresh["out_trade_no"] == payment["out_trade_no"]
    assert fresh["pay_params"]["package"] != payment["pay_params"]["package"]
    assert (await world.pay(fresh))["errMsg"] == "requestPayment:ok"
    assert (await world.get(payment["id"]))["status"] == "succeeded"
    done = await world.api.post(f"/v1/payments/{payment['id']}/pay-params", headers=world.auth())
    assert error(done) == (409, "invalid_state")


@on_the_fake
async def test_close_then_pay_after_close_is_kept_and_flagged(world: World) -> None:
    payment = await world.create_payment()
    await world.advance(301)  # WeChat refuses to close an order younger than 5 minutes
    closed = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    again = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert again.json()["status"] == "closed"
    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 1}, headers={**world.auth(), "Idempotency-Key": "x"}
    )
    assert error(refund) == (409, "refund_not_allowed")


@on_the_fake
async def test_close_too_early_is_refused_and_close_of_a_paid_payment_conflicts(world: World) -> None:
    payment = await world.create_payment()
    early = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert error(early) == (409, "close_refused")
    assert (await world.get(payment["id"]))["status"] == "pending"
    await world.pay(payment)
    paid = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert error(paid) == (409, "invalid_state")


# -- refunds -------------------------------------------------------------------------------------------


@on_the_fake
async def test_refund_errors(world: World) -> None:
    pending = await world.create_payment()
    paid = await paid_payment(world)
    url = f"/v1/payments/{paid['id']}/refunds"
    assert error(await world.api.post(url, json={"amount": 100}, headers=world.auth())) == (
        400,
        "idempotency_key_required",
    )
    key = {**world.auth(), "Idempotency-Key": "r"}
    assert error(await world.api.post(url, json={"amount": 0}, headers=key)) == (400, "invalid_field")
    assert error(await world.api.post(url, json={"amount": 1.5}, headers=key)) == (400, "invalid_request")
    assert error(await world.api.post(url, json={"amount": 1001}, headers=key)) == (409, "refund_not_allowed")
    not_paid = await world.api.post(f"/v1/payments/{pending['id']}/refunds", json={"amount": 1}, headers=key)
    assert error(not_paid) == (409, "refund_not_allowed")
    missing = await world.api.post("/v1/payments/pay_nope/refunds", json={"amount": 1}, headers=key)
    assert error(missing) == (404, "not_found")
    assert await world.snapshot(("refunds",)) == {"refunds": []}


@on_the_fake
async def test_refund_retry_reuses_the_stored_out_refund_no(world: World) -> None:
    paid = await paid_payment(world)
    url = f"/v1/payments/{paid['id']}/refunds"
    headers = {**world.auth(), "Idempotency-Key": "refund-once"}
    first = await world.api.post(url, json={"amount": 400}, headers=headers)
    second = await world.api.post(url, json={"amount": 400}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["out_refund_no"] == second.json()["out_refund_no"]
    assert error(await world.api.post(url, json={"amount": 401}, headers=headers)) == (409, "idempotency_key_reused")
    refunds = (await world.wx.get("/sandbox/requests", params={"endpoint": "refund"})).json()["requests"]
    assert len(refunds) == 1


@on_the_fake
async def test_lost_refund_answer_is_retried_with_the_same_out_refund_no(world: World) -> None:
    paid = await paid_payment(world)
    await world.wx.post("/sandbox/faults", json={"endpoint": "refund", "fault": "lost_response", "times": 1})
    url = f"/v1/payments/{paid['id']}/refunds"
    headers = {**world.auth(), "Idempotency-Key": "lost-refund"}
    first = await world.api.post(url, json={"amount": 400}, headers=headers)
    assert first.status_code == 201
    assert first.json()["status"] == "pending"
    second = await world.api.post(url, json={"amount": 400}, headers=headers)
    assert second.json()["status"] == "processing"
    sent = (await world.wx.get("/sandbox/requests", params={"endpoint": "refund"})).json()["requests"]
    assert {r["fields"]["out_refund_no"] for r in sent} == {first.json()["out_refund_no"]}
    await world.advance(120)
    assert (await world.get(paid["id"]))["amount_refunded"] == 400


async def test_concurrent_refunds_never_exceed_the_paid_amount(world: World) -> None:
    paid = await paid_payment(world, amount=1000)
    url = f"/v1/payments/{paid['id']}/refunds"
    responses = await asyncio.gather(
        *(
            world.api.post(url, json={"amount": 400}, headers={**world.auth(), "Idempotency-Key": f"c{n}"})
            for n in range(5)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 201, 409, 409, 409]
    await world.advance(120)
    current = await world.get(paid["id"])
    assert current["amount_refunded"] == 800
    assert current["status"] == "partially_refunded"


@on_the_fake
async def test_full_refund_reaches_refunded(world: World) -> None:
    paid = await paid_payment(world, amount=1000)
    url = f"/v1/payments/{paid['id']}/refunds"
    for n, amount in enumerate((600, 400)):
        response = await world.api.post(
            url, json={"amount": amount}, headers={**world.auth(), "Idempotency-Key": f"f{n}"}
        )
        assert response.status_code == 201
    await world.advance(120)
    current = await world.get(paid["id"])
    assert (current["status"], current["amount_refunded"]) == ("refunded", 1000)
    listed = (await world.api.get(f"{url}", headers=world.auth())).json()["data"]
    assert [r["status"] for r in listed] == ["succeeded", "succeeded"]


# -- ops ---------------------------------------------------------------------------------------------------


async def test_health_readiness_and_metrics(world: World) -> None:
    assert (await world.api.get("/healthz")).json() == {"status": "ok"}
    ready = (await world.api.get("/readyz")).json()
    assert ready["status"] == "ok"
    assert ready["checks"]["database"] == {"status": "up"}
    await world.api.get("/v1/payments", headers=world.auth())
    metrics = await world.api.get("/metrics")
    assert metrics.status_code == 200
    assert "minipay_http_requests_total" in metrics.text
    assert (await world.api.get("/docs")).status_code == 200
    assert "/v1/payments" in (await world.api.get("/openapi.json")).json()["paths"]


@on_the_fake
async def test_healthz_answered_before_routing_is_the_routes_answer_and_still_counted(world: World) -> None:
    # GET /healthz is answered by a plain ASGI layer ahead of the router: same body and headers as the
    # FastAPI route, counted under its route in /metrics, with the request id; other methods still
    # reach the router (405, as for any GET-only route).
    response = await world.api.get("/healthz?probe=1", headers={"X-Request-Id": "probe-1"})
    assert (response.status_code, response.content) == (200, b'{"status":"ok"}')
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == "15"
    assert response.headers["x-request-id"] == "probe-1"
    assert (await world.api.post("/healthz")).status_code == 405
    assert (await world.api.head("/healthz")).status_code == 405
    metrics = (await world.api.get("/metrics")).text
    assert 'minipay_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in metrics
    assert "/healthz" in (await world.api.get("/openapi.json")).json()["paths"]


async def test_the_payment_creation_answered_before_routing_is_the_routes_answer(world: World) -> None:
    # POST /v1/payments without a query string is answered by a plain ASGI endpoint ahead of the
    # router (routes.early), which passes every request it does not take whole on to the FastAPI
    # route, body and all; with a query string (ignored by the route) the router answers. Both must
    # answer alike: status, headers in their order, body (but for what is new in each payment),
    # errors and their precedence included (FastAPI reads the body before it checks the API key).
    early_routes = [m.kwargs["routes"] for m in world.service.user_middleware if m.cls is EarlyRoutes]
    creation = [r for routes in early_routes for r in routes if r.path == "/v1/payments"]
    assert [type(r.endpoint) for r in creation] == [PaymentCreate]
    openid = await world.login(SUB1)
    valid = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid}

    async def both(
        content: bytes, headers: dict[str, str], key: str | None = None
    ) -> tuple[httpx2.Response, httpx2.Response]:
        headers = {**headers, "X-Request-Id": "same-request"}
        answers = []
        for path, suffix in (("/v1/payments", "-early"), ("/v1/payments?via=router", "-routed")):
            sent = dict(headers) if key is None else {**headers, "Idempotency-Key": key + suffix}
            answers.append(await world.api.post(path, content=content, headers=sent))
        return answers[0], answers[1]

    new_in_each = ("id", "out_trade_no", "prepay_id", "pay_params", "created_at", "updated_at", "expires_at")

    def same(early: httpx2.Response, routed: httpx2.Response, what: str) -> None:
        assert (early.status_code, early.headers.multi_items()[1:]) == (
            routed.status_code,
            routed.headers.multi_items()[1:],
        ), what
        assert early.headers.multi_items()[0][0] == "content-length", what
        if early.status_code in (200, 201):
            mine, theirs = early.json(), routed.json()
            assert set(mine) == set(theirs), what
            assert {k: v for k, v in mine.items() if k not in new_in_each} == {
                k: v for k, v in theirs.items() if k not in new_in_each
            }, what
            assert set(mine["pay_params"]) == set(theirs["pay_params"]), what
        else:
            assert early.content == routed.content, what

    json_type = {"Content-Type": "application/json"}
    body = json.dumps(valid).encode()
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("valid", body, {**world.auth(), **json_type}),
        ("charset", body, {**world.auth(), "Content-Type": "Application/JSON; charset=utf-8"}),
        ("json suffix", body, {**world.auth(), "Content-Type": "application/merge-patch+json"}),
        ("no content type", body, world.auth()),
        ("text", body, {**world.auth(), "Content-Type": "text/plain"}),
        ("empty", b"", {**world.auth(), **json_type}),
        ("not json", b'{"amount": 10', {**world.auth(), **json_type}),
        ("a list", b"[1, 2]", {**world.auth(), **json_type}),
        ("NaN", body.replace(b"1000", b"NaN"), {**world.auth(), **json_type}),
        ("amount as text", body.replace(b"1000", b'"1000"'), {**world.auth(), **json_type}),
        ("unknown field", body[:-1] + b', "colour": "red"}', {**world.auth(), **json_type}),
        ("no key", body, json_type),
        ("wrong key", body, {"Authorization": "Bearer sk_wrong", **json_type}),
        ("wrong key, not json", b"{", {"Authorization": "Bearer sk_wrong", **json_type}),
        ("wrong key, unknown field", body[:-1] + b', "x": 1}', {"Authorization": "Basic a", **json_type}),
        ("admin, no sub_mch_id", body, {**world.auth("admin"), **json_type}),
        ("another sub-merchant", body[:-1] + f', "sub_mch_id": "{SUB2}"}}'.encode(), {**world.auth(), **json_type}),
        ("wrong currency", body.replace(b"HKD", b"USD"), {**world.auth(), **json_type}),
        ("empty idempotency key", body, {**world.auth(), **json_type, "Idempotency-Key": ""}),
        ("long idempotency key", body, {**world.auth(), **json_type, "Idempotency-Key": "k" * 256}),
    ]
    statuses = {}
    for what, content, headers in cases:
        early, routed = await both(content, headers)
        same(early, routed, what)
        statuses[what] = early.status_code
    assert statuses == {
        "valid": 201,
        "charset": 201,
        "json suffix": 201,
        "no content type": 400,  # FastAPI's strict content type: a JSON body must say so
        "text": 400,
        "empty": 400,
        "not json": 400,
        "a list": 400,
        "NaN": 400,
        "amount as text": 400,
        "unknown field": 400,
        "no key": 401,
        "wrong key": 401,
        "wrong key, not json": 400,
        "wrong key, unknown field": 401,
        "admin, no sub_mch_id": 400,
        "another sub-merchant": 404,
        "wrong currency": 400,
        "empty idempotency key": 400,
        "long idempotency key": 400,
    }

    # With an Idempotency-Key: created, then replayed (200, the same payment), then a conflict.
    first = await both(body, {**world.auth(), **json_type}, key="order-1")
    again = await both(body, {**world.auth(), **json_type}, key="order-1")
    other = await both(body.replace(b"1000", b"2000"), {**world.auth(), **json_type}, key="order-1")
    for what, (early, routed) in (("first", first), ("again", again), ("other", other)):
        same(early, routed, what)
    assert [first[0].status_code, again[0].status_code] == [201, 200]
    assert again[0].json()["id"] == first[0].json()["id"]
    assert other[0].status_code == 409

    # Counted under the route, whichever answered; other methods are the router's.
    metrics = (await world.api.get("/metrics")).text
    assert 'minipay_http_requests_total{method="POST",route="/v1/payments",status="201"} 8.0' in metrics
    assert (await world.api.put("/v1/payments", headers=world.auth())).status_code == 405


async def test_pay_params_are_signed_once_a_minute_a_prepay_id_not_at_every_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A result page polls its payment: the same signed pay_params (valid for wx.requestPayment as
    # often as it is called) are answered for PAY_PARAMS_REUSE seconds, then signed anew.
    created = await world.create_payment()
    other = await world.create_payment()
    path = f"/v1/payments/{created['id']}"
    first = (await world.api.get(path, headers=world.auth())).json()["pay_params"]
    assert first == created["pay_params"]
    assert (await world.api.get(path, headers=world.auth())).json()["pay_params"] == first
    assert (await world.api.get(f"{path}?sync=false", headers=world.auth())).json()["pay_params"] == first
    assert other["pay_params"]["package"] != first["package"]  # one prepay_id, one signature
    # Asked for (POST .../pay-params, the mini program paying again after a cancel): signed anew.
    asked = (await world.api.post(f"{path}/pay-params", headers=world.auth())).json()["pay_params"]
    assert asked["package"] == first["package"]
    assert asked["paySign"] != first["paySign"]
    assert (await world.api.get(path, headers=world.auth())).json()["pay_params"] == asked  # kept from then
    first = asked
    monkeypatch.setattr(adapters, "PAY_PARAMS_REUSE", 0.0)
    fresh = (await world.api.get(path, headers=world.auth())).json()["pay_params"]
    assert fresh["nonceStr"] != first["nonceStr"]
    assert fresh["paySign"] != first["paySign"]
    assert (fresh["package"], fresh["signType"]) == (first["package"], first["signType"])
    # What was answered a minute ago still pays: WeChat (the sandbox) takes it.
    assert (await world.pay({"pay_params": first}))["errMsg"] == "requestPayment:ok"


async def test_the_payment_read_answered_before_routing_is_the_routes_answer(world: World) -> None:
    # GET /v1/payments/{id} without a query string is answered by a plain ASGI endpoint ahead of the
    # router (routes.early); with one (here ?sync=false, which changes nothing) by the FastAPI route.
    # Both must answer alike: status, headers in their order, body (pay_params may be signed anew
    # between the two reads: their nonce, time stamp and signature may differ), errors included.
    early_items = [m.kwargs["items"] for m in world.service.user_middleware if m.cls is EarlyRoutes]
    assert [type(item) for items in early_items for item in items] == [PaymentRead]
    pending = await world.create_payment()
    paid = await world.create_payment(amount=2000)
    await world.pay(paid)
    other = await world.create_payment(SUB2)

    async def both(path: str, headers: dict[str, str]) -> tuple[httpx2.Response, httpx2.Response]:
        headers = {**headers, "X-Request-Id": "same-request"}
        early = await world.api.get(path, headers=headers)
        routed = await world.api.get(path + "?sync=false", headers=headers)
        return early, routed

    def fresh(body: dict[str, Any]) -> dict[str, Any]:
        params = body.get("pay_params")
        if params is not None:
            body["pay_params"] = {k: v for k, v in params.items() if k not in ("nonceStr", "timeStamp", "paySign")}
        return body

    cases = [
        (f"/v1/payments/{pending['id']}", world.auth()),
        (f"/v1/payments/{paid['id']}", world.auth()),
        (f"/v1/payments/{paid['id']}", world.auth("admin")),
        (f"/v1/payments/{other['id']}", world.auth()),  # another sub-merchant's: 404
        ("/v1/payments/pay_nope", world.auth()),
        (f"/v1/payments/{paid['id']}", {}),
        (f"/v1/payments/{paid['id']}", {"Authorization": "Bearer sk_wrong"}),
        (f"/v1/payments/{paid['id']}", {"Authorization": "Basic abc"}),
        ("/v1/payments/%E6%94%AF%E4%BB%98", world.auth()),
    ]
    statuses = []
    for path, headers in cases:
        early, routed = await both(path, headers)
        statuses.append(early.status_code)
        assert early.status_code == routed.status_code, path
        assert early.headers.multi_items() == routed.headers.multi_items(), path
        if "pay_params" in early.text and early.json()["pay_params"] is not None:
            assert fresh(early.json()) == fresh(routed.json()), path
            assert set(early.json()["pay_params"]) == set(routed.json()["pay_params"])
        else:
            assert early.content == routed.content, path
    assert statuses == [200, 200, 200, 404, 404, 401, 401, 401, 404]
    assert (await world.get(pending["id"]))["pay_params"]["package"] == pending["pay_params"]["package"]

    # Counted under the route; other methods, a trailing slash or a longer path are the router's.
    metrics = (await world.api.get("/metrics")).text
    assert 'minipay_http_requests_total{method="GET",route="/v1/payments/{payment_id}",status="200"} 7.0' in metrics
    assert (await world.api.head(f"/v1/payments/{paid['id']}", headers=world.auth())).status_code == 405
    slash = await world.api.get("/v1/payments/", headers=world.auth())
    assert (slash.status_code, slash.headers["location"]) == (307, "http://minipay.test/v1/payments")
    refunds = await world.api.get(f"/v1/payments/{paid['id']}/refunds", headers=world.auth())
    assert refunds.status_code == 200
    assert refunds.json()["data"] == []


@on_the_fake
async def test_metrics_count_requests_by_route_template_and_unmatched_ones_as_other(world: World) -> None:
    await world.api.get("/v1/payments/pay_nope", headers=world.auth())
    await world.api.get("/no/such/path")
    text = (await world.api.get("/metrics")).text
    assert 'minipay_http_requests_total{method="GET",route="/v1/payments/{payment_id}",status="404"} 1.0' in text
    assert 'minipay_http_requests_total{method="GET",route="other",status="404"} 1.0' in text
    assert 'minipay_http_request_seconds_count{route="/v1/payments/{payment_id}"} 1.0' in text
    assert "pay_nope" not in text


@on_the_fake
async def test_the_access_log_names_method_path_and_status_without_the_query(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="minipay.access"):
        await world.api.get("/v1/payments?out_trade_no=secret-ish", headers=world.auth())
    lines = [r.getMessage() for r in caplog.records if r.name == "minipay.access"]
    assert len(lines) == 1
    assert '"GET /v1/payments HTTP/1.1" 200' in lines[0]
    assert "secret-ish" not in lines[0]


@on_the_fake
async def test_a_refund_wechat_closes_fails_and_frees_the_amount(world: World) -> None:
    paid = await paid_payment(world, amount=1000)
    await world.wx.post(
        "/sandbox/refunds/outcome", json={"out_trade_no": paid["out_trade_no"], "status": "REFUNDCLOSE"}
    )
    url = f"/v1/payments/{paid['id']}/refunds"
    first = await world.api.post(url, json={"amount": 1000}, headers={**world.auth(), "Idempotency-Key": "will-fail"})
    assert first.status_code == 201
    await world.advance(120)
    failed = (await world.api.get(f"/v1/refunds/{first.json()['id']}", headers=world.auth())).json()
    assert (failed["status"], failed["failure_code"]) == ("failed", "REFUNDCLOSE")
    current = await world.get(paid["id"])
    assert (current["status"], current["amount_refunded"]) == ("succeeded", 0)
    again = await world.api.post(url, json={"amount": 1000}, headers={**world.auth(), "Idempotency-Key": "second-try"})
    assert again.status_code == 201
    assert again.json()["out_refund_no"] != first.json()["out_refund_no"]


@on_the_fake
async def test_an_expired_payment_gives_no_pay_params(world: World) -> None:
    payment = await world.create_payment(expires_in=120)
    await world.advance(121)
    assert (await world.get(payment["id"]))["pay_params"] is None
    response = await world.api.post(f"/v1/payments/{payment['id']}/pay-params", headers=world.auth())
    assert error(response) == (409, "payment_expired")


@on_the_fake
async def test_the_admin_key_names_the_sub_merchant_of_a_payment(world: World) -> None:
    openid = await world.login(SUB2)
    body = {"amount": 500, "currency": "JPY", "description": "Matcha", "openid": openid}
    assert error(await world.api.post("/v1/payments", json=body, headers=world.auth("admin"))) == (
        400,
        "sub_mch_id_required",
    )
    unknown = await world.api.post("/v1/payments", json={**body, "sub_mch_id": "999"}, headers=world.auth("admin"))
    assert error(unknown) == (404, "not_found")
    created = await world.api.post("/v1/payments", json={**body, "sub_mch_id": SUB2}, headers=world.auth("admin"))
    assert created.status_code == 201, created.text
    assert created.json()["sub_mch_id"] == SUB2
    assert (await world.api.get(f"/v1/payments/{created.json()['id']}", headers=world.auth(SUB2))).status_code == 200
    wrong_currency = await world.api.post("/v1/payments", json={**body, "currency": "HKD"}, headers=world.auth(SUB2))
    assert error(wrong_currency) == (400, "invalid_field")


# -- review additions ------------------------------------------------------------------------------------


async def test_double_tap_with_one_key_and_the_merchants_out_trade_no_returns_one_payment(world: World) -> None:
    openid = await world.login()
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid, "out_trade_no": "SHOP-42"}
    headers = {**world.auth(), "Idempotency-Key": "double-tap-own-no"}

    async def tap(n: int) -> Any:
        await asyncio.sleep(n * 0.003)  # staggered: some taps arrive while the first one is committing
        return await world.api.post("/v1/payments", json=body, headers=headers)

    responses = await asyncio.gather(*(tap(n) for n in range(20)))
    failures = [r.text for r in responses if r.status_code not in (200, 201)]
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201], failures
    assert len({r.json()["id"] for r in responses}) == 1
    assert len((await world.wx.get("/sandbox/state")).json()["orders"]) == 1


async def test_double_tapped_full_refund_with_one_key_returns_the_same_refund(world: World) -> None:
    paid = await paid_payment(world, amount=1000)
    url = f"/v1/payments/{paid['id']}/refunds"
    headers = {**world.auth(), "Idempotency-Key": "refund-all"}
    responses = await asyncio.gather(*(world.api.post(url, json={"amount": 1000}, headers=headers) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201], [r.text for r in responses]
    assert len({r.json()["out_refund_no"] for r in responses}) == 1
    sent = (await world.wx.get("/sandbox/requests", params={"endpoint": "refund"})).json()["requests"]
    assert {r["fields"]["out_refund_no"] for r in sent} == {responses[0].json()["out_refund_no"]}


@on_the_fake
async def test_an_empty_idempotency_key_is_refused(world: World) -> None:
    body = {"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": "oX"}
    response = await world.api.post("/v1/payments", json=body, headers={**world.auth(), "Idempotency-Key": ""})
    assert error(response) == (400, "invalid_request")
    assert await world.snapshot(("payments", "idempotency_keys")) == {"payments": [], "idempotency_keys": []}


async def test_the_payment_row_is_committed_before_wechat_is_called(world: World) -> None:
    gateway = world.container.services.gateway
    seen: list[tuple[str, int]] = []

    class CommittedRowCheck:
        """The real gateway, which first looks at the database from another connection."""

        def __getattr__(self, name: str) -> Any:
            return getattr(gateway, name)

        async def create_order(self, sub: Any, order: Any) -> str:
            async with world.container.engine.connect() as conn:  # sees committed rows only
                row = (
                    await conn.execute(
                        select(db.payments.c.status, db.payments.c.amount).where(
                            db.payments.c.out_trade_no == order.out_trade_no
                        )
                    )
                ).one()
            seen.append((row.status, row.amount))
            prepay_id: str = await gateway.create_order(sub, order)
            return prepay_id

    world.container.services.gateway = CommittedRowCheck()
    payment = await world.create_payment(amount=1234)
    assert seen == [("created", 1234)]
    assert payment["status"] == "pending"


def test_a_route_the_router_prefers_to_the_early_payment_read_is_found() -> None:
    # A GET route of one segment below /v1/payments/ listed before the read's own route would be
    # answered by the early endpoint in its place: create_app refuses to start with one.
    from starlette.routing import Route

    from minipay.server.routes.early import shadowed

    app = create_app(build_settings("sqlite+aiosqlite:///:memory:", run_migrations=False))
    (read,) = [m.kwargs["items"][0] for m in app.user_middleware if m.cls is EarlyRoutes]
    table = list(app.router.routes)
    assert shadowed(table, [read]) == []
    position = table.index(read.route)

    async def other(_: Any) -> None:  # pragma: no cover - never served
        return None

    before = [Route("/v1/payments/export", other), Route("/v1/payments/import", other, methods=["POST"])]
    deeper = Route("/v1/payments/{payment_id}/export", other)
    table[position:position] = [*before, deeper]
    assert shadowed(table, [read]) == ["/v1/payments/export"]
    assert shadowed([*list(app.router.routes), *before], [read]) == []  # after it: the read wins anyway


async def test_a_generated_out_trade_no_that_is_taken_is_drawn_again_not_refused(
    world: World, monkeypatch: Any
) -> None:
    # Without an idempotency key or an out_trade_no of the caller's, the first attempt does not read:
    # the unique key is the check. A clash (120 random bits: never, but it must not be a 409) makes
    # the next attempt draw a new number.
    first = await world.create_payment()
    from minipay.server import services

    drawn = iter([first["out_trade_no"], "mpfreshly0drawn0number0000000001"])
    monkeypatch.setattr(services, "new_out_trade_no", lambda: next(drawn))
    second = await world.create_payment()
    assert second["out_trade_no"] == "mpfreshly0drawn0number0000000001"
    assert second["status"] == "pending"
    assert await world.count("payments") == 2
    assert await world.count("payment_events", payment_id=second["id"], type="created") == 1


@pytest.mark.parametrize("meanwhile", ["changed", "closed"])
async def test_a_payment_changed_while_its_unified_order_is_in_flight_is_decided_on_the_fresh_row(
    world: World, meanwhile: str
) -> None:
    # The prepay_id is saved on the payment as the first unit of work committed it, conditional on
    # that version; another writer in between (here: a save of the row, or a close) makes the save
    # fail and the next attempt decide on the locked, fresh row. Nothing of the lost attempt stays.
    gateway = world.container.services.gateway
    uow_factory = world.container.uow_factory

    class ConcurrentWriter:
        def __getattr__(self, name: str) -> Any:
            return getattr(gateway, name)

        async def create_order(self, sub: Any, order: Any) -> str:
            prepay_id: str = await gateway.create_order(sub, order)
            async with uow_factory() as uow:
                current = await uow.payments.get_by_out_trade_no(
                    order_mch_id, order.out_trade_no, sub_mch_id=sub.sub_mch_id, for_update=True
                )
                assert current is not None
                if meanwhile == "closed":
                    current.closed(world.clock.now(), "closed meanwhile")
                await uow.payments.save(current)
                await uow.commit()
            return prepay_id

    order_mch_id = world.settings.institutions[0].mch_id
    world.container.services.gateway = ConcurrentWriter()
    openid = await world.login()
    response = await world.api.post(
        "/v1/payments",
        json={"amount": 1000, "currency": "HKD", "description": "Coffee", "openid": openid},
        headers=world.auth(),
    )
    assert response.status_code == 201, response.text
    payment = response.json()
    stored = await world.get(payment["id"])
    if meanwhile == "changed":
        assert payment["status"] == stored["status"] == "pending"
        assert payment["pay_params"] is not None
        assert await world.count("payment_events", payment_id=payment["id"], type="prepared") == 1
    else:
        assert payment["status"] == stored["status"] == "closed"
        assert payment["pay_params"] is None
        assert await world.count("payment_events", payment_id=payment["id"], type="prepared") == 0


@on_the_fake
async def test_an_api_call_that_keeps_losing_races_answers_503_busy(world: World, monkeypatch: Any) -> None:
    async def always_raced(*_: Any, **__: Any) -> Any:
        raise ConcurrentUpdate("gave up after 8 attempts")

    monkeypatch.setattr(world.container.services, "get_payment", always_raced)
    response = await world.api.get("/v1/payments/pay_x", headers=world.auth())
    assert error(response) == (503, "busy")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "unreachable",
    ["sqlite+aiosqlite:///{tmp}/no/such/folder/minipay.db", "postgresql+asyncpg://postgres@127.0.0.1:1/minipay"],
)
async def test_an_unreachable_database_gives_json_503s_and_readyz_says_so(tmp_path: Path, unreachable: str) -> None:
    settings = build_settings(unreachable.format(tmp=tmp_path), run_migrations=False)
    app = create_app(settings)
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 must not hide behind a raise
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://minipay.test") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert ready.json()["checks"]["database"]["status"] == "down"
            auth = {"Authorization": f"Bearer {KEYS[SUB1]}"}
            for response in (
                await http.get("/v1/payments", headers=auth),
                await http.get("/v1/payments/pay_x", headers=auth),
                await http.post(
                    "/v1/payments/pay_x/refunds", json={"amount": 1}, headers={**auth, "Idempotency-Key": "k"}
                ),
            ):
                assert error(response) == (503, "database_unavailable")
                assert response.headers["retry-after"] == "5"
    finally:
        await app.state.container.aclose()
        # aiosqlite stops the thread of a failed connect without waiting for it; let it finish while
        # this loop still runs (else it reports "Event loop is closed" into the next test).
        await asyncio.to_thread(_join_aiosqlite_threads)


def _join_aiosqlite_threads() -> None:
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=5)


@on_the_fake
async def test_renewing_pay_params_of_an_order_paid_meanwhile_answers_it_succeeded(world: World) -> None:
    payment = await world.create_payment(expires_in=6 * 3600)
    await world.wx.post("/sandbox/notify-mode", json={"mode": "never"})
    await world.pay(payment)  # paid, but the notification is lost
    await world.advance(2 * 3600 + 60)
    response = await world.api.post(f"/v1/payments/{payment['id']}/pay-params", headers=world.auth())
    assert response.status_code == 200, response.text  # unified order said ORDERPAID: asked, and applied
    assert (response.json()["status"], response.json()["pay_params"]) == ("succeeded", None)
    queries = (await world.wx.get("/sandbox/requests", params={"endpoint": "orderquery"})).json()["requests"]
    assert len(queries) == 1


@on_the_fake
async def test_renewing_pay_params_of_an_order_closed_at_wechat_closes_it_here(world: World) -> None:
    payment = await world.create_payment(expires_in=6 * 3600)
    await world.advance(301)
    sub = world.settings.sub_merchant(SUB1)
    assert sub is not None
    await world.container.gateway.close_order(sub, payment["out_trade_no"])  # closed by another system
    await world.advance(2 * 3600)
    response = await world.api.post(f"/v1/payments/{payment['id']}/pay-params", headers=world.auth())
    assert error(response) == (409, "payment_closed")
    assert (await world.get(payment["id"]))["status"] == "closed"


@on_the_fake
async def test_closing_an_order_the_payer_just_paid_answers_the_succeeded_payment(world: World) -> None:
    payment = await world.create_payment()
    await world.wx.post("/sandbox/notify-mode", json={"mode": "never"})
    await world.pay(payment)
    await world.advance(301)
    closed = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert closed.status_code == 200, closed.text
    assert (closed.json()["status"], closed.json()["paid_after_close"]) == ("succeeded", False)


@on_the_fake
async def test_a_close_whose_outcome_is_unknown_is_503_and_changes_nothing(world: World) -> None:
    payment = await world.create_payment()
    await world.advance(301)
    await world.wx.post("/sandbox/faults", json={"endpoint": "closeorder", "fault": "lost_response", "times": 1})
    before = await world.snapshot(("payments", "outbox_events"))
    response = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert error(response) == (503, "upstream_unavailable")
    assert await world.snapshot(("payments", "outbox_events")) == before
    again = await world.api.post(f"/v1/payments/{payment['id']}/close", headers=world.auth())
    assert again.json()["status"] == "closed"  # WeChat had closed it: closing again is idempotent


@on_the_fake
async def test_an_unexpected_error_is_a_json_500_without_details(world: World, monkeypatch: Any) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a detail that must not leak")

    monkeypatch.setattr(world.container.services, "get_payment", broken)
    transport = httpx2.ASGITransport(app=world.service, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://minipay.test") as http:
        response = await http.get("/v1/payments/pay_x", headers=world.auth())
    assert response.status_code == 500
    rid = response.headers["x-request-id"]
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error", "request_id": rid}}


@on_the_fake
async def test_a_refund_stuck_in_change_keeps_its_amount_reserved(world: World) -> None:
    # CHANGE: the money left the merchant but did not reach the payer (card cancelled...); it is handled
    # by hand in the merchant platform. Refunding it again through the API would pay twice.
    paid = await paid_payment(world, amount=1000)
    await world.wx.post("/sandbox/refunds/outcome", json={"out_trade_no": paid["out_trade_no"], "status": "CHANGE"})
    url = f"/v1/payments/{paid['id']}/refunds"
    first = await world.api.post(url, json={"amount": 1000}, headers={**world.auth(), "Idempotency-Key": "abnormal"})
    assert first.status_code == 201
    await world.advance(120)
    stuck = (await world.api.get(f"/v1/refunds/{first.json()['id']}", headers=world.auth())).json()
    assert (stuck["status"], stuck["failure_code"]) == ("failed", "CHANGE")
    again = await world.api.post(url, json={"amount": 1}, headers={**world.auth(), "Idempotency-Key": "again"})
    assert error(again) == (409, "refund_not_allowed")


@on_the_fake
async def test_a_refusal_of_a_resent_refund_never_fails_a_refund_wechat_accepted(world: World) -> None:
    from minipay.protocol import BusinessError

    paid = await paid_payment(world, amount=1000)
    url = f"/v1/payments/{paid['id']}/refunds"
    created = await world.api.post(url, json={"amount": 1000}, headers={**world.auth(), "Idempotency-Key": "all"})
    assert created.json()["status"] == "processing"
    gateway = world.container.services.gateway

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(gateway, name)

        async def create_refund(self, *_: Any) -> str:
            raise BusinessError("refused", operation="refund", err_code="PARAM_ERROR", retryable=False)

    # A twin request (or the worker) resent it while it was still pending, and WeChat refused the resend.
    world.container.services.gateway = Refusing()
    async with world.container.uow_factory() as uow:
        refund = await uow.refunds.get(created.json()["id"])
    assert refund is not None
    after = await world.container.services.submit_refund(refund)
    assert after.status == "processing"  # WeChat is paying it back: the amount must stay reserved
    again = await world.api.post(url, json={"amount": 1000}, headers={**world.auth(), "Idempotency-Key": "twice"})
    assert error(again) == (409, "refund_not_allowed")


async def test_a_nul_in_a_path_or_query_is_never_a_database_error(world: World) -> None:
    for path, params in (
        ("/v1/payments/pay_%00x", {}),
        ("/v1/refunds/re_%00x", {}),
        ("/v1/payments", {"out_trade_no": "a\x00b"}),
        ("/v1/payments", {"status": "\x00"}),
        ("/v1/payments", {"cursor": "pay_\x00"}),
        ("/v1/events", {"payment_id": "pay_\x00"}),
        ("/v1/events/evt_%00", {}),
    ):
        response = await world.api.get(path, params=params, headers=world.auth())
        assert response.status_code < 500, (path, params, response.text)
        if response.status_code >= 400:
            error(response)
    gone = await world.api.delete("/v1/webhook-endpoints/we_%00", headers=world.auth())
    assert error(gone)[0] in (400, 404)
