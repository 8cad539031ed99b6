"""The ops console (/console) over HTTP: the session cookie, CSRF and origin checks, tenancy, the
payments list's filters, escaping, and the actions reusing the API's use cases. (The browser test
in tests/e2e/test_console_browser.py drives the same pages in Chromium.)"""

from __future__ import annotations

import re

import httpx2
import pytest

from tests.server.conftest import KEYS, SUB1, SUB2, World, on_the_fake

ORIGIN = {"Origin": "http://minipay.test"}
pytestmark = pytest.mark.anyio


async def sign_in(world: World, who: str = SUB1) -> httpx2.AsyncClient:
    api = world.api
    api.cookies.clear()
    response = await api.post("/console/login", data={"api_key": KEYS[who]}, headers=ORIGIN)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert KEYS[who] not in cookie
    return api


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_the_console_needs_a_valid_key_and_keeps_it_out_of_the_cookie(world: World) -> None:
    response = await world.api.get("/console/payments")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    bad = await world.api.post("/console/login", data={"api_key": "sk_nope"}, headers=ORIGIN)
    assert bad.status_code == 401
    assert "not valid" in bad.text
    await sign_in(world)
    page = await world.api.get("/console/payments")
    assert page.status_code == 200
    assert "sub-merchant " + SUB1 in page.text
    # A forged or tampered cookie is no session.
    world.api.cookies.clear()
    world.api.cookies.set("minipay_console", "e30.AAAA", domain="minipay.test", path="/console")
    assert (await world.api.get("/console/payments")).status_code == 303


async def test_payments_list_filters_escapes_and_scopes_to_the_key(world: World) -> None:
    mine = await world.create_payment(SUB1, description="<script>alert(1)</script>", attach="<b>x</b>")
    other = await world.create_payment(SUB2, description="Ramen")
    await sign_in(world, SUB1)
    page = (await world.api.get("/console/payments")).text
    assert mine["out_trade_no"] in page
    assert other["out_trade_no"] not in page
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    detail = await world.api.get(f"/console/payments/{mine['id']}")
    assert detail.status_code == 200
    assert "&lt;b&gt;x&lt;/b&gt;" in detail.text
    assert (await world.api.get(f"/console/payments/{other['id']}")).status_code == 404

    await sign_in(world, "admin")
    both = (await world.api.get("/console/payments")).text
    assert mine["out_trade_no"] in both
    assert other["out_trade_no"] in both
    only = (await world.api.get("/console/payments", params={"out_trade_no": other["out_trade_no"]})).text
    assert other["out_trade_no"] in only
    assert mine["out_trade_no"] not in only
    by_sub = (await world.api.get("/console/payments", params={"sub_mch_id": SUB1, "status": "pending"})).text
    assert mine["out_trade_no"] in by_sub
    assert other["out_trade_no"] not in by_sub


async def test_payments_list_finds_by_transaction_id_and_a_sub_key_cannot_widen_its_scope(world: World) -> None:
    mine = await world.create_payment(SUB1, description="Tea")
    paid = await world.create_payment(SUB1, description="Cake")
    other = await world.create_payment(SUB2, description="Ramen")
    await world.pay(paid)
    transaction_id = (await world.api.get(f"/v1/payments/{paid['id']}", headers=world.auth(SUB1))).json()[
        "transaction_id"
    ]
    assert transaction_id

    await sign_in(world, SUB1)
    found = (await world.api.get("/console/payments", params={"transaction_id": transaction_id})).text
    assert paid["out_trade_no"] in found
    assert mine["out_trade_no"] not in found
    # A sub-merchant's key asking for another sub-merchant still sees only its own payments.
    widened = (await world.api.get("/console/payments", params={"sub_mch_id": SUB2})).text
    assert other["out_trade_no"] not in widened
    assert mine["out_trade_no"] in widened

    await sign_in(world, "admin")
    assert (
        other["out_trade_no"]
        not in (await world.api.get("/console/payments", params={"transaction_id": transaction_id})).text
    )


async def test_a_refund_from_the_console_uses_the_api_rules_and_cross_site_posts_are_refused(world: World) -> None:
    payment = await world.create_payment(SUB1, amount=1000)
    await world.pay(payment)
    pending = await world.create_payment(SUB1, amount=500)
    api = await sign_in(world, SUB1)
    pending_page = (await api.get(f"/console/payments/{pending['id']}")).text
    assert "Close payment" in pending_page
    assert "/refund" not in pending_page  # nothing to refund yet
    url = f"/console/payments/{payment['id']}/refund"
    paid_page = (await api.get(f"/console/payments/{payment['id']}")).text
    assert "Close payment" not in paid_page  # a paid payment cannot be closed
    csrf = csrf_of(paid_page)
    body = {"csrf": csrf, "amount": "2.50", "idempotency_key": "k1"}

    cross = await api.post(url, data=body, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    fetch_site = await api.post(url, data=body, headers={**ORIGIN, "Sec-Fetch-Site": "cross-site"})
    assert fetch_site.status_code == 403
    no_token = await api.post(url, data={**body, "csrf": "x"}, headers=ORIGIN)
    assert no_token.status_code == 403
    assert (await world.api.get(f"/v1/payments/{payment['id']}/refunds", headers=world.auth())).json()["data"] == []

    done = await api.post(url, data=body, headers=ORIGIN)
    assert done.status_code == 200
    assert "Refund " in done.text
    too_much = await api.post(url, data={**body, "amount": "20.00", "idempotency_key": "k2"}, headers=ORIGIN)
    assert too_much.status_code in (400, 409)
    assert 'role="alert"' in too_much.text
    refunds = (await world.api.get(f"/v1/payments/{payment['id']}/refunds", headers=world.auth())).json()["data"]
    assert [r["amount"] for r in refunds] == [250]


@on_the_fake
async def test_repeated_wrong_keys_from_one_address_are_slowed_with_429(world: World) -> None:
    limit = world.settings.console_signin_limit
    service = world.service

    def browser_at(address: str) -> httpx2.AsyncClient:
        transport = httpx2.ASGITransport(app=service, client=(address, 40000))
        return httpx2.AsyncClient(transport=transport, base_url="http://minipay.test")

    async with browser_at("203.0.113.7") as guesser, browser_at("198.51.100.2") as neighbour:
        for n in range(limit):
            wrong = await guesser.post("/console/login", data={"api_key": f"sk_guess_{n:04d}"}, headers=ORIGIN)
            assert wrong.status_code == 401, n
        slowed = await guesser.post("/console/login", data={"api_key": "sk_guess_more"}, headers=ORIGIN)
        assert slowed.status_code == 429
        wait = int(slowed.headers["retry-after"])
        assert 0 < wait <= world.settings.console_signin_window
        assert "Too many failed sign-ins" in slowed.text
        # Even the right key is not compared while the address waits: guessing cannot go on.
        right = await guesser.post("/console/login", data={"api_key": KEYS[SUB1]}, headers=ORIGIN)
        assert right.status_code == 429
        assert "set-cookie" not in right.headers
        # Another address is not held up by the guesser.
        other = await neighbour.post("/console/login", data={"api_key": KEYS[SUB1]}, headers=ORIGIN)
        assert other.status_code == 303


async def test_the_payments_list_pages_by_the_last_payment_shown(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from minipay.server.console import _routes

    monkeypatch.setattr(_routes, "PAGE_SIZE", 2)
    made = [(await world.create_payment(SUB1))["out_trade_no"] for _ in range(3)]
    await sign_in(world, SUB1)
    first = (await world.api.get("/console/payments")).text
    on_first = {n for n in made if n in first}
    assert len(on_first) == 2
    found = re.search(r'href="([^"]+)" rel="next"', first)
    assert found, first
    second = (await world.api.get(found.group(1).replace("&amp;", "&"))).text
    assert {n for n in made if n in second} == set(made) - on_first
    assert 'rel="next"' not in second
    assert "First page" in second
    # A cursor the key cannot see starts from the first page again.
    other = await world.create_payment(SUB2)
    again = (await world.api.get("/console/payments", params={"after": other["id"]})).text
    assert {n for n in made if n in again} == on_first
