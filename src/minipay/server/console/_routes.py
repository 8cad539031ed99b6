"""The console's routes (mounted by ``create_app`` under ``/console``)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from minipay._web import PAGE_HEADERS, stylesheet
from minipay.protocol import FieldError, parse_major
from minipay.server.auth import key_owner
from minipay.server.bootstrap import Container
from minipay.server.console._overview import (
    attention,
    bar_chart,
    buckets,
    day_report,
    recent_deliveries,
    recent_runs,
    retry_delivery,
)
from minipay.server.console._queries import (
    PaymentFilter,
    payment_events,
    payment_refunds,
    payment_webhooks,
    search_payments,
)
from minipay.server.console._render import render
from minipay.server.console._session import COOKIE, LIFETIME, ConsoleSession, SessionCodec, derive_secret, same_origin
from minipay.server.console._throttle import SignInThrottle
from minipay.server.domain import PaymentStatus
from minipay.server.paging import read_page
from minipay.server.services import InvalidRequest, NotFound, Principal, ServiceError
from minipay.server.webhooks import list_endpoints

__all__ = ["build_console_router"]

PAGE_SIZE = 25
_MAX_FORM = 16 * 1024


class _Viewer:
    """The signed-in caller of one request."""

    def __init__(self, principal: Principal, session: ConsoleSession, csrf: str) -> None:
        self.principal = principal
        self.session = session
        self.csrf = csrf

    @property
    def scope(self) -> str | None:
        return self.principal.sub_mch_id

    @property
    def label(self) -> str:
        return "admin" if self.principal.is_admin else f"sub-merchant {self.principal.sub_mch_id}"


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, "Referrer-Policy": "same-origin"})


def _parse_day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def build_console_router(container: Container) -> APIRouter:
    """The ``/console`` pages of one service app (its container: settings, database, use cases)."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    services = container.services
    settings = container.settings
    public = settings.public_base_url.rstrip("/")
    allowed_origins = [public] if public else []
    secure_cookie = public.startswith("https://")
    sub_ids = [s.sub_mch_id for s in settings.sub_merchants]
    throttle = SignInThrottle(limit=settings.console_signin_limit, window=settings.console_signin_window)

    def codec_for(request: Request) -> tuple[SessionCodec, dict[str, Principal]]:
        state = request.app.state
        cached = getattr(state, "console_codec", None)
        if cached is None:
            keys: list[tuple[bytes, Principal]] = state.auth_keys
            codec = SessionCodec(derive_secret(k for k, _ in keys))
            cached = (codec, {codec.fingerprint(k): who for k, who in keys})
            state.console_codec = cached
        return cached

    def viewer(request: Request) -> _Viewer | None:
        codec, principals = codec_for(request)
        session = codec.read(request.cookies.get(COOKIE))
        if session is None:
            return None
        principal = principals.get(session.fingerprint)
        if principal is None:
            return None
        return _Viewer(principal, session, codec.csrf_token(session))

    def page(request: Request, name: str, me: _Viewer | None, status: int = 200, **context: Any) -> HTMLResponse:
        return _html(
            render(
                name,
                me=me,
                path=request.url.path,
                sub_ids=sub_ids,
                statuses=[s.value for s in PaymentStatus],
                **context,
            ),
            status,
        )

    def to_login() -> Response:
        return RedirectResponse("/console/login", status_code=303)

    async def form(request: Request) -> dict[str, str] | None:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > _MAX_FORM):
            return None
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return None
        body = await request.body()
        if len(body) > _MAX_FORM:
            return None
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}

    def refused(request: Request, me: _Viewer | None) -> HTMLResponse:
        return page(
            request,
            "error.html",
            me,
            403,
            title="Refused",
            message="This form was not sent from the console's own pages (cross-site request refused).",
        )

    Handler = Callable[[Request, _Viewer, dict[str, str]], Awaitable[Response]]

    async def guarded_post(request: Request, handler: Handler) -> Response:
        """Every state-changing form: own origin, a signed-in session, and its CSRF token."""
        me = viewer(request)
        if not same_origin(request, allowed_origins):
            return refused(request, me)
        if me is None:
            return to_login()
        fields = await form(request)
        if fields is None or not hmac.compare_digest(fields.get("csrf", ""), me.csrf):
            return refused(request, me)
        try:
            return await handler(request, me, fields)
        except NotFound as exc:
            return page(request, "error.html", me, 404, title="Not found", message=exc.message)
        except ServiceError as exc:
            payment_id = request.path_params.get("payment_id")
            if payment_id:
                return await _detail(request, me, payment_id, error=exc.message, status=exc.status)
            return page(request, "error.html", me, exc.status, title="Refused", message=exc.message)

    # -- assets -----------------------------------------------------------------------------------------

    router.get("/static/minipay.css")(stylesheet)

    # -- sign-in ----------------------------------------------------------------------------------------

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        if viewer(request) is not None:
            return RedirectResponse("/console", status_code=303)
        return page(request, "login.html", None, error=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not same_origin(request, allowed_origins):
            return refused(request, None)
        client = request.client.host if request.client else "unknown"
        wait = throttle.retry_after(client)
        if wait is not None:  # too many wrong keys from here: no key is compared until the wait is over
            slowed = page(
                request,
                "login.html",
                None,
                429,
                error=f"Too many failed sign-ins from your address. Try again in {wait} seconds.",
            )
            slowed.headers["Retry-After"] = str(wait)
            return slowed
        fields = await form(request)
        presented = (fields or {}).get("api_key", "").strip().encode()
        codec, _ = codec_for(request)
        if not presented or key_owner(request, presented) is None:
            throttle.failed(client)
            return page(request, "login.html", None, 401, error="That API key is not valid here.")
        throttle.succeeded(client)
        response = RedirectResponse("/console", status_code=303)
        response.set_cookie(
            COOKIE,
            codec.issue(presented),
            max_age=LIFETIME,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=secure_cookie,
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        async def run(request: Request, me: _Viewer, fields: dict[str, str]) -> Response:
            response = RedirectResponse("/console/login", status_code=303)
            response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict", secure=secure_cookie)
            return response

        return await guarded_post(request, run)

    # -- payments ---------------------------------------------------------------------------------------

    @router.get("")
    async def home(request: Request) -> Response:
        if viewer(request) is None:
            return to_login()
        return RedirectResponse("/console/overview", status_code=303)

    @router.get("/payments")
    async def payments(request: Request) -> Response:
        me = viewer(request)
        if me is None:
            return to_login()
        q = request.query_params
        day_from, day_to = _parse_day(q.get("from")), _parse_day(q.get("to"))
        status = q.get("status") or None
        if status is not None and status not in {s.value for s in PaymentStatus}:
            status = None
        filters = PaymentFilter(
            status=status,
            sub_mch_id=(q.get("sub_mch_id") or None) if me.principal.is_admin else None,
            created_gte=datetime.combine(day_from, time(), UTC) if day_from else None,
            created_lt=datetime.combine(day_to, time(), UTC) + timedelta(days=1) if day_to else None,
            out_trade_no=(q.get("out_trade_no") or "").strip()[:64] or None,
            transaction_id=(q.get("transaction_id") or "").strip()[:64] or None,
        )
        cursor = q.get("after")
        try:
            after = await services.payment_anchor(me.principal, cursor)
        except InvalidRequest:
            after = None  # a payment no longer visible: back to the first page
        found = await read_page(
            lambda n: search_payments(container.uow_factory, scope=me.scope, filters=filters, after=after, limit=n),
            PAGE_SIZE,
        )
        kept = {k: v for k, v in q.items() if k != "after" and v}
        next_url = None
        if found.next_cursor is not None:
            next_url = "/console/payments?" + urlencode({**kept, "after": found.next_cursor})
        return page(
            request,
            "payments.html",
            me,
            payments=found.rows,
            q=q,
            next_url=next_url,
            first_url=("/console/payments?" + urlencode(kept) if cursor else None),
        )

    async def _detail(
        request: Request,
        me: _Viewer,
        payment_id: str,
        *,
        notice: str | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        try:
            payment = await services.get_payment(me.principal, payment_id)
        except NotFound:
            return page(request, "error.html", me, 404, title="Not found", message="No such payment.")
        events = await payment_events(container.uow_factory, payment.id)
        refunds = await payment_refunds(container.uow_factory, payment.id)
        webhooks = await payment_webhooks(container.uow_factory, payment.id, scope=me.scope)
        return page(
            request,
            "payment.html",
            me,
            status,
            p=payment,
            events=events,
            refunds=refunds,
            webhooks=webhooks,
            notice=notice,
            error=error,
            idem=secrets.token_urlsafe(12),
        )

    @router.get("/payments/{payment_id}")
    async def payment_detail(request: Request, payment_id: str) -> Response:
        me = viewer(request)
        if me is None:
            return to_login()
        return await _detail(request, me, payment_id)

    @router.post("/payments/{payment_id}/close")
    async def close(request: Request, payment_id: str) -> Response:
        async def run(request: Request, me: _Viewer, fields: dict[str, str]) -> Response:
            payment = await services.close_payment(me.principal, payment_id)
            return await _detail(request, me, payment.id, notice=f"Payment is {payment.status.value}.")

        return await guarded_post(request, run)

    @router.post("/payments/{payment_id}/sync")
    async def sync(request: Request, payment_id: str) -> Response:
        async def run(request: Request, me: _Viewer, fields: dict[str, str]) -> Response:
            payment = await services.sync_payment(me.principal, payment_id)
            return await _detail(request, me, payment.id, notice=f"WeChat queried: payment is {payment.status.value}.")

        return await guarded_post(request, run)

    @router.post("/payments/{payment_id}/refund")
    async def refund(request: Request, payment_id: str) -> Response:
        async def run(request: Request, me: _Viewer, fields: dict[str, str]) -> Response:
            payment = await services.get_payment(me.principal, payment_id)
            try:
                amount = parse_major(fields.get("amount", ""), payment.currency)
            except (FieldError, ValueError):
                return await _detail(
                    request,
                    me,
                    payment.id,
                    status=400,
                    error=f"Give the refund amount in {payment.currency}, e.g. 1.50.",
                )
            key = fields.get("idempotency_key", "").strip()[:64] or secrets.token_urlsafe(12)
            reason = fields.get("reason", "").strip() or None
            made, _created = await services.create_refund(
                me.principal, payment.id, amount, reason, f"console:{me.session.nonce}:{key}"
            )
            return await _detail(request, me, payment.id, notice=f"Refund {made.out_refund_no} is {made.status.value}.")

        return await guarded_post(request, run)

    # -- overview ---------------------------------------------------------------------------------------

    @router.get("/overview")
    async def overview(request: Request) -> Response:
        me = viewer(request)
        if me is None:
            return to_login()
        now = container.clock.now()
        hours = await buckets(container.uow_factory, scope=me.scope, now=now, hourly=True)
        days = await buckets(container.uow_factory, scope=me.scope, now=now, hourly=False)
        counts = await attention(container.uow_factory, scope=me.scope, now=now)
        refused = 0.0
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            for family in metrics.notifications.collect():
                refused += sum(
                    s.value
                    for s in family.samples
                    if s.name.endswith("_total") and s.labels.get("outcome", "").startswith("refused")
                )
        hourly_svg = bar_chart(hours, title="Payments per hour, last 24 hours (UTC)", every=3)
        daily_svg = bar_chart(days, title="Payments per day, last 30 days (UTC)", every=5)
        return page(
            request,
            "overview.html",
            me,
            counts=counts,
            refused=int(refused),
            hourly=Markup(hourly_svg),  # noqa: S704 (numbers and our own labels only)
            daily=Markup(daily_svg),  # noqa: S704
            hours=hours,
            days=days,
        )

    # -- reconciliation ---------------------------------------------------------------------------------

    @router.get("/reconciliation")
    async def reconciliation(request: Request) -> Response:
        me = viewer(request)
        if me is None:
            return to_login()
        runs = await recent_runs(container.uow_factory, scope=me.scope)
        day = _parse_day(request.query_params.get("date"))
        if day is None and runs:
            day = runs[0]["bill_date"]
        report = None
        if day is not None:
            report = await day_report(container.uow_factory, day, scope=me.scope)
        return page(request, "reconciliation.html", me, runs=runs, day=day, report=report)

    # -- webhooks ---------------------------------------------------------------------------------------

    @router.get("/webhooks")
    async def webhooks(request: Request, notice: str | None = None) -> Response:
        me = viewer(request)
        if me is None:
            return to_login()
        endpoints = await list_endpoints(container.uow_factory, sub_mch_id=me.scope)
        deliveries = await recent_deliveries(container.uow_factory, scope=me.scope)
        return page(request, "webhooks.html", me, endpoints=endpoints, deliveries=deliveries, notice=notice)

    @router.post("/webhooks/deliveries/{delivery_id}/retry")
    async def retry(request: Request, delivery_id: int) -> Response:
        async def run(request: Request, me: _Viewer, fields: dict[str, str]) -> Response:
            if not await retry_delivery(container.uow_factory, delivery_id, scope=me.scope, now=container.clock.now()):
                raise NotFound("no such failed delivery")
            return RedirectResponse("/console/webhooks?retried=1", status_code=303)

        return await guarded_post(request, run)

    return router
