"""The sandbox dashboard at ``/sandbox/``: server-rendered pages (Jinja2, every value escaped) with
plain HTML forms, so everything works without JavaScript; a small script only adds an optional
auto-refresh. The look is the service console's: the one stylesheet in ``minipay/_web/``, which the
sandbox serves at ``/sandbox/static/minipay.css`` (read as a file: the sandbox imports no service code).

Forms post to ``/sandbox/ui/<action>`` and redirect back (POST, redirect, GET). Like every
state-changing ``/sandbox/*`` call they pass the cross-site guard (``_app.CrossSiteGuard``): a page
on another site cannot pay, close, fault or move the clock of a developer's sandbox.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from minipay._web import PAGE_HEADERS, templates
from minipay.protocol import CHINA_TZ, build_pay_params, to_unix
from minipay.sandbox._backend import Backend
from minipay.sandbox._errors import ControlError
from minipay.sandbox._faults import ENDPOINTS, LOGIN_FAULTS, XML_FAULTS

if TYPE_CHECKING:
    import jinja2

__all__ = ["dashboard_routes"]

_HERE = Path(__file__).parent
SCRIPT = _HERE / "static" / "dashboard.js"
_MAX_FORM = 16 * 1024
#: The page shows the newest this many orders, refunds and notifications (``/sandbox/state`` has all).
SHOWN = 200
#: After an action, the page scrolls back to the section it was taken in.
_SECTION = {
    "advance": "clock",
    "fault": "faults",
    "fault-remove": "faults",
    "faults-clear": "faults",
    "pay": "orders",
    "close": "orders",
    "resend": "notifications",
}


def _china(value: datetime | None, fmt: str = "%m-%d %H:%M:%S") -> str:
    return "—" if value is None else value.astimezone(CHINA_TZ).strftime(fmt)


def _environment() -> jinja2.Environment:
    """The sandbox's pages (the dashboard, the pay sheet and the wire share the templates folder)."""
    return templates(_HERE / "templates", china=_china)


def _render(backend: Backend, message: str | None, error: bool) -> str:
    world = [(inst, sub) for inst in backend.config.institutions for sub in inst.sub_merchants]
    orders = list(backend.orders.values())
    refunds = list(backend.refunds.values())
    notifications = backend.notifications
    template = _environment().get_template("dashboard.html")
    return str(
        template.render(
            now=backend.now(),
            message=message,
            error=error,
            world=world,
            orders=[(order, backend.trade_state(order)) for order in reversed(orders[-SHOWN:])],
            refunds=list(reversed(refunds[-SHOWN:])),
            notifications=list(reversed(notifications[-SHOWN:])),
            totals={"orders": len(orders), "refunds": len(refunds), "notifications": len(notifications)},
            shown=SHOWN,
            faults=list(backend.faults),
            endpoints=ENDPOINTS,
            xml_faults=sorted(XML_FAULTS),
            login_faults=sorted(LOGIN_FAULTS),
            sub_ids=[sub.sub_mch_id for _, sub in world],
        )
    )


async def dashboard(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    q = request.query_params
    return HTMLResponse(_render(backend, q.get("msg"), q.get("error") == "1"), headers=dict(PAGE_HEADERS))


async def script(request: Request) -> Response:
    return FileResponse(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "max-age=300"})


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise ControlError("form too large", 413)
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def ui_action(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    action = request.path_params["action"]
    failed = False
    try:
        message = await _run(backend, action, await _form(request))
    except ControlError as exc:
        message, failed = exc.message, True
    section = _SECTION.get(action, "top")
    url = f"/sandbox/?msg={quote(message)}{'&error=1' if failed else ''}#{section}"
    return RedirectResponse(url, status_code=303)


def _int(text: str | None, name: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise ControlError(f"{name} must be an integer") from None


async def _run(backend: Backend, action: str, form: dict[str, str]) -> str:
    if action == "advance":
        try:
            seconds = float(form.get("seconds", "0"))
        except ValueError:
            raise ControlError("seconds must be a number") from None
        await backend.advance_by(seconds)
        return f"Clock advanced by {seconds:g} s."
    if action == "fault":
        body: dict[str, Any] = {"endpoint": form.get("endpoint", ""), "fault": form.get("fault", "")}
        body["times"] = _int(form.get("times") or "1", "times")
        if form.get("sub_mch_id"):
            body["sub_mch_id"] = form["sub_mch_id"]
        if form.get("out_trade_no", "").strip():
            body["out_trade_no"] = form["out_trade_no"].strip()
        fault = backend.add_fault(body)
        return f"Fault {fault.id} on: {fault.endpoint} answers {fault.fault} ({fault.times}×)."
    if action == "fault-remove":
        fault_id = _int(form.get("id"), "id")
        kept = [f for f in backend.faults if f.id != fault_id]
        if len(kept) == len(backend.faults):
            raise ControlError(f"no fault {fault_id}", 404)
        backend.faults[:] = kept
        return f"Fault {fault_id} removed."
    if action == "faults-clear":
        backend.faults.clear()
        return "Every fault removed."
    if action == "pay":
        order = backend._find_order(form.get("out_trade_no", ""), form.get("sub_mch_id") or None)
        inst = backend.world.institution(order.mch_id)
        assert inst is not None
        params = build_pay_params(
            app_id=order.sub_appid,
            prepay_id=order.prepay_id,
            key=inst.key,
            sign_type=order.sign_type,
            timestamp=to_unix(backend.now()),
            nonce=backend.ids.nonce(),
        )
        answer = await backend.pay(dict(params))
        return f"{order.out_trade_no}: {answer['errMsg']}"
    if action == "close":
        backend.force_close(form.get("out_trade_no", ""), form.get("sub_mch_id") or None)
        return f"{form.get('out_trade_no')} closed."
    if action == "resend":
        n = await backend.resend(_int(form.get("id"), "id"))
        return f"Notification {n.id} resent: {n.attempts[-1].verdict}."
    raise ControlError(f"unknown action {action!r}", 404)


def dashboard_routes() -> list[Route]:
    return [
        Route("/sandbox/", dashboard, methods=["GET"]),
        Route("/sandbox", dashboard, methods=["GET"]),
        Route("/sandbox/static/dashboard.js", script, methods=["GET"]),
        Route("/sandbox/ui/{action}", ui_action, methods=["POST"]),
    ]
