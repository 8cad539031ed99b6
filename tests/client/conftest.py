"""Shared pieces of the SDK tier: the test institution and a scripted fake WeChat at the transport edge.

The fake is a real v2 peer built on ``minipay.protocol``: it decodes the request, verifies its
signature (so a test fails if the SDK signs wrongly), records it, and answers signed XML. Tests
script what each call answers (``SYSTEMERROR``, a connection error, a read timeout, a bad signature...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx2
import pytest

from minipay.protocol import decode_xml, encode_xml, sign, verify

KEY = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
APPID = "wx8888888888888888"
MCH_ID = "1900000109"
SUB_MCH_ID = "1900000110"
SUB_APPID = "wx1234567890abcdef"
SUB_OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
APP_SECRET = "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c"

Reply = Callable[[httpx2.Request, dict[str, str]], httpx2.Response]


def signed(fields: dict[str, str], sign_type: str = "MD5", key: str = KEY) -> bytes:
    body = dict(fields)
    if sign_type != "MD5":
        body["sign_type"] = sign_type
    body["sign"] = sign(body, key, sign_type)
    return encode_xml(body)


def ok_fields(path: str, request: dict[str, str]) -> dict[str, str]:
    """A plausible successful answer for ``path``, echoing the request's ids."""
    base = {
        "return_code": "SUCCESS",
        "return_msg": "OK",
        "appid": request.get("appid", APPID),
        "mch_id": request.get("mch_id", MCH_ID),
        "nonce_str": "IITRi8Iabbblz1Jc",
    }
    if "sub_mch_id" in request:
        base["sub_mch_id"] = request["sub_mch_id"]
    if path == "/pay/queryexchagerate":
        base.pop("nonce_str")
        return base | {"fee_type": request["fee_type"], "rate_time": request["date"], "rate": "92000000"}
    base["result_code"] = "SUCCESS"
    if path == "/pay/unifiedorder":
        return base | {"trade_type": "JSAPI", "prepay_id": "wx201411101639507cbf6ffd8b0779950874"}
    if path == "/pay/orderquery":
        return base | {"trade_state": "NOTPAY", "out_trade_no": request.get("out_trade_no", "X")}
    if path == "/secapi/pay/refund":
        return base | {
            "out_refund_no": request["out_refund_no"],
            "refund_id": "50000000012024010200000000001",
            "refund_fee": request["refund_fee"],
            "total_fee": request["total_fee"],
            "out_trade_no": request.get("out_trade_no", ""),
        }
    return base


@dataclass
class FakeWeChat:
    """A scripted WeChat: ``script`` holds one reply maker per upcoming call (then: success)."""

    sign_type: str = "MD5"
    script: list[Reply | Exception] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        fields = decode_xml(request.read())
        verify(fields, KEY)  # the SDK must sign correctly, every attempt
        self.requests.append((request.url.host, request.url.path, fields))
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step(request, fields)
        return httpx2.Response(200, content=signed(ok_fields(request.url.path, fields), self.sign_type))

    @property
    def bodies(self) -> list[dict[str, str]]:
        return [fields for _, _, fields in self.requests]

    @property
    def hosts(self) -> list[str]:
        return [host for host, _, _ in self.requests]


def system_error(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
    answer = {
        "return_code": "SUCCESS",
        "appid": APPID,
        "mch_id": MCH_ID,
        "nonce_str": "Qk3NRlmw6oYpGJ2d",
        "result_code": "FAIL",
        "err_code": "SYSTEMERROR",
        "err_code_des": "系统错误",
    }
    return httpx2.Response(200, content=signed(answer))


def business_error(code: str) -> Reply:
    def reply(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
        answer = {
            "return_code": "SUCCESS",
            "appid": APPID,
            "mch_id": MCH_ID,
            "nonce_str": "Qk3NRlmw6oYpGJ2d",
            "result_code": "FAIL",
            "err_code": code,
            "err_code_des": code.lower(),
        }
        return httpx2.Response(200, content=signed(answer))

    return reply


def raw(status: int, content: bytes) -> Reply:
    def reply(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
        return httpx2.Response(status, content=content)

    return reply


def forged(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
    """A well-formed success signed with another key (what a man in the middle could send)."""
    return httpx2.Response(200, content=signed(ok_fields(request.url.path, fields), key="Z" * 32))


@pytest.fixture
def fake() -> FakeWeChat:
    return FakeWeChat()


class Sleeps:
    """An injectable sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


ORDER = {
    "out_trade_no": "ORDER20240101000001",
    "total_fee": 1000,
    "fee_type": "HKD",
    "body": "Demo Shop-Coffee",
    "notify_url": "https://merchant.example.com/wxpay/notify",
    "spbill_create_ip": "203.0.113.10",
    "sub_openid": SUB_OPENID,
}

REFUND = {
    "out_refund_no": "REFUND20240102000001",
    "out_trade_no": "ORDER20240101000001",
    "total_fee": 1000,
    "refund_fee": 500,
    "refund_fee_type": "HKD",
}
