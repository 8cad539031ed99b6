"""The pages of ``/try`` (server-rendered, Jinja2 autoescape) and the shop backend's routes."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from minipay._web import stylesheet, templates
from minipay.protocol import CHINA_TZ, format_major, parse_major
from minipay.simulator._shop import TEST_USERS, ShopBackend, ShopError, ShopSession, catalogue

__all__ = ["build_router"]

_HERE = Path(__file__).parent
SCRIPT = _HERE / "static" / "try.js"
COOKIE = "minipay_try"
#: Payment statuses after which the mini program stops asking.
FINAL = frozenset({"succeeded", "closed", "partially_refunded", "refunded"})
#: The clock panel's steps: seconds (or ``NEXT_BILL``), label, what it shows.
NEXT_BILL = "next-bill"
#: When "next day" lands: WeChat publishes a day's bill at 09:00 China time on T+1 and the service's
#: worker fetches it from 10:00 (its default ``bill_ready_time``); a few minutes past that it is in.
BILL_FETCHED = time(10, 5)
CLOCK_STEPS: tuple[tuple[int | str, str, str], ...] = (
    (60, "+1 min", "notification retries, a refund completes"),
    (31 * 60, "+31 min", "an unpaid order expires (30 min)"),
    (NEXT_BILL, "Next day, 10:05", "today's bill is published, downloaded and reconciled"),
)


def seconds_to_next_bill(now: datetime) -> float:
    """Seconds from ``now`` to 10:05 China time on the next China day: by then the bill of the China
    day ``now`` is in has been published and fetched. (A flat +24 h would not do: before 10:00 China
    time it lands before the bill is there.)"""
    day = now.astimezone(CHINA_TZ).date() + timedelta(days=1)
    return (datetime.combine(day, BILL_FETCHED, tzinfo=CHINA_TZ) - now).total_seconds()


def china_time(value: Any) -> str:
    if not value:
        return "—"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if parsed.tzinfo is None:
        return str(value)
    return parsed.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


_CLOSING_TAG = re.compile(r"(<xml>|</[A-Za-z0-9_]+>)(?=<)")


def xml_lines(text: str | None) -> str:
    """A flat WeChat XML document one element a line (only line breaks are added)."""
    return _CLOSING_TAG.sub("\\1\n", text or "")


def _html(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    template = templates(_HERE / "templates", china_time=china_time, xml_lines=xml_lines).get_template(name)
    return HTMLResponse(str(template.render(**context)), status_code=status)


def _cross_site(request: Request) -> str | None:
    """Why a browser's POST comes from another site (None: same origin, or not a browser)."""
    fetch_site = request.headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    origin = origin.strip().lower()
    if origin == "null" or origin.partition("://")[2] != request.headers.get("host", "").strip().lower():
        return "Origin is not this page's own address"
    return None


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form (the pages post nothing else; no multipart parser needed)."""
    body = (await request.body())[:65_536]
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def build_router(backend: ShopBackend) -> APIRouter:
    """The simulator's routes under ``/try`` (sandbox mode only: ``minipay serve`` adds them)."""
    router = APIRouter(prefix="/try", include_in_schema=False)
    sandbox_origin = "{0.scheme}://{0.netloc}".format(urlsplit(backend.sandbox_url))

    def session_of(request: Request) -> ShopSession | None:
        token = request.cookies.get(COOKIE)
        return backend.sessions.get(token) if token else None

    async def page(
        request: Request,
        view: str,
        *,
        status: int = 200,
        error: str | None = None,
        payment: dict[str, Any] | None = None,
        **extra: Any,
    ) -> HTMLResponse:
        session = session_of(request)
        shop = backend.shops.get(session.sub_mch_id) if session else None
        try:
            clock = await backend.clock()
        except ShopError:
            clock = {}
        out_trade_no = payment["out_trade_no"] if payment else None
        wire = await backend.wire(out_trade_no, payment["id"] if payment else None)
        context = {
            "view": view,
            "error": error,
            "session": session,
            "shop": shop,
            "shops": list(backend.shops.values()),
            "users": TEST_USERS,
            "products": catalogue(shop.currency) if shop else [],
            "payment": payment,
            "clock": clock,
            "clock_steps": CLOCK_STEPS,
            "wire": wire,
            "wire_query": urlencode({"out_trade_no": out_trade_no, "payment": payment["id"]}) if payment else "",
            "sandbox_origin": sandbox_origin,
            "back": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **extra,
        }
        response = _html("try.html", status, **context)
        response.headers["Cache-Control"] = "no-store"
        return response

    async def guarded(request: Request) -> Response | None:
        reason = _cross_site(request)
        if reason is not None:
            return JSONResponse({"error": f"cross-site request refused: {reason}"}, status_code=403)
        return None

    @router.get("")
    @router.get("/")
    async def home(request: Request) -> Response:
        return await page(request, "shop")

    @router.post("/choose")
    async def choose(request: Request) -> Response:
        if (refused := await guarded(request)) is not None:
            return refused
        form = await _form(request)
        try:
            token, _ = backend.new_session(form.get("shop", ""), form.get("user", ""))
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)
        response = RedirectResponse("/try", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/try")
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        if (refused := await guarded(request)) is not None:
            return refused
        session = session_of(request)
        if session is None:
            return await page(request, "shop", status=409, error="Choose a mini program and a payer first.")
        try:
            await backend.login(session)
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)
        return RedirectResponse("/try", status_code=303)

    @router.post("/buy")
    async def buy(request: Request) -> Response:
        if (refused := await guarded(request)) is not None:
            return refused
        session = session_of(request)
        if session is None:
            return await page(request, "shop", status=409, error="Choose a mini program and a payer first.")
        form = await _form(request)
        try:
            payment = await backend.buy(session, form.get("product", ""))
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)
        return RedirectResponse(f"/try/pay/{payment['id']}", status_code=303)

    async def _payment_or_page(request: Request, payment_id: str, sync: bool = False) -> dict[str, Any] | Response:
        try:
            return await backend.payment(payment_id, sync=sync)
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)

    @router.get("/pay/{payment_id}")
    async def pay(request: Request, payment_id: str) -> Response:
        payment = await _payment_or_page(request, payment_id)
        if isinstance(payment, Response):
            return payment
        params = payment.get("pay_params")
        if payment["status"] != "pending" or not params:
            return RedirectResponse(f"/try/result/{payment_id}", status_code=303)
        return_to = f"{backend.service_url}/try/result/{payment_id}"
        query = {"appId": payment["sub_appid"], **params, "return_to": return_to}
        sheet_url = f"{backend.sandbox_url}/sandbox/cashier?{urlencode(query)}"
        return await page(request, "pay", payment=payment, sheet_url=sheet_url, pay_params=params)

    async def _result_context(payment_id: str, sync: bool) -> dict[str, Any]:
        payment = await backend.payment(payment_id, sync=sync)
        refunds = await backend.refunds(payment_id)
        left = payment["amount"] - payment["amount_refunded"]
        return {
            "payment": payment,
            "refunds": refunds,
            "final": payment["status"] in FINAL,
            "refundable": left if payment["status"] in ("succeeded", "partially_refunded") else 0,
            "refundable_text": format_major(left, payment["currency"]),
        }

    @router.get("/result/{payment_id}")
    async def result(request: Request, payment_id: str, errMsg: str = "") -> Response:
        try:
            context = await _result_context(payment_id, sync=False)
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)
        return await page(request, "result", err_msg=errMsg, **context)

    @router.get("/result/{payment_id}/status")
    async def result_status(payment_id: str, sync: bool = False) -> Response:
        """The status card alone: what the mini program's polling asks the shop backend."""
        try:
            context = await _result_context(payment_id, sync=sync)
        except ShopError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        response = _html("_status.html", **context)
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post("/refund/{payment_id}")
    async def refund(request: Request, payment_id: str) -> Response:
        if (refused := await guarded(request)) is not None:
            return refused
        form = await _form(request)
        try:
            payment = await backend.payment(payment_id)
            try:
                amount = parse_major(form.get("amount", "").strip(), payment["currency"])
            except ValueError:
                raise ShopError(f"the refund amount must be a number of {payment['currency']}") from None
            await backend.refund(payment_id, amount)
        except ShopError as exc:
            try:
                context = await _result_context(payment_id, sync=False)
            except ShopError:
                return await page(request, "shop", status=exc.status, error=exc.message)
            return await page(request, "result", status=exc.status, error=exc.message, err_msg="", **context)
        return RedirectResponse(f"/try/result/{payment_id}", status_code=303)

    @router.post("/clock")
    async def clock(request: Request) -> Response:
        if (refused := await guarded(request)) is not None:
            return refused
        form = await _form(request)
        back = form.get("back", "/try")
        if not back.startswith("/try") or back.startswith("//"):
            back = "/try"
        try:
            if form.get("seconds") == NEXT_BILL:
                seconds = seconds_to_next_bill(datetime.fromisoformat((await backend.clock())["now"]))
            else:
                seconds = float(form.get("seconds", ""))
                if not 0 < seconds <= 366 * 24 * 3600:
                    raise ValueError
        except ValueError:
            return await page(request, "shop", status=400, error="Advance the clock by 1 second to a year.")
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)
        try:
            await backend.clock(seconds)
        except ShopError as exc:
            return await page(request, "shop", status=exc.status, error=exc.message)
        return RedirectResponse(back, status_code=303)

    @router.get("/wire")
    async def wire(out_trade_no: str | None = None, payment: str | None = None) -> Response:
        """The wire panel's list alone (the page's script polls it)."""
        response = _html("_wire.html", wire=await backend.wire(out_trade_no, payment))
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post("/webhook")
    async def webhook(request: Request) -> Response:
        """The shop's webhook endpoint, registered with the service for every sub-merchant."""
        problem = backend.receive_webhook(await request.body(), request.headers.get("minipay-signature", ""))
        if problem is not None:
            return JSONResponse({"error": problem}, status_code=400)
        return JSONResponse({"ok": True})

    router.get("/static/minipay.css")(stylesheet)

    @router.get("/static/try.js")
    async def script() -> Response:
        return FileResponse(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "max-age=300"})

    return router
