"""A small server-rendered dashboard at ``/sandbox/``: plain HTML forms, no build step."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from minipay.protocol import CHINA_TZ, build_pay_params, to_unix
from minipay.sandbox._backend import Backend
from minipay.sandbox._errors import ControlError

__all__ = ["dashboard_routes"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3} form{display:inline} .msg{background:#ffd;padding:.5em;border:1px solid #cc9}
code{font-size:12px}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _short(value: datetime) -> str:
    return value.astimezone(CHINA_TZ).strftime("%m-%d %H:%M:%S")


def _button(action: str, label: str, **fields: Any) -> str:
    hidden = "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items())
    return f'<form method="post" action="/sandbox/ui/{action}">{hidden}<button>{_e(label)}</button></form>'


def _render(backend: Backend, message: str | None) -> str:
    now = backend.now()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Minipay sandbox</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Minipay sandbox</h1>",
        f"<p>Virtual time: <b>{_e(now.astimezone(CHINA_TZ).strftime('%Y-%m-%d %H:%M:%S'))}</b> (China time) ",
        '<form method="post" action="/sandbox/ui/advance"><input name="seconds" size="6" value="60"> s ',
        "<button>advance clock</button></form> ",
        _button("advance", "+1 h", seconds=3600),
        _button("advance", "+25 h", seconds=90000),
        "</p>",
    ]
    if message:
        parts.append(f'<p class="msg">{_e(message)}</p>')
    parts.append("<h2>World (test credentials)</h2><table><tr><th>appid</th><th>mch_id</th><th>api_key</th>"
                 "<th>sub_mch_id</th><th>settlement</th><th>sub_appid</th><th>app_secret</th></tr>")  # fmt: skip
    for inst in backend.config.institutions:
        for sub in inst.sub_merchants:
            parts.append(
                f"<tr><td>{_e(inst.appid)}</td><td>{_e(inst.mch_id)}</td><td><code>{_e(inst.api_key)}</code></td>"
                f"<td>{_e(sub.sub_mch_id)}</td><td>{_e(sub.settlement_currency)}</td><td>{_e(sub.sub_appid)}</td>"
                f"<td><code>{_e(sub.app_secret)}</code></td></tr>"
            )
    parts.append("</table>")
    parts.append("<h2>Orders</h2><table><tr><th>sub_mch_id</th><th>out_trade_no</th><th>amount</th>"
                 "<th>state</th><th>transaction_id</th><th>created</th><th></th></tr>")  # fmt: skip
    for order in backend.orders.values():
        state = backend.trade_state(order)
        actions = ""
        if state == "NOTPAY":
            actions = _button("pay", "pay", sub_mch_id=order.sub_mch_id, out_trade_no=order.out_trade_no) + _button(
                "close", "cancel (close)", sub_mch_id=order.sub_mch_id, out_trade_no=order.out_trade_no
            )
        parts.append(
            f"<tr><td>{_e(order.sub_mch_id)}</td><td>{_e(order.out_trade_no)}</td>"
            f"<td>{_e(order.total_fee)} {_e(order.fee_type)}</td><td>{_e(state)}</td>"
            f"<td>{_e(order.transaction_id)}</td><td>{_e(_short(order.created_at))}</td>"
            f"<td>{actions}</td></tr>"
        )
    parts.append("</table><h2>Refunds</h2><table><tr><th>out_refund_no</th><th>out_trade_no</th><th>refund_fee</th>"
                 "<th>cash_refund_fee (CNY)</th><th>status</th><th>completes / completed</th></tr>")  # fmt: skip
    for refund in backend.refunds.values():
        when = refund.success_time or refund.due_at
        parts.append(
            f"<tr><td>{_e(refund.out_refund_no)}</td><td>{_e(refund.out_trade_no)}</td>"
            f"<td>{_e(refund.refund_fee)} {_e(refund.refund_fee_type)}</td><td>{_e(refund.cash_refund_fee)}</td>"
            f"<td>{_e(refund.status)}</td><td>{_e(when.astimezone(CHINA_TZ).strftime('%m-%d %H:%M:%S'))}</td></tr>"
        )
    parts.append("</table><h2>Notifications</h2><table><tr><th>id</th><th>kind</th><th>out_trade_no</th><th>url</th>"
                 "<th>mode</th><th>state</th><th>next attempt</th><th>attempts</th><th></th></tr>")  # fmt: skip
    for n in backend.notifications:
        attempts = "<br>".join(
            f"#{a.n} {_e(_short(a.at))} {_e(a.status)} <b>{_e(a.verdict)}</b>"
            f"{' (dup)' if a.duplicate else ''}{' (resend)' if a.resend else ''}"
            f" <code>{_e(a.reply[:60] or a.error)}</code>"
            for a in n.attempts
        )
        nxt = n.next_due.astimezone(CHINA_TZ).strftime("%m-%d %H:%M:%S") if n.next_due and n.state == "pending" else ""
        parts.append(
            f"<tr><td>{n.id}</td><td>{_e(n.kind)}</td><td>{_e(n.out_trade_no)}</td><td>{_e(n.url)}</td>"
            f"<td>{_e(n.mode)}</td><td>{_e(n.state)}</td><td>{_e(nxt)}</td><td>{attempts}</td>"
            f"<td>{_button('resend', 'resend', id=n.id)}</td></tr>"
        )
    parts.append(
        "</table><p>JSON: <a href='/sandbox/state'>state</a> · <a href='/sandbox/requests'>requests</a> · "
        "<a href='/sandbox/merchants'>merchants</a> · <a href='/sandbox/notifications'>notifications</a></p>"
        "</body></html>"
    )
    return "".join(parts)


async def dashboard(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    return HTMLResponse(_render(backend, request.query_params.get("msg")))


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(raw).items()}


async def ui_action(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    action = request.path_params["action"]
    form = await _form(request)
    try:
        message = await _run(backend, action, form)
    except ControlError as exc:
        message = exc.message
    return RedirectResponse(f"/sandbox/?msg={quote(message)}", status_code=303)


async def _run(backend: Backend, action: str, form: dict[str, str]) -> str:
    if action == "advance":
        try:
            seconds = float(form.get("seconds", "0"))
        except ValueError:
            raise ControlError("seconds must be a number") from None
        await backend.advance_by(seconds)
        return f"clock advanced by {seconds:g} s"
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
        return f"{form.get('out_trade_no')} closed"
    if action == "resend":
        try:
            n = await backend.resend(int(form.get("id", "0")))
        except ValueError:
            raise ControlError("id must be an integer") from None
        return f"notification {n.id} resent: {n.attempts[-1].verdict}"
    raise ControlError(f"unknown action {action!r}", 404)


def dashboard_routes() -> list[Route]:
    return [
        Route("/sandbox/", dashboard, methods=["GET"]),
        Route("/sandbox", dashboard, methods=["GET"]),
        Route("/sandbox/ui/{action}", ui_action, methods=["POST"]),
    ]
