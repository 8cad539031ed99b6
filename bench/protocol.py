"""Benchmark of the protocol core against wechatpy 1.8.18, in the same process.

    uv run python bench/protocol.py [--rounds 15] [--number 2000]

(a) build + sign + encode a unified-order request (JSAPI, institution fields, time_start/expire);
(b) decode + verify + build the typed model of a payment notification (the spec 7.6 sample);
(c) the encode primitive alone: sign + encode a ready unified-order dict (``ORDER``: 15 fields,
    ``total_fee`` an int, the key a plain string, as one writes it by hand for either library).

wechatpy's equivalents, found honestly in its source:
(a) ``WeChatPay.order.create(...)`` -> ``WeChatPay._request``: builds the dict, ``random_string``
    nonce, ``calculate_signature`` (MD5), ``dict_to_xml``, ``.encode()``; we stop it at the
    ``requests`` call (its session is replaced by a stub that captures the body), so no network and
    no response parsing are measured.
(b) ``WeChatPay.parse_payment_result(xml)``: ``xmltodict.parse`` + ``calculate_signature`` + int
    conversion of the amount fields (it returns a dict, not a typed model).
(c) ``calculate_signature(ORDER, key)`` + ``dict_to_xml(ORDER, sign).encode("utf-8")``, the two
    steps of ``WeChatPay._request``; ours: ``encode_xml({**ORDER, "sign": sign(ORDER, key)})``.
    A plain-stdlib floor (sorted join, MD5, an f-string per field; no checks, no escaping) is
    printed below the table for scale.

Each side runs ``number`` operations per round, the two sides alternating round by round; the
median time per operation of each side and the median of the per-round ratios are reported.
Targets: (a) >= 2x faster than wechatpy, (b) >= 3x, (c) >= 2x. The exit code is 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from wechatpy.pay import WeChatPay
from wechatpy.pay.utils import calculate_signature, dict_to_xml

import minipay.protocol as mp

KEY = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
APPID = "wx8888888888888888"
MCH_ID = "1900000109"
SUB_MCH_ID = "1900000110"
SUB_APPID = "wx1234567890abcdef"
SUB_OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
NOTIFY_URL = "https://merchant.example.com/wxpay/notify"

NOTIFICATION = b"""<xml>
  <return_code><![CDATA[SUCCESS]]></return_code>
  <appid><![CDATA[wx8888888888888888]]></appid>
  <mch_id><![CDATA[1900000109]]></mch_id>
  <sub_appid><![CDATA[wx1234567890abcdef]]></sub_appid>
  <sub_mch_id><![CDATA[1900000110]]></sub_mch_id>
  <nonce_str><![CDATA[5d2b6c2a8db53831f7eda20af46e531c]]></nonce_str>
  <result_code><![CDATA[SUCCESS]]></result_code>
  <openid><![CDATA[oPq0Ot5Vn3Dxn0J5uEXAMPLEopenid]]></openid>
  <is_subscribe><![CDATA[N]]></is_subscribe>
  <sub_openid><![CDATA[oUpF8uMuAJO_M2pxb1Q9zNjWeS6o]]></sub_openid>
  <sub_is_subscribe><![CDATA[N]]></sub_is_subscribe>
  <trade_type><![CDATA[JSAPI]]></trade_type>
  <bank_type><![CDATA[OTHERS]]></bank_type>
  <total_fee>1000</total_fee>
  <fee_type><![CDATA[HKD]]></fee_type>
  <cash_fee>920</cash_fee>
  <cash_fee_type><![CDATA[CNY]]></cash_fee_type>
  <transaction_id><![CDATA[4200000001202401010000000001]]></transaction_id>
  <out_trade_no><![CDATA[ORDER20240101000001]]></out_trade_no>
  <time_end><![CDATA[20240101120510]]></time_end>
  <rate_value><![CDATA[92000000]]></rate_value>
  <sign><![CDATA[68CEFB625095A0CF49601A93B7E9FB91]]></sign>
</xml>"""


# A unified-order request as the wire dict, before signing (what build_request signs).
ORDER: dict[str, str | int] = {
    "appid": APPID,
    "mch_id": MCH_ID,
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
    "nonce_str": "5d2b6c2a8db53831f7eda20af46e531c",
    "body": "Demo Shop-Coffee",
    "out_trade_no": "ORDER20240101000001",
    "total_fee": 1000,
    "fee_type": "HKD",
    "spbill_create_ip": "203.0.113.10",
    "time_start": "20240101120000",
    "time_expire": "20240101140000",
    "notify_url": NOTIFY_URL,
    "trade_type": "JSAPI",
    "sub_openid": SUB_OPENID,
}


class _Captured(Exception):
    def __init__(self, body: bytes) -> None:
        self.body = body


class _StubSession:
    """Stands in for wechatpy's ``requests.Session``: captures the body instead of sending it."""

    def request(self, method: str, url: str, **kwargs: Any) -> None:
        raise _Captured(kwargs["data"])


def _wechatpy_client() -> WeChatPay:
    client = WeChatPay(appid=APPID, api_key=KEY, mch_id=MCH_ID, sub_mch_id=SUB_MCH_ID, sub_appid=SUB_APPID)
    client._http = _StubSession()  # type: ignore[assignment]
    return client


def wechatpy_unified_order(client: WeChatPay) -> bytes:
    try:
        client.order.create(
            trade_type="JSAPI",
            body="Demo Shop-Coffee",
            total_fee=1000,
            notify_url=NOTIFY_URL,
            client_ip="203.0.113.10",
            out_trade_no="ORDER20240101000001",
            fee_type="HKD",
            sub_user_id=SUB_OPENID,
        )
    except _Captured as captured:
        return captured.body
    raise AssertionError("wechatpy did not reach the HTTP call")


def minipay_unified_order() -> bytes:
    now = datetime.now(mp.CHINA_TZ)
    request = mp.UnifiedOrderRequest(
        sub_mch_id=SUB_MCH_ID,
        sub_appid=SUB_APPID,
        sub_openid=SUB_OPENID,
        body="Demo Shop-Coffee",
        out_trade_no="ORDER20240101000001",
        total_fee=1000,
        fee_type="HKD",
        spbill_create_ip="203.0.113.10",
        notify_url=NOTIFY_URL,
        time_start=now,
        time_expire=now + timedelta(hours=2),
    )
    return mp.encode_xml(mp.build_request(request, appid=APPID, mch_id=MCH_ID, key=KEY))


def wechatpy_notification(client: WeChatPay) -> dict[str, Any]:
    result: dict[str, Any] = client.parse_payment_result(NOTIFICATION)
    return result


def minipay_notification(key: mp.ApiKey) -> mp.PaymentNotification:
    return mp.parse_payment_notification(NOTIFICATION, key)


def wechatpy_sign_encode() -> bytes:
    body: str = dict_to_xml(ORDER, calculate_signature(ORDER, KEY))
    return body.encode("utf-8")


def minipay_sign_encode() -> bytes:
    return mp.encode_xml({**ORDER, "sign": mp.sign(ORDER, KEY)})


def stdlib_sign_encode() -> bytes:
    """The floor: the same work with the standard library and no checks (no escaping either)."""
    message = "&".join([f"{k}={ORDER[k]}" for k in sorted(ORDER) if ORDER[k] != ""]) + "&key=" + KEY
    signature = hashlib.md5(message.encode()).hexdigest().upper()
    elements = "".join([f"<{k}><![CDATA[{v}]]></{k}>" for k, v in ORDER.items()])
    return f"<xml>{elements}<sign><![CDATA[{signature}]]></sign></xml>".encode()


def _run(fn: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - started) / number


def _compare(
    theirs: Callable[[], object], ours: Callable[[], object], rounds: int, number: int
) -> tuple[float, float, float]:
    """Median seconds per op of each side, and the median of the per-round ratios.

    The two sides alternate round by round, so a load change on the machine hits both alike.
    """
    for _ in range(min(number, 200)):  # warm-up
        theirs()
        ours()
    t_theirs, t_ours, ratios = [], [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            a = _run(theirs, number)
            b = _run(ours, number)
            t_theirs.append(a)
            t_ours.append(b)
            ratios.append(a / b)
    finally:
        gc.enable()
    return statistics.median(t_theirs), statistics.median(t_ours), statistics.median(ratios)


def _check_equivalence(client: WeChatPay, key: mp.ApiKey) -> None:
    """Both sides must produce a valid, equivalent result before we time them."""
    ours = mp.decode_xml(minipay_unified_order())
    mp.verify(ours, KEY)
    theirs = mp.decode_xml(wechatpy_unified_order(client))
    mp.verify(theirs, KEY)
    assert set(theirs) == set(ours), set(theirs) ^ set(ours)
    ours = mp.decode_xml(minipay_sign_encode())
    theirs = mp.decode_xml(wechatpy_sign_encode())
    mp.verify(ours, KEY)
    assert ours == theirs == mp.decode_xml(stdlib_sign_encode()), set(ours.items()) ^ set(theirs.items())
    parsed = wechatpy_notification(client)
    typed = minipay_notification(key)
    assert parsed["total_fee"] == typed.total_fee == 1000
    assert parsed["out_trade_no"] == typed.out_trade_no


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args(argv)
    # Neither side logs at the default level, but wechatpy's calculate_signature still asks its logger
    # on every call: logging is off while measuring, and the caller (a test, say) gets its setting back.
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        return _measure(args.rounds, args.number)
    finally:
        logging.disable(previous)


def _measure(rounds: int, number: int) -> int:
    client = _wechatpy_client()
    key = mp.ApiKey(KEY)
    _check_equivalence(client, key)

    cases = [
        (
            "(a) unified order: build + sign + encode",
            lambda: wechatpy_unified_order(client),
            minipay_unified_order,
            2.0,
        ),
        (
            "(b) notification: decode + verify + typed model",
            lambda: wechatpy_notification(client),
            lambda: minipay_notification(key),
            3.0,
        ),
        ("(c) sign + encode a unified-order dict", wechatpy_sign_encode, minipay_sign_encode, 2.0),
    ]
    baseline = f"wechatpy {importlib.metadata.version('wechatpy')}"  # the installed one, not a label
    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(
        f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs{load}); "
        f"{rounds} rounds x {number} ops"
    )
    print(f"{'case':50} {baseline:>16} {'minipay':>10} {'ratio':>7} {'target':>7}  met")
    all_met = True
    for name, theirs, ours, target in cases:
        t_theirs, t_ours, ratio = _compare(theirs, ours, rounds, number)
        met = ratio >= target
        all_met &= met
        print(
            f"{name:50} {t_theirs * 1e6:13.1f} us {t_ours * 1e6:7.1f} us {ratio:6.2f}x {target:6.1f}x  "
            f"{'yes' if met else 'NO'}"
        )
    t_floor, t_ours, ratio = _compare(stdlib_sign_encode, minipay_sign_encode, rounds, number)
    print(
        f"(c) floor, the same work in plain stdlib with no checks and no escaping: {t_floor * 1e6:.1f} us; "
        f"minipay {t_ours * 1e6:.1f} us in the same rounds ({1 / ratio:.2f}x the floor)"
    )
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
