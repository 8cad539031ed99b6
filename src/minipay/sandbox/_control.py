"""The control API under ``/sandbox/`` (JSON): the mini program's side, time, faults, inspection.

Shapes are documented in ``docs/sandbox.md``; keep both in step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from minipay.protocol import CHINA_TZ, ApiKey, SignatureError, XMLError, decode_xml, explain_signature
from minipay.sandbox._backend import Backend
from minipay.sandbox._errors import ControlError

__all__ = ["clock_json", "control_routes"]


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.sandbox
    return backend


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ControlError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ControlError("the body must be a JSON object")
    return data


def clock_json(backend: Backend) -> dict[str, Any]:
    now = backend.now()
    return {
        "now": now.isoformat(),
        "china_time": now.astimezone(CHINA_TZ).isoformat(),
        "realtime": backend.clock.realtime,
        "speed": backend.clock.speed,
    }


async def merchants(request: Request) -> Response:
    backend = _backend(request)
    cfg = backend.config
    extra: dict[str, Any] = {"tls": backend.tls_files} if backend.tls_files else {}
    return JSONResponse(
        {
            **extra,
            "institutions": [
                {
                    "appid": inst.appid,
                    "mch_id": inst.mch_id,
                    "api_key": inst.api_key,
                    "sub_merchants": [
                        {
                            "sub_mch_id": sub.sub_mch_id,
                            "sub_appid": sub.sub_appid,
                            "app_secret": sub.app_secret,
                            "settlement_currency": sub.settlement_currency,
                            "allowed_fee_types": sorted(sub.fee_types),
                        }
                        for sub in inst.sub_merchants
                    ],
                }
                for inst in cfg.institutions
            ],
            "rates": dict(cfg.rates),
        }
    )


async def login(request: Request) -> Response:
    body = await _json(request)
    appid, user = body.get("appid"), body.get("user")
    if not isinstance(appid, str) or not isinstance(user, str):
        raise ControlError('give {"appid": <sub_appid>, "user": <name>}')
    return JSONResponse(_backend(request).login(appid, user))


async def pay(request: Request) -> Response:
    return JSONResponse(await _backend(request).pay(await _json(request)))


async def notifications(request: Request) -> Response:
    backend = _backend(request)
    out_trade_no = request.query_params.get("out_trade_no")
    kind = request.query_params.get("kind")
    found = [
        n.to_json()
        for n in backend.notifications
        if (not out_trade_no or n.out_trade_no == out_trade_no) and (not kind or n.kind == kind)
    ]
    return JSONResponse({"notifications": found})


async def notification(request: Request) -> Response:
    return JSONResponse(_backend(request).notification(request.path_params["id"]).to_json())


async def resend(request: Request) -> Response:
    backend = _backend(request)
    tamper = (await _json(request)).get("tamper")
    if tamper is not None and not isinstance(tamper, str):
        raise ControlError("tamper must be a string")
    n = await backend.resend(request.path_params["id"], tamper)
    return JSONResponse(n.to_json())


async def notify_mode(request: Request) -> Response:
    body = await _json(request)
    mode = body.get("mode")
    out_trade_no = body.get("out_trade_no")
    if not isinstance(mode, str) or (out_trade_no is not None and not isinstance(out_trade_no, str)):
        raise ControlError('give {"mode": ..., "out_trade_no": optional}')
    return JSONResponse(_backend(request).set_notify_mode(mode, out_trade_no))


async def clock(request: Request) -> Response:
    backend = _backend(request)
    if request.method == "POST":
        body = await _json(request)
        if "advance" in body:
            await backend.advance_by(body["advance"])
        elif "set" in body:
            try:
                target = datetime.fromisoformat(str(body["set"]))
            except ValueError:
                raise ControlError("set takes an ISO-8601 time with a zone, e.g. 2024-01-01T12:00:00+08:00") from None
            if target.tzinfo is None:
                raise ControlError("set needs a timezone-aware time (e.g. ...+08:00)")
            await backend.advance_to(target)
        else:
            raise ControlError('give {"advance": seconds} or {"set": iso-time}')
    return JSONResponse(clock_json(backend))


async def faults(request: Request) -> Response:
    backend = _backend(request)
    if request.method == "POST":
        return JSONResponse({"fault": backend.add_fault(await _json(request)).to_json()})
    if request.method == "DELETE":
        backend.faults.clear()
    return JSONResponse({"faults": [f.to_json() for f in backend.faults]})


async def refund_outcome(request: Request) -> Response:
    backend = _backend(request)
    answer = backend.script_refund(await _json(request))
    await backend.run_due()
    return JSONResponse(answer)


async def reset(request: Request) -> Response:
    _backend(request).reset()
    return JSONResponse({"ok": True})


async def state(request: Request) -> Response:
    return JSONResponse(_backend(request).dump())


async def requests_journal(request: Request) -> Response:
    backend = _backend(request)
    endpoint = request.query_params.get("endpoint")
    out_trade_no = request.query_params.get("out_trade_no")
    try:
        limit = int(request.query_params.get("limit", "1000"))
    except ValueError:
        raise ControlError("limit must be an integer") from None
    found = [
        e
        for e in backend.journal
        if (not endpoint or e["endpoint"] == endpoint) and (not out_trade_no or e.get("out_trade_no") == out_trade_no)
    ]
    return JSONResponse({"requests": found[-limit:] if limit > 0 else []})


async def debug_sign(request: Request) -> Response:
    backend = _backend(request)
    body = await _json(request)
    fields: Mapping[str, Any]
    if isinstance(body.get("xml"), str):
        try:
            fields = decode_xml(body["xml"].encode("utf-8"))
        except XMLError as exc:
            raise ControlError(f"xml: {exc}") from None
    elif isinstance(body.get("fields"), dict):
        fields = body["fields"]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in fields.values()):
            raise ControlError("fields must map names to strings or integers")
    else:
        raise ControlError('give {"fields": {...}} or {"xml": "<xml>...</xml>"}')
    key: ApiKey | None = None
    if isinstance(body.get("key"), str):
        try:
            key = ApiKey(body["key"])
        except ValueError as exc:
            raise ControlError(str(exc)) from None
    else:
        inst = backend.world.institution(str(fields.get("mch_id", "")))
        if inst is None and fields.get("appId"):
            found = backend.world.mini_program(str(fields["appId"]))
            inst = found[0] if found else None
        if inst is None:
            raise ControlError('no key: the fields carry no known mch_id (or appId); pass "key"')
        key = inst.key
    sign_type = body.get("sign_type") or fields.get("sign_type") or fields.get("signType")
    try:
        explanation = explain_signature(
            {k: v for k, v in fields.items() if k != "paySign"}
            | ({"sign": fields["paySign"]} if "paySign" in fields else {}),
            key,
            str(sign_type) if sign_type else None,
        )
    except SignatureError as exc:
        raise ControlError(str(exc)) from None
    return JSONResponse(
        {
            "algorithm": explanation.algorithm,
            "string_to_sign": explanation.string_to_sign,
            "expected": explanation.expected,
            "received": explanation.received,
            "matches": explanation.matches,
        }
    )


def control_routes() -> list[Route]:
    return [
        Route("/sandbox/merchants", merchants, methods=["GET"]),
        Route("/sandbox/login", login, methods=["POST"]),
        Route("/sandbox/pay", pay, methods=["POST"]),
        Route("/sandbox/notifications", notifications, methods=["GET"]),
        Route("/sandbox/notifications/{id:int}", notification, methods=["GET"]),
        Route("/sandbox/notifications/{id:int}/resend", resend, methods=["POST"]),
        Route("/sandbox/notify-mode", notify_mode, methods=["POST"]),
        Route("/sandbox/clock", clock, methods=["GET", "POST"]),
        Route("/sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/sandbox/refunds/outcome", refund_outcome, methods=["POST"]),
        Route("/sandbox/reset", reset, methods=["POST"]),
        Route("/sandbox/state", state, methods=["GET"]),
        Route("/sandbox/requests", requests_journal, methods=["GET"]),
        Route("/sandbox/debug/sign", debug_sign, methods=["POST"]),
    ]
