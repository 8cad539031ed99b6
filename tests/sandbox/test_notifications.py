"""Notifications (spec 7, 12, 18.5): signed, exact-SUCCESS rule, the 16-attempt schedule, modes."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from minipay.protocol import decode_xml, verify
from minipay.sandbox import SandboxConfig, create_app, is_ack
from tests.profiles import LENIENT
from tests.sandbox.conftest import HKD_SUB, KEY, START, MakeSandbox, Receiver, Sandbox

pytestmark = pytest.mark.anyio

GAPS = [15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600]


def fail_receiver() -> Receiver:
    return Receiver(default=(200, b"<xml><return_code>FAIL</return_code><return_msg>busy</return_msg></xml>"))


async def test_payment_notification_is_signed_and_carries_the_global_fields(sandbox: Sandbox) -> None:
    await sandbox.paid_order(attach="store=42")
    body = sandbox.receiver.received[0]
    fields = decode_xml(body)
    verify(fields, KEY, "MD5")
    assert fields["sign_type"] == "MD5"
    assert fields["return_code"] == fields["result_code"] == "SUCCESS"
    assert fields["sub_mch_id"] == HKD_SUB
    assert fields["out_trade_no"] == "ORDER0001"
    assert fields["total_fee"] == "1000"
    assert fields["fee_type"] == "HKD"
    assert fields["cash_fee"] == "920"
    assert fields["cash_fee_type"] == "CNY"
    assert fields["rate_value"] == "92000000"
    assert fields["attach"] == "store=42"
    assert fields["trade_type"] == "JSAPI"
    assert fields["time_end"] == "20240101120000"
    assert fields["openid"]
    assert fields["sub_openid"]


async def test_hmac_order_gets_an_hmac_signed_notification(sandbox: Sandbox) -> None:
    await sandbox.paid_order(sign_type="HMAC-SHA256")
    fields = decode_xml(sandbox.receiver.received[0])
    assert fields["sign_type"] == "HMAC-SHA256"
    verify(fields, KEY, "HMAC-SHA256")


async def test_rate_field_name_and_sign_type_are_configurable(make_sandbox: MakeSandbox) -> None:
    config = SandboxConfig.from_dict({"notify": {"rate_field": "rate", "include_sign_type": False}})
    sandbox = make_sandbox(config)
    await sandbox.paid_order()
    fields = decode_xml(sandbox.receiver.received[0])
    assert fields["rate"] == "92000000"
    assert "rate_value" not in fields
    assert "sign_type" not in fields
    verify(fields, KEY, "MD5")


async def test_an_acknowledged_notification_is_sent_once(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await sandbox.advance(25 * 3600)
    [note] = await sandbox.notifications("ORDER0001")
    assert note["state"] == "delivered"
    assert len(note["attempts"]) == 1
    assert note["attempts"][0]["verdict"] == "ack"
    assert note["attempts"][0]["status"] == 200
    assert len(sandbox.receiver.received) == 1


async def test_unanswered_notification_makes_exactly_sixteen_attempts_in_25_hours(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(receiver=fail_receiver())
    await sandbox.paid_order()
    await sandbox.advance(25 * 3600)
    [note] = await sandbox.notifications("ORDER0001")
    attempts = note["attempts"]
    assert len(attempts) == 16
    assert note["state"] == "exhausted"
    assert note["next_attempt_at"] is None
    times = [datetime.fromisoformat(a["at"]) for a in attempts]
    assert times[0] == START
    assert [int((b - a).total_seconds()) for a, b in itertools.pairwise(times)] == GAPS
    assert times[-1] - times[0] == timedelta(hours=24, minutes=4)
    assert {a["verdict"] for a in attempts} == {"nack"}
    assert len(sandbox.receiver.received) == 16


async def test_retries_stop_at_the_first_success(make_sandbox: MakeSandbox) -> None:
    fail = (200, b"<xml><return_code>FAIL</return_code></xml>")
    receiver = Receiver(replies=[fail, (500, b"oops"), fail])
    sandbox = make_sandbox(receiver=receiver)
    await sandbox.paid_order()
    await sandbox.advance(15)
    await sandbox.advance(15)
    [note] = await sandbox.notifications()
    assert [a["verdict"] for a in note["attempts"]] == ["nack", "nack", "nack"]
    assert note["state"] == "pending"
    await sandbox.advance(30)
    [note] = await sandbox.notifications()
    assert [a["verdict"] for a in note["attempts"]] == ["nack", "nack", "nack", "ack"]
    assert note["state"] == "delivered"
    await sandbox.advance(25 * 3600)
    assert len((await sandbox.notifications())[0]["attempts"]) == 4


@pytest.mark.parametrize(
    ("status", "reply", "ack"),
    [
        (200, b"<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>", True),
        (200, b"<xml><return_code>SUCCESS</return_code><return_msg>OK</return_msg></xml>", True),
        (204, b"<xml><return_code>SUCCESS</return_code></xml>", True),
        (200, b"SUCCESS", False),
        (200, b"<xml><return_code>success</return_code></xml>", False),
        (200, b"<xml><return_code>FAIL</return_code><return_msg>no</return_msg></xml>", False),
        (200, b"", False),
        (500, b"<xml><return_code>SUCCESS</return_code></xml>", False),
        (302, b"<xml><return_code>SUCCESS</return_code></xml>", False),
        (200, b'{"return_code": "SUCCESS"}', False),
    ],
)
def test_only_the_exact_success_reply_counts(status: int, reply: bytes, ack: bool) -> None:
    assert is_ack(status, reply) is ack


async def test_a_reply_slower_than_the_timeout_is_a_failed_attempt(make_sandbox: MakeSandbox) -> None:
    config = SandboxConfig.from_dict({"notify": {"reply_timeout": 0.05}})
    sandbox = make_sandbox(config, receiver=Receiver(delay=0.5))
    await sandbox.paid_order()
    [note] = await sandbox.notifications()
    assert note["attempts"][0]["verdict"] == "timeout"
    assert note["state"] == "pending"


async def test_a_receiver_that_crashes_is_a_failed_attempt(make_sandbox: MakeSandbox) -> None:
    async def broken(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("merchant bug")

    app = create_app(LENIENT, seed=1, start=START, notify_transport=httpx2.ASGITransport(broken))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        sandbox = Sandbox(app=app, http=http, receiver=Receiver())
        await sandbox.paid_order()
        [note] = await sandbox.notifications()
    assert note["attempts"][0]["verdict"] == "error"
    assert "merchant bug" in note["attempts"][0]["error"]


async def test_twice_mode_delivers_each_notification_twice(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    await sandbox.pay(answer["prepay_id"], notify="twice")
    [note] = await sandbox.notifications()
    assert note["mode"] == "twice"
    assert [a["duplicate"] for a in note["attempts"]] == [False, True]
    assert sandbox.receiver.received[0] == sandbox.receiver.received[1]


async def test_twice_concurrently_mode_delivers_two_copies_at_once(make_sandbox: MakeSandbox) -> None:
    receiver = Receiver(delay=0.05)
    sandbox = make_sandbox(receiver=receiver)
    response = await sandbox.http.post("/sandbox/notify-mode", json={"mode": "twice-concurrently"})
    assert response.json()["default"] == "twice-concurrently"
    await sandbox.paid_order()
    [note] = await sandbox.notifications()
    assert len(note["attempts"]) == 2
    assert note["attempts"][0]["at"] == note["attempts"][1]["at"]
    assert len(receiver.received) == 2


@pytest.mark.parametrize(("mode", "overlap"), [("twice", 1), ("twice-concurrently", 2)])
async def test_twice_concurrently_really_overlaps_and_twice_does_not(mode: str, overlap: int) -> None:
    # Two copies at the same virtual time prove nothing about concurrency: count copies in flight.
    in_flight = 0
    most = 0

    async def notify(request: Request) -> Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return Response(b"<xml><return_code>SUCCESS</return_code></xml>", media_type="text/xml")

    receiver_app = Starlette(routes=[Route("/{path:path}", notify, methods=["POST"])])
    app = create_app(LENIENT, seed=1, start=START, notify_transport=httpx2.ASGITransport(receiver_app))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        sandbox = Sandbox(app=app, http=http, receiver=Receiver())
        answer = await sandbox.order()
        assert (await sandbox.pay(answer["prepay_id"], notify=mode))["errMsg"] == "requestPayment:ok"
        [note] = await sandbox.notifications()
    assert [a["verdict"] for a in note["attempts"]] == ["ack", "ack"]
    assert most == overlap


async def test_late_mode_delivers_after_the_configured_delay(sandbox: Sandbox) -> None:
    await sandbox.http.post("/sandbox/notify-mode", json={"mode": "late", "out_trade_no": "ORDER0001"})
    await sandbox.paid_order()
    [note] = await sandbox.notifications()
    assert note["attempts"] == []
    assert datetime.fromisoformat(note["next_attempt_at"]) == START + timedelta(seconds=300)
    await sandbox.advance(299)
    assert sandbox.receiver.received == []
    await sandbox.advance(1)
    assert len(sandbox.receiver.received) == 1


async def test_never_mode_sends_nothing_until_resent(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    await sandbox.pay(answer["prepay_id"], notify="never")
    await sandbox.advance(25 * 3600)
    [note] = await sandbox.notifications()
    assert note["state"] == "suppressed"
    assert note["attempts"] == []
    resent = (await sandbox.http.post(f"/sandbox/notifications/{note['id']}/resend")).json()
    assert resent["state"] == "delivered"
    assert resent["attempts"][0]["resend"] is True
    assert len(sandbox.receiver.received) == 1


async def test_resend_delivers_the_same_body_again(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    [note] = await sandbox.notifications()
    again = (await sandbox.http.post(f"/sandbox/notifications/{note['id']}/resend")).json()
    assert len(again["attempts"]) == 2
    assert sandbox.receiver.received[0] == sandbox.receiver.received[1]
    assert (await sandbox.http.get(f"/sandbox/notifications/{note['id']}")).json()["id"] == note["id"]
    assert (await sandbox.http.post("/sandbox/notifications/999/resend")).status_code == 404


async def test_notifications_filter_by_order_and_kind(sandbox: Sandbox) -> None:
    await sandbox.paid_order("A1")
    await sandbox.paid_order("A2")
    assert len(await sandbox.notifications()) == 2
    assert [n["out_trade_no"] for n in await sandbox.notifications("A2")] == ["A2"]
    refunds = (await sandbox.http.get("/sandbox/notifications", params={"kind": "refund"})).json()
    assert refunds["notifications"] == []


async def test_without_a_transport_only_loopback_targets_are_contacted() -> None:
    app = create_app(LENIENT, seed=1, start=START)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        sandbox = Sandbox(app=app, http=http, receiver=Receiver())
        await sandbox.paid_order(notify_url="http://merchant.invalid/notify")
        [note] = await sandbox.notifications()
    assert note["state"] == "blocked"
    assert note["attempts"][0]["verdict"] == "blocked"
    dispatcher = app.state.sandbox.dispatcher
    assert dispatcher.allowed("http://127.0.0.1:9/notify")
    assert dispatcher.allowed("http://[::1]:9/notify")
    assert dispatcher.allowed("http://localhost/notify")
    assert not dispatcher.allowed("http://10.0.0.1/notify")
    assert not dispatcher.allowed("http://127.0.0.1.example.com/notify")
    assert not dispatcher.allowed("http://127.0.0.1:80@merchant.invalid/notify")  # userinfo, then the host
    assert not dispatcher.allowed("http://127.0.0.1\\@merchant.invalid/notify")
    assert not dispatcher.allowed("http://[::ffff:7f00:1/notify")  # unparsable
    assert dispatcher.allowed("http://merchant.invalid@127.0.0.1:9/notify")  # the host is loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://merchant.invalid/notify",
        "http://10.0.0.1/notify",
        "http://0.0.0.0:8000/notify",
        "http://127.0.0.1.merchant.invalid/notify",
        "http://localhost.merchant.invalid/notify",
    ],
)
async def test_a_non_loopback_notify_url_is_never_contacted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    # Every way a notification can go out (first attempt, retries over 25 h, each mode, resend,
    # forged copies): none may open a connection to a host that is not loopback.
    sent: list[str] = []

    async def no_network(self: httpx2.AsyncHTTPTransport, request: httpx2.Request) -> httpx2.Response:
        sent.append(str(request.url))
        raise httpx2.ConnectError("the test forbids the network")

    monkeypatch.setattr(httpx2.AsyncHTTPTransport, "handle_async_request", no_network)
    app = create_app(LENIENT, seed=1, start=START)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        sandbox = Sandbox(app=app, http=http, receiver=Receiver())
        for n, mode in enumerate(["normal", "twice", "twice-concurrently", "late", "never"]):
            answer = await sandbox.order(f"BLK{n}", notify_url=url)
            assert answer["result_code"] == "SUCCESS", answer
            paid = await sandbox.pay(answer["prepay_id"], notify=mode)
            assert paid["errMsg"] == "requestPayment:ok"
        refund = {"sub_mch_id": HKD_SUB, "out_trade_no": "BLK0", "out_refund_no": "BLKR0", "total_fee": 1000,
                  "refund_fee": 1000, "notify_url": url}  # fmt: skip
        assert (await sandbox.call("/secapi/pay/refund", refund))["result_code"] == "SUCCESS"
        await sandbox.advance(25 * 3600)
        notes = await sandbox.notifications()
        for note in notes:
            assert (await http.post(f"/sandbox/notifications/{note['id']}/resend")).status_code == 200
        tamper = await http.post(f"/sandbox/notifications/{notes[0]['id']}/resend", json={"tamper": "amount"})
        assert tamper.status_code == 200
    assert sent == []
    notes = [n for n in app.state.sandbox.notifications]
    assert len(notes) == 6  # five payments, one refund
    assert {a.verdict for n in notes for a in n.attempts} == {"blocked"}


async def test_a_loopback_notify_url_does_go_over_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # The counterpart: the guard above really watches the path notifications take.
    sent: list[str] = []

    async def no_network(self: httpx2.AsyncHTTPTransport, request: httpx2.Request) -> httpx2.Response:
        sent.append(str(request.url))
        raise httpx2.ConnectError("the test forbids the network")

    monkeypatch.setattr(httpx2.AsyncHTTPTransport, "handle_async_request", no_network)
    app = create_app(LENIENT, seed=1, start=START)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        sandbox = Sandbox(app=app, http=http, receiver=Receiver())
        await sandbox.paid_order(notify_url="http://127.0.0.1:9/notify")
    assert sent == ["http://127.0.0.1:9/notify"]
    [note] = app.state.sandbox.notifications
    assert note.attempts[0].verdict == "error"


async def test_allow_listed_hosts_are_contacted() -> None:
    config = SandboxConfig.from_dict({"notify": {"allow_hosts": ["merchant.example.com"]}})
    app = create_app(config, seed=1, start=START)
    assert app.state.sandbox.dispatcher.allowed("https://merchant.example.com/notify")
    assert not app.state.sandbox.dispatcher.allowed("https://evil.example.com/notify")


async def test_the_clock_answer_comes_after_every_due_attempt_was_recorded(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(receiver=fail_receiver())
    await sandbox.paid_order()
    clock = await sandbox.advance(60)
    assert datetime.fromisoformat(clock["now"]) == START + timedelta(seconds=60)
    [note] = await sandbox.notifications()
    assert len(note["attempts"]) == 4  # 0, 15, 30, 60 s


def test_real_time_mode_retries_as_the_clock_runs() -> None:
    import time

    from starlette.testclient import TestClient

    from tests.sandbox.conftest import HKD_APP

    receiver = fail_receiver()
    config = SandboxConfig.from_dict({"clock": {"realtime": True, "speed": 200.0}})
    app = create_app(config, seed=1, start=START, notify_transport=httpx2.ASGITransport(receiver.app()))
    with TestClient(app) as http:  # runs the lifespan, hence the ticker
        openid = http.post("/sandbox/login", json={"appid": HKD_APP, "user": "rt"}).json()["openid"]
        fields = {
            "appid": "wx8888888888888888", "mch_id": "1900000109", "nonce_str": "rt1", "sub_mch_id": HKD_SUB,
            "sub_appid": HKD_APP, "body": "rt", "out_trade_no": "RT1", "fee_type": "HKD", "total_fee": 100,
            "spbill_create_ip": "127.0.0.1", "notify_url": "http://m.test/n", "trade_type": "JSAPI",
            "sub_openid": openid,
        }  # fmt: skip
        from minipay.protocol import build_pay_params, encode_xml, sign

        fields["sign"] = sign(fields, KEY)
        prepay = decode_xml(http.post("/pay/unifiedorder", content=encode_xml(fields)).content)["prepay_id"]
        params = build_pay_params(app_id=HKD_APP, prepay_id=prepay, key=KEY)
        assert http.post("/sandbox/pay", json=dict(params)).json()["errMsg"] == "requestPayment:ok"
        deadline = time.monotonic() + 5
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # 15 virtual seconds are 75 ms at x200
        assert len(receiver.received) >= 3
        assert http.get("/sandbox/clock").json()["realtime"] is True


async def test_concurrent_payments_each_answer_after_their_own_notification(make_sandbox: MakeSandbox) -> None:
    import asyncio

    sandbox = make_sandbox(receiver=Receiver(delay=0.02))
    prepays = [(await sandbox.order(f"CC{i}"))["prepay_id"] for i in range(5)]

    async def pay_and_look(prepay: str, no: str) -> int:
        await sandbox.pay(prepay)
        [note] = await sandbox.notifications(no)
        return len(note["attempts"])

    counts = await asyncio.gather(*(pay_and_look(p, f"CC{i}") for i, p in enumerate(prepays)))
    assert counts == [1, 1, 1, 1, 1]


async def test_a_receiver_that_calls_back_into_the_sandbox_does_not_deadlock() -> None:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.sandbox.conftest import SUCCESS_REPLY

    holder: dict[str, httpx2.AsyncClient] = {}

    async def notify(request: Request) -> Response:
        await request.body()
        # The merchant asks WeChat about the order and a test moves the clock, while being notified.
        await holder["http"].get("/sandbox/state")
        await holder["http"].post("/sandbox/clock", json={"advance": 1})
        return Response(SUCCESS_REPLY, media_type="text/xml")

    merchant = Starlette(routes=[Route("/{p:path}", notify, methods=["POST"])])
    app = create_app(LENIENT, seed=1, start=START, notify_transport=httpx2.ASGITransport(merchant))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        holder["http"] = http
        sandbox = Sandbox(app=app, http=http, receiver=Receiver())
        await sandbox.paid_order()
        [note] = await sandbox.notifications()
    assert note["state"] == "delivered"


async def test_the_protocol_parsers_read_the_sandbox_notifications(sandbox: Sandbox) -> None:
    from minipay.protocol import parse_payment_notification, parse_refund_notification

    await sandbox.paid_order(sign_type="HMAC-SHA256")
    payment = parse_payment_notification(sandbox.receiver.received[-1], KEY)
    assert payment.out_trade_no == "ORDER0001"
    assert payment.total_fee == 1000
    assert payment.cash_fee == 920
    assert payment.exchange_rate == 92000000
    fields = {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001", "out_refund_no": "R1", "total_fee": 1000,
              "refund_fee": 1000, "notify_url": "http://merchant.test/refund"}  # fmt: skip
    await sandbox.call("/secapi/pay/refund", fields, sign_type="HMAC-SHA256")
    await sandbox.advance(60)
    refund = parse_refund_notification(sandbox.receiver.received[-1], KEY)
    assert refund.out_refund_no == "R1"
    assert refund.refund_status == "SUCCESS"
    assert refund.refund_fee == 1000
    assert refund.cash_refund_fee == 920


async def test_refunds_without_notify_url_use_the_sub_merchant_default(make_sandbox: MakeSandbox) -> None:
    world = SandboxConfig.default().model_dump()
    world["institutions"][0]["sub_merchants"][0]["refund_notify_url"] = "http://merchant.test/refunds"
    sandbox = make_sandbox(SandboxConfig.from_dict(world))
    await sandbox.paid_order()
    fields = {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001", "out_refund_no": "R1", "total_fee": 1000,
              "refund_fee": 10}  # fmt: skip
    await sandbox.call("/secapi/pay/refund", fields)
    await sandbox.advance(60)
    [note] = [n for n in await sandbox.notifications() if n["kind"] == "refund"]
    assert note["url"] == "http://merchant.test/refunds"


@pytest.mark.parametrize("tamper", ["bad_signature", "amount", "unsigned", "other_key"])
async def test_forged_payment_notifications_fail_verification(sandbox: Sandbox, tamper: str) -> None:
    from minipay.protocol import SignatureError, parse_payment_notification

    await sandbox.paid_order()
    [note] = await sandbox.notifications()
    answer = await sandbox.http.post(f"/sandbox/notifications/{note['id']}/resend", json={"tamper": tamper})
    after = answer.json()
    assert after["attempts"][-1]["tamper"] == tamper
    assert after["state"] == "delivered"  # set by the genuine delivery; a forgery never changes it
    forged = sandbox.receiver.received[-1]
    assert forged != sandbox.receiver.received[0]
    with pytest.raises(SignatureError):
        parse_payment_notification(forged, KEY)


async def test_a_downgraded_notification_is_refused_only_by_a_pinned_policy(sandbox: Sandbox) -> None:
    from minipay.protocol import SignatureError, SignPolicy, parse_payment_notification

    await sandbox.paid_order(sign_type="HMAC-SHA256")
    [note] = await sandbox.notifications()
    await sandbox.http.post(f"/sandbox/notifications/{note['id']}/resend", json={"tamper": "md5_downgrade"})
    downgraded = sandbox.receiver.received[-1]
    assert b"sign_type" not in downgraded
    parse_payment_notification(downgraded, KEY)  # authentic MD5 with the right key
    with pytest.raises(SignatureError):
        parse_payment_notification(downgraded, KEY, policy=SignPolicy(pinned="HMAC-SHA256"))


@pytest.mark.parametrize("tamper", ["other_key", "garbage"])
async def test_forged_refund_notifications_fail_decryption(sandbox: Sandbox, tamper: str) -> None:
    from minipay.protocol import DecryptionError, parse_refund_notification

    await sandbox.paid_order()
    fields = {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001", "out_refund_no": "R1", "total_fee": 1000,
              "refund_fee": 10, "notify_url": "http://merchant.test/refund"}  # fmt: skip
    await sandbox.call("/secapi/pay/refund", fields)
    await sandbox.advance(60)
    [note] = [n for n in await sandbox.notifications() if n["kind"] == "refund"]
    await sandbox.http.post(f"/sandbox/notifications/{note['id']}/resend", json={"tamper": tamper})
    with pytest.raises(DecryptionError):
        parse_refund_notification(sandbox.receiver.received[-1], KEY)


async def test_an_unknown_tamper_is_refused(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    [note] = await sandbox.notifications()
    response = await sandbox.http.post(f"/sandbox/notifications/{note['id']}/resend", json={"tamper": "nope"})
    assert response.status_code == 400
