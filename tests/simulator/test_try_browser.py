"""``/try`` in a real browser, driven as a person uses it: choose a shop and a payer, log in, buy,
pay on WeChat's pay sheet (or cancel, or run out of money), watch the result page and the wire,
refund, move the clock. Every page is also photographed at desktop and phone width."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tests.browser import accessibility_problems, screenshot
from tests.simulator.conftest import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOPS = {"Harbour Tea House": "1900000110", "Kyoto Sweets": "1900000111"}


def _open_shop(page: Any, served: Served, shop: str, user: str) -> None:
    page.goto(f"{served.service_url}/try")
    page.get_by_label("Mini program (sub-merchant)").select_option(SHOPS[shop])
    page.get_by_label("Payer (test WeChat user)").select_option(user)
    page.get_by_role("button", name="Open the mini program").click()


def _log_in(page: Any, *, keyboard: bool = False) -> str:
    from playwright.sync_api import expect

    button = page.get_by_role("button", name="Log in")
    if keyboard:  # Tab to it and press Enter, as a keyboard user does
        button.focus()
        page.keyboard.press("Enter")
    else:
        button.click()
    openid = page.get_by_test_id("openid")
    expect(openid).to_be_visible()
    return str(openid.inner_text())


def _sheet(page: Any) -> Any:
    return page.frame_locator("iframe.sheet-frame")


def _accessible(page: Any) -> None:
    """The page and, when it shows one, the pay sheet in its frame: labelled fields, AA contrast."""
    assert accessibility_problems(page) == []
    for frame in page.frames[1:]:
        assert accessibility_problems(frame) == [], frame.url


@pytest.mark.parametrize("viewport", ["page", "phone_page"])
def test_log_in_buy_pay_see_the_wire_and_refund(viewport: str, served: Served, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect

    page = request.getfixturevalue(viewport)
    assert any("/try" in line for line in served.banner), served.banner  # the banner links it
    _open_shop(page, served, "Harbour Tea House", "alice")
    screenshot(page, "try-shop")
    _accessible(page)
    openid = _log_in(page)
    # The openid is the one the sandbox issues for alice in this mini program.
    login = httpx2.post(f"{served.sandbox_url}/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "alice"})
    assert login.json()["openid"] == openid
    screenshot(page, "try-logged-in")
    _accessible(page)

    page.get_by_role("button", name="Buy Egg tarts, box of 6").click()
    sheet = _sheet(page)
    expect(sheet.get_by_role("heading", name="Harbour Tea House")).to_be_visible()
    expect(sheet.get_by_label("Amount")).to_have_text("52.50 HKD")
    expect(sheet.locator("dl")).to_contain_text("48.30 CNY")  # 52.50 HKD at 0.92
    expect(sheet.locator("dl")).to_contain_text("1 HKD = 0.92 CNY")
    screenshot(page, "try-pay-sheet")
    _accessible(page)

    sheet.get_by_role("button", name="Pay", exact=True).click()
    # The front-end result at once, then the backend's word once the notification arrived.
    expect(page.get_by_test_id("front-result")).to_contain_text("Payment done")
    expect(page.get_by_test_id("backend-status")).to_have_text("succeeded", timeout=20_000)
    wire = page.locator("#wire-list")
    expect(wire).to_contain_text("/pay/unifiedorder")
    expect(wire.locator("li.notification")).to_contain_text("ack", timeout=10_000)
    expect(wire.locator("li.webhook").first).to_contain_text("payment.succeeded", timeout=20_000)
    notification = wire.locator("li.notification").first
    notification.locator("summary").click()
    expect(notification.locator("pre").first).to_contain_text("<transaction_id>")
    expect(notification.locator("pre").last).to_contain_text("SUCCESS")
    screenshot(page, "try-paid")
    _accessible(page)

    page.get_by_label("Refund (HKD)").fill("10.00")
    page.get_by_role("button", name="Refund").click()
    expect(page.get_by_test_id("refund-status")).to_have_text("processing")
    page.get_by_role("button", name="+1 min").click()  # the sandbox completes the refund
    expect(page.get_by_test_id("refund-status")).to_have_text("succeeded", timeout=20_000)
    expect(page.get_by_test_id("backend-status")).to_have_text("partially_refunded")
    expect(page.locator("#wire-list")).to_contain_text("/secapi/pay/refund")
    screenshot(page, "try-refunded")
    _accessible(page)


def test_cancelling_on_the_pay_sheet_leaves_the_payment_open(phone_page: Any, served: Served) -> None:
    from playwright.sync_api import expect

    page = phone_page
    _open_shop(page, served, "Kyoto Sweets", "bob")
    _log_in(page)
    page.get_by_role("button", name="Buy Matcha, 40 g").click()
    sheet = _sheet(page)
    expect(sheet.get_by_label("Amount")).to_have_text("650 JPY")
    expect(sheet.locator("dl")).to_contain_text("31.20 CNY")  # 650 JPY at 0.048
    sheet.get_by_role("button", name="Cancel").click()
    expect(page.get_by_test_id("front-result")).to_contain_text("Payment cancelled")
    expect(page.get_by_test_id("front-result")).to_contain_text("requestPayment:fail cancel")
    expect(page.get_by_test_id("backend-status")).to_have_text("pending")
    screenshot(page, "try-cancelled")
    _accessible(page)

    # Paying it again works: the same order, a fresh sheet.
    page.get_by_role("link", name="Pay again").click()
    _sheet(page).get_by_role("button", name="Pay", exact=True).click()
    expect(page.get_by_test_id("backend-status")).to_have_text("succeeded", timeout=20_000)


def test_insufficient_balance_fails_the_payment_and_keeps_the_order_unpaid(page: Any, served: Served) -> None:
    from playwright.sync_api import expect

    _open_shop(page, served, "Harbour Tea House", "carol")
    _log_in(page, keyboard=True)
    page.get_by_role("button", name="Buy Tea set").click()
    _sheet(page).get_by_role("button", name="Insufficient balance").click()
    expect(page.get_by_test_id("front-result")).to_contain_text("Payment failed")
    expect(page.get_by_test_id("front-result")).to_contain_text("余额不足")
    expect(page.get_by_test_id("backend-status")).to_have_text("pending")
    out_trade_no = page.locator(".status-card code").first.inner_text()
    state = httpx2.get(f"{served.sandbox_url}/sandbox/state").json()
    [order] = [o for o in state["orders"] if o["out_trade_no"] == out_trade_no]
    assert order["trade_state"] == "NOTPAY"
    screenshot(page, "try-insufficient-balance")
    _accessible(page)


def test_the_pages_escape_what_they_show_and_refuse_cross_site_posts(page: Any, served: Served) -> None:
    # A webhook body and a wx.login answer are shown as text, never as markup.
    forged = httpx2.post(
        f"{served.service_url}/try/webhook",
        content=b'{"type": "<img src=x onerror=alert(1)>"}',
        headers={"Minipay-Signature": "t=1,v1=00"},
    )
    assert forged.status_code == 400
    page.goto(f"{served.service_url}/try")
    assert page.locator("#wire-list img").count() == 0
    from playwright.sync_api import expect

    expect(page.locator("#wire-list")).to_contain_text("<img src=x onerror=alert(1)>")
    refused = httpx2.post(
        f"{served.service_url}/try/clock", data={"seconds": "60"}, headers={"Origin": "https://evil.example"}
    )
    assert refused.status_code == 403


def test_the_clock_panel_expires_an_unpaid_order_and_brings_the_next_days_bill(page: Any, served: Served) -> None:
    from playwright.sync_api import expect

    _open_shop(page, served, "Kyoto Sweets", "alice")
    _log_in(page)
    page.get_by_role("button", name="Buy Wagashi box").click()
    _sheet(page).get_by_role("button", name="Cancel").click()
    expect(page.get_by_test_id("backend-status")).to_have_text("pending")
    before = page.get_by_test_id("clock").inner_text()
    page.get_by_role("button", name="+31 min").click()  # past the 30 minutes the payment had
    expect(page.get_by_test_id("clock")).not_to_have_text(before)
    expect(page.get_by_test_id("backend-status")).to_have_text("closed", timeout=20_000)
    expect(page.locator("#wire-list")).to_contain_text("/pay/closeorder", timeout=10_000)
    screenshot(page, "try-expired")
    _accessible(page)

    page.get_by_role("link", name="Back to the shop").click()
    page.get_by_role("button", name="Buy Tea bowl").click()
    _sheet(page).get_by_role("button", name="Pay", exact=True).click()
    expect(page.get_by_test_id("backend-status")).to_have_text("succeeded", timeout=20_000)
    paid = page.locator(".status-card code").first.inner_text()
    page.get_by_role("link", name="Back to the shop").click()
    page.get_by_role("button", name="Next day, 10:05").click()
    # The worker downloads and reconciles the day's bill of each sub-merchant: it is on the wire,
    # with the order just paid in it.
    bill = page.locator("#wire-list li.request", has_text="/pay/downloadbill").filter(has_text=paid)
    expect(bill.first).to_contain_text("bill", timeout=30_000)
