"""Sandbox tier: raw signed XML over HTTP (never the SDK), in-process through httpx2.ASGITransport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minipay.protocol import CHINA_TZ, build_pay_params, decode_xml, encode_xml, sign, to_unix
from minipay.sandbox import SandboxConfig, create_app
from tests.profiles import LENIENT

# The default world, copied here on purpose: tests pin the documented defaults.
APPID = "wx8888888888888888"
MCH_ID = "1900000109"
KEY = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
HKD_SUB = "1900000110"
HKD_APP = "wx1234567890abcdef"
HKD_SECRET = "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c"
JPY_SUB = "1900000111"
JPY_APP = "wx2234567890abcdef"
START = datetime(2024, 1, 1, 12, 0, 0, tzinfo=CHINA_TZ)
NOTIFY_URL = "http://merchant.test/wxpay/notify"
SUCCESS_REPLY = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


@dataclass
class Receiver:
    """A merchant notify endpoint: records every body, answers from a script (default SUCCESS)."""

    replies: list[tuple[int, bytes]] = field(default_factory=list)
    default: tuple[int, bytes] = (200, SUCCESS_REPLY)
    received: list[bytes] = field(default_factory=list)
    delay: float = 0.0

    def app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            self.received.append(await request.body())
            if self.delay:
                await asyncio.sleep(self.delay)
            status, body = self.replies.pop(0) if self.replies else self.default
            return Response(body, status_code=status, media_type="text/xml")

        return Starlette(routes=[Route("/{path:path}", notify, methods=["POST"])])


@dataclass
class Sandbox:
    """A sandbox app plus a client speaking raw signed XML to it."""

    app: Starlette
    http: httpx2.AsyncClient
    receiver: Receiver

    @property
    def backend(self) -> Any:
        return self.app.state.sandbox

    async def call(
        self,
        path: str,
        fields: dict[str, str | int],
        *,
        key: str = KEY,
        sign_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        response = await self.post_signed(path, fields, key=key, sign_type=sign_type, headers=headers)
        assert response.status_code == 200, response.text
        return decode_xml(response.content)

    async def post_signed(
        self,
        path: str,
        fields: dict[str, str | int],
        *,
        key: str = KEY,
        sign_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response:
        body = dict(fields)
        body.setdefault("appid", APPID)
        body.setdefault("mch_id", MCH_ID)
        if path not in ("/pay/queryexchagerate",):
            body.setdefault("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
        if sign_type is not None:
            body["sign_type"] = sign_type
        body["sign"] = sign(body, key, sign_type or "MD5")
        return await self.http.post(path, content=encode_xml(body), headers=headers or {})

    async def login(self, appid: str = HKD_APP, user: str = "alice") -> dict[str, Any]:
        response = await self.http.post("/sandbox/login", json={"appid": appid, "user": user})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def order(self, out_trade_no: str = "ORDER0001", **overrides: str | int) -> dict[str, str]:
        """Log alice in and create an HKD order (or as overridden); returns the answer."""
        sub_appid = str(overrides.get("sub_appid", HKD_APP))
        openid = (await self.login(sub_appid if sub_appid in (HKD_APP, JPY_APP) else HKD_APP))["openid"]
        fields: dict[str, str | int] = {
            "sub_mch_id": HKD_SUB,
            "sub_appid": sub_appid,
            "body": "Demo Shop-Coffee",
            "out_trade_no": out_trade_no,
            "fee_type": "HKD",
            "total_fee": 1000,
            "spbill_create_ip": "203.0.113.10",
            "notify_url": NOTIFY_URL,
            "trade_type": "JSAPI",
            "sub_openid": openid,
        }
        fields.update(overrides)
        sign_type = fields.pop("sign_type", None)
        return await self.call("/pay/unifiedorder", fields, sign_type=str(sign_type) if sign_type else None)

    async def pay(
        self, prepay_id: str, *, app_id: str = HKD_APP, sign_type: str = "MD5", **extra: Any
    ) -> dict[str, Any]:
        params = build_pay_params(
            app_id=app_id, prepay_id=prepay_id, key=KEY, sign_type=sign_type, timestamp=to_unix(self.backend.now())
        )
        response = await self.http.post("/sandbox/pay", json={**params, **extra})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def paid_order(self, out_trade_no: str = "ORDER0001", **overrides: str | int) -> dict[str, str]:
        answer = await self.order(out_trade_no, **overrides)
        assert answer["result_code"] == "SUCCESS", answer
        paid = await self.pay(answer["prepay_id"], sign_type=str(overrides.get("sign_type", "MD5")))
        assert paid["errMsg"] == "requestPayment:ok", paid
        return answer

    async def advance(self, seconds: float) -> dict[str, Any]:
        response = await self.http.post("/sandbox/clock", json={"advance": seconds})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def notifications(self, out_trade_no: str | None = None) -> list[dict[str, Any]]:
        params = {"out_trade_no": out_trade_no} if out_trade_no else {}
        data: list[dict[str, Any]] = (await self.http.get("/sandbox/notifications", params=params)).json()[
            "notifications"
        ]
        return data


MakeSandbox = Callable[..., Sandbox]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[Callable[..., Any]]:
    clients: list[httpx2.AsyncClient] = []

    def make(config: SandboxConfig | None = None, *, receiver: Receiver | None = None, seed: int = 1) -> Sandbox:
        rec = receiver or Receiver()
        app = create_app(config or LENIENT, seed=seed, start=START, notify_transport=httpx2.ASGITransport(rec.app()))
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://apihk.mch.weixin.qq.com")
        clients.append(http)
        return Sandbox(app=app, http=http, receiver=rec)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def sandbox(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return make_sandbox()
