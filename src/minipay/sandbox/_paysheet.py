"""WeChat's pay sheet, as the WeChat client shows it when a mini program calls ``wx.requestPayment``.

``GET /sandbox/cashier?appId=&timeStamp=&nonceStr=&package=&signType=&paySign=`` renders the sheet
for those exact parameters (merchant name, what is bought, amount and currency, the CNY the payer's
wallet is charged at the sandbox's rate) with the payer's three choices: Pay, Cancel, and
"Insufficient balance". Each one is a form posted back to ``POST /sandbox/cashier``, which runs
``/sandbox/pay`` with the same five parameters and the outcome, then shows the result and hands
``wx.requestPayment``'s answer (``errMsg``) to the page that opened the sheet: ``postMessage`` to the
parent frame, and a link back to ``return_to`` (a loopback URL only) for browsers without scripts.

``GET /sandbox/wire`` is the sandbox's side of the wire in one list: every WeChat API request the
sandbox received with its reply (raw XML), and every notification attempt (the signed XML it sent
and the receiver's reply), oldest first.

Everything shown is escaped (Jinja2 autoescape): order descriptions and replies come from outside.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from minipay._web import money, stylesheet
from minipay.protocol import CHINA_TZ, cash_fee_cny
from minipay.sandbox._backend import Backend
from minipay.sandbox._cashier import PAY_OUTCOMES
from minipay.sandbox._dashboard import _environment
from minipay.sandbox._errors import ControlError

__all__ = ["PAY_PARAMS", "paysheet_routes", "safe_return_to", "wire_events"]

_HERE = Path(__file__).parent
#: The five parameters of ``wx.requestPayment`` (besides appId, which the client knows).
PAY_PARAMS = ("timeStamp", "nonceStr", "package", "signType", "paySign")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = str(_environment().get_template(name).render(**context))
    # The sheet is meant to be framed by the simulator (another loopback port), nothing else.
    headers = {"Content-Security-Policy": "frame-ancestors 'self' http://127.0.0.1:* http://localhost:*"}
    return HTMLResponse(html, status_code=status, headers=headers)


def safe_return_to(value: str | None) -> str | None:
    """``return_to`` when it is an http(s) URL on this machine (the sheet never links elsewhere)."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or host not in _LOOPBACK:
        return None
    return value


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _rate(currency: str, rate: int | None) -> str | None:
    """``1 HKD = 0.92 CNY`` (rates are CNY per major unit x 10^8)."""
    if rate is None or currency == "CNY":
        return None
    return f"1 {currency} = {(Decimal(rate) / 10**8).normalize():f} CNY"


def _sheet(backend: Backend, params: dict[str, str]) -> dict[str, Any]:
    """What the sheet shows for these parameters; ``error`` when WeChat's client would refuse them."""
    prepay_id = params.get("package", "").removeprefix("prepay_id=")
    order = backend.by_prepay.get(prepay_id)
    if order is None:
        return {"error": "prepay_id无效: no order has this prepay_id"}
    found = backend.world.mini_program(order.sub_appid)
    name = found[1].name if found and found[1].name else f"Merchant {order.sub_mch_id}"
    rate = 1 if order.fee_type == "CNY" else backend.world.rate(order.fee_type, backend.today())
    cny = cash_fee_cny(order.total_fee, order.fee_type, rate) if rate is not None else None
    wallet = backend.wallets.get(order.sub_openid, backend.config.rules.payer_balance)
    return {
        "error": None,
        "merchant": name,
        "description": order.params.get("body", ""),
        "amount": money(order.total_fee, order.fee_type),
        "cny": money(cny, "CNY") if cny is not None else None,
        "rate": _rate(order.fee_type, rate),
        "payer": order.user,
        "wallet": money(wallet, "CNY"),
        "state": backend.trade_state(order),
        "out_trade_no": order.out_trade_no,
    }


async def cashier_sheet(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    query = request.query_params
    params = {name: query.get(name, "") for name in PAY_PARAMS}
    sheet = _sheet(backend, params)
    return _render(
        "paysheet.html",
        sheet=sheet,
        params=params,
        app_id=query.get("appId", ""),
        return_to=safe_return_to(query.get("return_to")) or "",
    )


async def cashier_choice(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    raw = (await request.body()).decode("utf-8", "replace")
    form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
    outcome = form.get("outcome", "")
    if outcome not in PAY_OUTCOMES:
        raise ControlError(f"outcome must be one of {', '.join(PAY_OUTCOMES)}")
    params = {name: form.get(name, "") for name in PAY_PARAMS}
    sheet = _sheet(backend, params)
    answer = await backend.pay({**params, "outcome": outcome})
    return_to = safe_return_to(form.get("return_to"))
    back = None
    if return_to is not None:
        glue = "&" if urlsplit(return_to).query else "?"
        back = return_to + glue + urlencode({"errMsg": answer["errMsg"]})
    return _render(
        "paysheet_result.html",
        sheet=sheet,
        answer=answer,
        ok=answer["errMsg"] == "requestPayment:ok",
        back=back or "",
        target_origin=_origin(return_to) if return_to else "",
    )


def _iso(value: datetime) -> str:
    return value.isoformat()


def wire_events(backend: Backend, *, out_trade_no: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The requests and notification attempts the sandbox saw, oldest first (the last ``limit``)."""
    events: list[tuple[str, int, dict[str, Any]]] = []
    for entry in backend.journal:
        if out_trade_no and entry.get("out_trade_no") != out_trade_no:
            continue
        events.append(
            (
                entry["at"],
                0,
                {
                    "type": "request",
                    "at": entry["at"],
                    "endpoint": entry["endpoint"],
                    "path": entry["path"],
                    "out_trade_no": entry.get("out_trade_no"),
                    "request": entry.get("xml", ""),
                    "reply": entry.get("reply"),
                    "status": entry["status"],
                    "return_code": entry.get("return_code"),
                    "result_code": entry.get("result_code"),
                    "err_code": entry.get("err_code"),
                    "fault": entry.get("fault"),
                },
            )
        )
    for n in backend.notifications:
        if out_trade_no and n.out_trade_no != out_trade_no:
            continue
        for attempt in n.attempts:
            at = _iso(attempt.at)
            events.append(
                (
                    at,
                    1,
                    {
                        "type": "notification",
                        "at": at,
                        "notification_id": n.id,
                        "kind": n.kind,
                        "attempt": attempt.n,
                        "url": n.url,
                        "out_trade_no": n.out_trade_no,
                        "body": n.body.decode("utf-8", "replace"),
                        "status": attempt.status,
                        "reply": attempt.reply,
                        "verdict": attempt.verdict,
                        "error": attempt.error,
                    },
                )
            )
    events.sort(key=lambda e: (datetime.fromisoformat(e[0]).astimezone(CHINA_TZ), e[1]))
    chosen = [e[2] for e in events]
    return chosen[-limit:] if limit > 0 else []


async def wire(request: Request) -> Response:
    backend: Backend = request.app.state.sandbox
    try:
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        raise ControlError("limit must be an integer") from None
    out_trade_no = request.query_params.get("out_trade_no") or None
    return JSONResponse({"events": wire_events(backend, out_trade_no=out_trade_no, limit=limit)})


def paysheet_routes() -> list[Route]:
    return [
        Route("/sandbox/cashier", cashier_sheet, methods=["GET"]),
        Route("/sandbox/cashier", cashier_choice, methods=["POST"]),
        Route("/sandbox/wire", wire, methods=["GET"]),
        Route("/sandbox/static/minipay.css", stylesheet, methods=["GET"]),
    ]
