"""The ops console in a real browser: headless Chromium (the system's, driven by Playwright) signs in,
finds a payment, refunds it, follows a reconciliation discrepancy to its payment, and is refused
where it must be, over the whole system (sandbox, service, worker, SQLite) served on loopback.

Every console page is also captured at desktop and phone width under ``build/screenshots/``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from minipay.server.worker import WorkerConfig
from tests.browser import accessibility_problems, screenshot
from tests.e2e.live import LiveStack, live_stack
from tests.e2e.stack import START, Stack

pytestmark = pytest.mark.browser

SUB1, SUB2 = "1900000110", "1900000111"
DAY = START.date()
NEXT_MORNING = START + timedelta(days=1, minutes=5)  # the bills of DAY are ready from 10:00 on DAY+1
NO_QUERIES = WorkerConfig(query_delay=timedelta(days=3), bill_lookback_days=1)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One system for the module: two paid payments of SUB1 on DAY (the sandbox's bill fault drops
    the last one from DAY's bill, so DAY's reconciliation reports it), one of SUB2, reconciled."""

    async def prepare(stack: Stack) -> dict[str, Any]:
        worker = stack.new_worker(NO_QUERIES, name="bills-only")
        first = await stack.create_payment(1000, description="Oolong <b>tea</b>")
        await stack.pay(first)
        await stack.advance(60)
        last = await stack.create_payment(2500, description="Pineapple bun")
        await stack.pay(last)  # the day's last trade: the injected fault drops it from the bill
        sub_appid = stack.settings.sub_merchant(SUB2).sub_appid
        code = (await stack.sandbox.post("/sandbox/login", json={"appid": sub_appid, "user": "bob"})).json()["code"]
        session = await stack.service.post("/v1/sessions", json={"code": code}, headers=stack.headers(SUB2))
        openid = session.json()["openid"]
        other = await stack.service.post(
            "/v1/payments",
            json={"amount": 800, "currency": "JPY", "description": "Matcha", "openid": openid},
            headers=stack.headers(SUB2, **{"Idempotency-Key": "browser-sub2"}),
        )
        assert other.status_code == 201, other.text
        await stack.fault(endpoint="downloadbill", fault="bill_missing_trade", sub_mch_id=SUB1)
        await stack.set_clock(NEXT_MORNING)
        await worker.run_until_idle()
        return {"first": first, "last": last, "other": other.json()}

    with live_stack(tmp_path_factory.mktemp("console")) as running:
        yield {"live": running, **running.run(prepare)}


def sign_in(page: Any, live: LiveStack, who: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{live.service_url}/console")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    page.get_by_label("API key").fill(live.stack.keys[who])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/console/overview$"))


def test_find_a_payment_by_out_trade_no_see_its_timeline_and_refund_it(page: Any, live: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    running: LiveStack = live["live"]

    async def paid(stack: Stack) -> dict[str, Any]:
        payment = await stack.create_payment(4200, description="Egg tart")
        await stack.pay(payment)
        return payment

    payment = running.run(paid)
    sign_in(page, running, SUB1)
    page.get_by_role("link", name="Payments").click()
    page.get_by_label("out_trade_no").fill(payment["out_trade_no"])
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    rows.get_by_role("link", name=payment["out_trade_no"]).click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(payment["out_trade_no"])
    expect(page.get_by_role("heading", level=1)).to_contain_text("succeeded")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("created")
    expect(timeline).to_contain_text("succeeded")

    page.get_by_label("Refund amount (HKD)").fill("12.50")
    page.get_by_label("Reason").fill("Broken lid")
    page.get_by_role("button", name="Refund", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Refund ")
    refund_row = page.get_by_role("table", name="Refunds").locator("tbody tr")
    expect(refund_row).to_have_count(1)
    expect(refund_row).to_contain_text("12.50 HKD")
    expect(refund_row).to_contain_text("Broken lid")

    async def refunds(stack: Stack) -> list[dict[str, Any]]:
        r = await stack.service.get(f"/v1/payments/{payment['id']}/refunds", headers=stack.headers())
        found: list[dict[str, Any]] = r.json()["data"]
        return found

    assert [(r["amount"], r["reason"]) for r in running.run(refunds)] == [(1250, "Broken lid")]


def test_the_discrepancy_of_an_injected_bill_fault_links_to_its_payment(page: Any, live: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    running: LiveStack = live["live"]
    last = live["last"]
    sign_in(page, running, "admin")
    page.get_by_role("link", name="Reconciliation").click()
    page.get_by_label("Bill day").fill(DAY.isoformat())
    page.get_by_role("button", name="Show").click()

    runs = page.get_by_role("table", name=f"Bill runs of {DAY.isoformat()}")
    expect(runs.locator("tr", has_text=SUB1)).to_contain_text("discrepancies")
    found = page.get_by_role("table", name="Discrepancies").locator("tbody tr")
    expect(found).to_have_count(1)
    expect(found).to_contain_text("missing_in_bill")
    found.get_by_role("link", name=last["out_trade_no"]).click()
    expect(page).to_have_url(re.compile(f"/console/payments/{last['id']}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(last["out_trade_no"])


def test_a_sub_merchant_cannot_open_another_sub_merchants_payment(page: Any, live: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    running: LiveStack = live["live"]
    sign_in(page, running, SUB2)
    own = page.goto(f"{running.service_url}/console/payments/{live['other']['id']}")
    assert own is not None
    assert own.status == 200
    response = page.goto(f"{running.service_url}/console/payments/{live['first']['id']}")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("alert")).to_have_text("No such payment.")
    expect(page.locator("body")).not_to_contain_text(live["first"]["out_trade_no"])


def test_a_console_form_posted_from_another_site_is_refused_and_changes_nothing(
    page: Any, live: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    running: LiveStack = live["live"]
    target = live["first"]
    sign_in(page, running, SUB1)
    page.goto(f"{running.service_url}/console/payments/{target['id']}")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert csrf
    action = f"{running.service_url}/console/payments/{target['id']}/refund"

    async def attack(request: Any) -> HTMLResponse:
        # Even with the session's CSRF token (say it leaked), a form from another origin is refused.
        return HTMLResponse(
            f'<!doctype html><form id="f" method="post" action="{html.escape(action)}">'
            f'<input name="csrf" value="{html.escape(csrf)}"><input name="amount" value="10.00">'
            '<input name="idempotency_key" value="evil"></form><script>document.getElementById("f").submit()</script>'
        )

    evil = running.serve(Starlette(routes=[Route("/", attack)]))
    port = evil.rsplit(":", 1)[1]
    # Another port of the same host (same site: the SameSite=Strict cookie is sent), and another
    # host name (cross-site: the cookie stays home). Both are refused.
    for origin in (evil, f"http://localhost:{port}"):
        with page.expect_navigation(url=action):
            page.goto(origin)
        expect(page.get_by_role("heading", level=1)).to_have_text("Refused")
        expect(page.get_by_role("alert")).to_contain_text("cross-site request refused")

    async def refunds(stack: Stack) -> list[dict[str, Any]]:
        r = await stack.service.get(f"/v1/payments/{target['id']}/refunds", headers=stack.headers())
        found: list[dict[str, Any]] = r.json()["data"]
        return found

    assert running.run(refunds) == []


PAGES = [
    ("overview", "/console/overview"),
    ("payments", "/console/payments"),
    ("payment", None),
    ("reconciliation", f"/console/reconciliation?date={DAY.isoformat()}"),
    ("webhooks", "/console/webhooks"),
]


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_every_console_page_fits_the_screen(width: str, request: pytest.FixtureRequest, live: dict[str, Any]) -> None:
    """Each page at desktop and phone width: nothing wider than the screen, every field labelled,
    text at WCAG AA contrast, no console error (a CSP refusal, a missing resource), and a screenshot
    of each under build/screenshots/."""
    from playwright.sync_api import expect

    page = request.getfixturevalue("page" if width == "desktop" else "phone_page")
    running: LiveStack = live["live"]
    problems: list[str] = []  # a CSP refusal (an inline style, say) is a console error
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{running.service_url}/console/login")
    shots: list[Path] = [screenshot(page, "console-signin")]
    assert accessibility_problems(page) == []
    page.get_by_label("API key").fill(running.stack.keys["admin"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/console/overview$"))
    for name, path in PAGES:
        page.goto(f"{running.service_url}{path or '/console/payments/' + live['last']['id']}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} is {overflow}px wider than the {width} screen"
        shots.append(screenshot(page, f"console-{name}"))
        assert accessibility_problems(page) == []
    assert all(p.stat().st_size > 0 for p in shots)
    assert problems == []
