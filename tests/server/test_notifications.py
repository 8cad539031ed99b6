"""WeChat notifications: applied once, and anything forged or malformed changes nothing (never a 500)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from minipay.protocol import decode_xml, encode_xml, encrypt_req_info, sign
from tests.profiles import STRICT_IN_PROCESS
from tests.server.conftest import FAKE, SUB1, SUB2, World, make_world, on_the_fake

pytestmark = pytest.mark.anyio

API_KEY = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"  # the sandbox default world's institution key
SUCCESS_XML = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


def notification(payment: dict[str, Any], *, key: str = API_KEY, **changes: Any) -> bytes:
    """A payment notification for ``payment`` as WeChat sends it (spec 7.2), signed with ``key``."""
    fields: dict[str, Any] = {
        "return_code": "SUCCESS",
        "appid": "wx8888888888888888",
        "mch_id": "1900000109",
        "sub_appid": payment["sub_appid"],
        "sub_mch_id": payment["sub_mch_id"],
        "nonce_str": "5d2b6c2a8db53831f7eda20af46e531c",
        "result_code": "SUCCESS",
        "openid": "oPq0Ot5Vn3Dxn0J5uEXAMPLEopenid",
        "sub_openid": payment["openid"],
        "trade_type": "JSAPI",
        "bank_type": "OTHERS",
        "total_fee": payment["amount"],
        "fee_type": payment["currency"],
        "cash_fee": 920,
        "cash_fee_type": "CNY",
        "transaction_id": "4200000001202603020000000001",
        "out_trade_no": payment["out_trade_no"],
        "time_end": "20260302120510",
    }
    fields.update(changes)
    fields = {k: v for k, v in fields.items() if v is not None}
    fields["sign"] = sign(fields, key)
    return encode_xml(fields)


async def post_notify(world: World, body: bytes, kind: str = "payment") -> tuple[int, dict[str, str]]:
    response = await world.api.post(f"/wechatpay/notify/{kind}", content=body, headers={"Content-Type": "text/xml"})
    assert response.status_code < 500, response.text
    return response.status_code, decode_xml(response.content)


async def count(world: World, table: str, **where: Any) -> int:
    return await world.count(table, **where)


@on_the_fake
async def test_valid_notification_is_applied_and_answered_with_the_exact_success_xml(world: World) -> None:
    payment = await world.create_payment()
    response = await world.api.post("/wechatpay/notify/payment", content=notification(payment))
    assert response.status_code == 200
    assert response.content == SUCCESS_XML
    current = await world.get(payment["id"])
    assert current["status"] == "succeeded"
    assert current["transaction_id"] == "4200000001202603020000000001"


@on_the_fake
async def test_duplicate_notification_is_acknowledged_once(world: World) -> None:
    payment = await world.create_payment()
    body = notification(payment)
    for _ in range(3):
        status, reply = await post_notify(world, body)
        assert (status, reply["return_code"]) == (200, "SUCCESS")
    assert await count(world, "payment_events", payment_id=payment["id"], type="succeeded") == 1
    assert await count(world, "outbox_events", payment_id=payment["id"], type="payment.succeeded") == 1


@on_the_fake
async def test_a_repeated_notification_is_answered_without_writing(world: World) -> None:
    payment = await world.create_payment()
    body = notification(payment)
    assert (await post_notify(world, body))[1]["return_code"] == "SUCCESS"
    events = await count(world, "payment_events", payment_id=payment["id"])
    for _ in range(3):
        status, reply = await post_notify(world, body)
        assert (status, reply["return_code"]) == (200, "SUCCESS")
    # Answered from a read: not even the audit row a write transaction would have added.
    assert await count(world, "payment_events", payment_id=payment["id"]) == events
    metrics = (await world.api.get("/metrics")).text
    assert 'minipay_notifications_total{kind="payment",outcome="duplicate"} 3.0' in metrics


async def test_fifty_concurrent_deliveries_make_one_transition(world: World) -> None:
    payment = await world.create_payment()
    body = notification(payment)
    replies = await asyncio.gather(*(post_notify(world, body) for _ in range(50)))
    assert all(status == 200 and reply["return_code"] == "SUCCESS" for status, reply in replies)
    assert await count(world, "payment_events", payment_id=payment["id"], type="succeeded") == 1
    assert await count(world, "outbox_events", payment_id=payment["id"], type="payment.succeeded") == 1
    assert (await world.get(payment["id"]))["status"] == "succeeded"


async def test_a_notification_decided_on_a_stale_read_is_applied_once(world: World) -> None:
    # The notification's payment is read without a lock, and the first write attempt decides on that
    # read. Here an order query applies the same success between that read and the write: the
    # notification's conditional write must lose, start over on the locked row, and change nothing.
    from minipay.protocol import OrderQueryResponse, PaymentNotification
    from minipay.server.domain import ApplyOutcome, PaymentResult
    from minipay.server.services import apply_payment_result

    payment = await world.create_payment()
    fields = decode_xml(notification(payment))
    del fields["sign"]
    query = PaymentResult.from_query(OrderQueryResponse.from_fields({**fields, "trade_state": "SUCCESS"}))
    notified = PaymentResult.from_notification(PaymentNotification.from_fields(fields))
    factory = world.container.uow_factory
    reads = 0

    class Interleaving:
        def __init__(self) -> None:
            self.uow = factory()

        def reading(self) -> Interleaving:
            self.uow.reading()
            return self

        def looking_up(self) -> Interleaving:
            self.uow.looking_up()
            return self

        def writing_at_commit(self) -> Interleaving:
            self.uow.writing_at_commit()
            return self

        async def __aenter__(self) -> Any:
            return await self.uow.__aenter__()

        async def __aexit__(self, *exc: Any) -> None:
            nonlocal reads
            await self.uow.__aexit__(*exc)
            if self.uow.read_only and reads == 0:
                reads += 1  # the notification's unlocked read is done: the query wins the race now
                outcome = await apply_payment_result(factory, query, source="query", clock=world.clock)
                assert outcome is ApplyOutcome.APPLIED

    outcome = await apply_payment_result(Interleaving, notified, source="notification", clock=world.clock)
    assert reads == 1
    assert outcome is ApplyOutcome.DUPLICATE
    assert (await world.get(payment["id"]))["status"] == "succeeded"
    assert await count(world, "payment_events", payment_id=payment["id"], type="succeeded") == 1
    assert await count(world, "outbox_events", payment_id=payment["id"], type="payment.succeeded") == 1
    assert await count(world, "payment_events", payment_id=payment["id"], type="notification.duplicate") == 1


@on_the_fake
async def test_late_notpay_query_never_undoes_a_success(world: World) -> None:
    from minipay.server.domain import ApplyOutcome, PaymentResult
    from minipay.server.services import apply_payment_result

    payment = await world.create_payment()
    await post_notify(world, notification(payment))
    from minipay.protocol import OrderQueryResponse

    stale = PaymentResult.from_query(
        OrderQueryResponse.from_fields(
            {
                "return_code": "SUCCESS",
                "result_code": "SUCCESS",
                "out_trade_no": payment["out_trade_no"],
                "mch_id": "1900000109",
                "sub_mch_id": SUB1,
                "trade_state": "NOTPAY",
            }
        )
    )
    outcome = await apply_payment_result(world.container.uow_factory, stale, source="query", clock=world.clock)
    assert outcome is ApplyOutcome.NO_CHANGE
    assert (await world.get(payment["id"]))["status"] == "succeeded"


@on_the_fake
@pytest.mark.parametrize(
    "case",
    [
        "forged_signature",
        "wrong_key",
        "md5_downgrade_claimed_hmac",
        "wrong_sub_merchant",
        "foreign_mch_id",
        "unknown_order",
        "result_code_fail",
        "xxe",
        "billion_laughs",
        "oversized",
        "not_xml",
        "empty",
    ],
)
async def test_hostile_or_foreign_notification_changes_nothing(world: World, case: str) -> None:
    payment = await world.create_payment()
    other = await world.create_payment(SUB2, amount=500, currency="JPY")
    before = await world.snapshot()
    bodies = {
        "forged_signature": notification(payment)[:-40] + notification(payment, nonce_str="x")[-40:],
        "wrong_key": notification(payment, key="Z" * 32),
        "md5_downgrade_claimed_hmac": notification(payment, sign_type="HMAC-SHA256"),
        "wrong_sub_merchant": notification(payment, sub_mch_id=SUB2, sub_appid=other["sub_appid"]),
        "foreign_mch_id": notification(payment, mch_id="1900009999"),
        "unknown_order": notification(payment, out_trade_no="NOSUCHORDER123"),
        "result_code_fail": notification(payment, result_code="FAIL", err_code="SYSTEMERROR"),
        "xxe": (
            b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b"<xml><return_code>SUCCESS</return_code><out_trade_no>&xxe;</out_trade_no></xml>"
        ),
        "billion_laughs": (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
            b"<xml><return_code>&lol2;</return_code></xml>"
        ),
        "oversized": b"<xml><return_code>SUCCESS</return_code><pad>" + b"A" * (70 * 1024) + b"</pad></xml>",
        "not_xml": b'{"return_code": "SUCCESS"}',
        "empty": b"",
    }
    status, reply = await post_notify(world, bodies[case])
    if case == "result_code_fail":
        assert reply["return_code"] == "SUCCESS"  # acknowledged: a failed attempt is not a payment
    else:
        assert reply["return_code"] == "FAIL"
        assert status in (200, 400, 413)
    if case == "oversized":
        assert status == 413
    assert await world.snapshot() == before
    assert (await world.get(payment["id"]))["status"] == "pending"


async def test_wrong_amount_changes_no_payment_but_records_an_alert(world: World) -> None:
    payment = await world.create_payment()
    before = await world.snapshot(("payments", "refunds"))
    for _ in range(2):  # WeChat retries: still one alert event for the same message
        _status, reply = await post_notify(world, notification(payment, total_fee=1))
        assert reply["return_code"] == "FAIL"
    _status, reply = await post_notify(world, notification(payment, fee_type="CNY"))
    assert reply["return_code"] == "FAIL"
    assert await world.snapshot(("payments", "refunds")) == before
    assert await count(world, "payment_events", payment_id=payment["id"], type="amount_mismatch") == 3
    assert await count(world, "outbox_events", payment_id=payment["id"], type="payment.amount_mismatch") == 2


@on_the_fake
async def test_refund_notification_with_tampered_req_info_changes_nothing(world: World) -> None:
    payment = await world.create_payment()
    await world.pay(payment)
    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 100}, headers={**world.auth(), "Idempotency-Key": "r1"}
    )
    assert refund.status_code == 201
    before = await world.snapshot()
    outer = {
        "return_code": "SUCCESS",
        "appid": "wx8888888888888888",
        "mch_id": "1900000109",
        "sub_appid": payment["sub_appid"],
        "sub_mch_id": SUB1,
        "nonce_str": "abc",
    }
    inner = encode_xml(
        {
            "out_refund_no": refund.json()["out_refund_no"],
            "out_trade_no": payment["out_trade_no"],
            "refund_status": "SUCCESS",
            "refund_fee": 100,
            "total_fee": 1000,
        },
        root="root",
    )
    forged = encrypt_req_info(inner, "Q" * 32)  # not our key
    for req_info in (forged, "not-base64!!", forged[:-8]):
        status, reply = await post_notify(world, encode_xml({**outer, "req_info": req_info}), "refund")
        assert (status, reply["return_code"]) == (400, "FAIL")
    status, reply = await post_notify(world, encode_xml(outer), "refund")
    assert reply["return_code"] == "FAIL"
    # A req_info that repeats an outer field (another sub-merchant inside) is refused, not merged.
    repeats = encode_xml({**decode_xml(inner, root="root"), "sub_mch_id": SUB2}, root="root")
    status, reply = await post_notify(
        world, encode_xml({**outer, "req_info": encrypt_req_info(repeats, API_KEY)}), "refund"
    )
    assert (status, reply["return_code"]) == (400, "FAIL")
    assert await world.snapshot() == before
    # And the genuine one, encrypted with our key, is applied.
    genuine = encrypt_req_info(inner, API_KEY)
    status, reply = await post_notify(world, encode_xml({**outer, "req_info": genuine}), "refund")
    assert (status, reply["return_code"]) == (200, "SUCCESS")
    assert (await world.get(payment["id"]))["status"] == "partially_refunded"


@on_the_fake
async def test_notification_never_creates_a_payment(world: World) -> None:
    fake = {
        "sub_appid": "wx1234567890abcdef",
        "sub_mch_id": SUB1,
        "openid": "o1",
        "amount": 1,
        "currency": "HKD",
        "out_trade_no": "NEVERCREATED1",
    }
    _status, reply = await post_notify(world, notification(fake))
    assert reply["return_code"] == "FAIL"
    assert await count(world, "payments") == 0


async def test_with_hmac_sha256_configured_an_md5_notification_is_a_refused_downgrade() -> None:
    async with make_world(FAKE, sign_type="HMAC-SHA256") as world:
        payment = await world.create_payment()
        before = await world.snapshot()
        status, reply = await post_notify(world, notification(payment))  # MD5, correctly signed with our key
        assert (status, reply["return_code"]) == (400, "FAIL")
        assert await world.snapshot() == before
        await world.pay(payment)  # the sandbox notifies with HMAC-SHA256, as the order was signed
        assert (await world.get(payment["id"]))["status"] == "succeeded"


async def test_an_hmac_notification_without_sign_type_is_applied_by_the_configured_algorithm() -> None:
    # Live HMAC-SHA256 notifications come without sign_type (the strict sandbox sends them so): the
    # institution's configured algorithm decides, never the message (absent must not mean MD5).
    strict = STRICT_IN_PROCESS.replace(notify={"asynchronous": False})
    async with make_world(FAKE, sign_type="HMAC-SHA256", sandbox_config=strict) as world:
        payment = await world.create_payment()
        await world.pay(payment)
        notes = (await world.wx.get("/sandbox/notifications", params={"out_trade_no": payment["out_trade_no"]})).json()
        [note] = notes["notifications"]
        assert "sign_type" not in decode_xml(note["body"].encode())
        assert note["attempts"][0]["verdict"] == "ack"
        assert (await world.get(payment["id"]))["status"] == "succeeded"


@on_the_fake
async def test_forged_copies_sent_by_the_sandbox_are_refused_and_the_genuine_one_applied(world: World) -> None:
    payment = await world.create_payment()
    await world.wx.post("/sandbox/notify-mode", json={"mode": "never", "out_trade_no": payment["out_trade_no"]})
    await world.pay(payment)
    notes = (await world.wx.get("/sandbox/notifications", params={"out_trade_no": payment["out_trade_no"]})).json()
    note_id = notes["notifications"][0]["id"]
    before = await world.snapshot(("payments", "refunds", "outbox_events"))
    for tamper in ("bad_signature", "unsigned", "other_key", "amount"):
        sent = (await world.wx.post(f"/sandbox/notifications/{note_id}/resend", json={"tamper": tamper})).json()
        assert sent["attempts"][-1]["verdict"] == "nack", tamper
        assert sent["attempts"][-1]["status"] < 500
    # ("amount" changes total_fee after signing: the signature no longer matches, so no alert either.)
    assert await world.snapshot(("payments", "refunds", "outbox_events")) == before
    assert (await world.get(payment["id"]))["status"] == "pending"
    genuine = (await world.wx.post(f"/sandbox/notifications/{note_id}/resend")).json()
    assert genuine["attempts"][-1]["verdict"] == "ack"
    assert (await world.get(payment["id"]))["status"] == "succeeded"

    await world.wx.post("/sandbox/notify-mode", json={"mode": "never", "out_trade_no": payment["out_trade_no"]})
    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 100}, headers={**world.auth(), "Idempotency-Key": "f"}
    )
    await world.advance(120)
    notes = (
        await world.wx.get("/sandbox/notifications", params={"out_trade_no": payment["out_trade_no"], "kind": "refund"})
    ).json()
    refund_note = notes["notifications"][0]["id"]
    for tamper in ("other_key", "garbage"):
        sent = (await world.wx.post(f"/sandbox/notifications/{refund_note}/resend", json={"tamper": tamper})).json()
        assert sent["attempts"][-1]["verdict"] == "nack", tamper
    assert (await world.api.get(f"/v1/refunds/{refund.json()['id']}", headers=world.auth())).json()[
        "status"
    ] == "processing"
    sent = (await world.wx.post(f"/sandbox/notifications/{refund_note}/resend")).json()
    assert sent["attempts"][-1]["verdict"] == "ack"
    assert (await world.api.get(f"/v1/refunds/{refund.json()['id']}", headers=world.auth())).json()[
        "status"
    ] == "succeeded"


async def test_a_database_failure_is_answered_fail_in_xml_so_wechat_retries(world: World) -> None:
    payment = await world.create_payment()
    async with world.container.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE payments RENAME TO payments_away")
    response = await world.api.post("/wechatpay/notify/payment", content=notification(payment))
    assert response.status_code == 503
    assert decode_xml(response.content)["return_code"] == "FAIL"
    async with world.container.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE payments_away RENAME TO payments")
    status, reply = await post_notify(world, notification(payment))
    assert (status, reply["return_code"]) == (200, "SUCCESS")


@on_the_fake
async def test_an_oversized_chunked_body_is_refused_while_streaming(world: World) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"<xml><return_code>SUCCESS</return_code><pad>"
        for _ in range(100):
            yield b"A" * 1024
        yield b"</pad></xml>"

    before = await world.snapshot()
    response = await world.api.post("/wechatpay/notify/payment", content=chunks())
    assert response.status_code == 413
    assert decode_xml(response.content)["return_code"] == "FAIL"
    assert await world.snapshot() == before


@on_the_fake
async def test_a_notification_without_fee_type_is_cny_and_refused_for_a_hkd_payment(world: World) -> None:
    payment = await world.create_payment()
    before = await world.snapshot(("payments", "refunds"))
    _status, reply = await post_notify(world, notification(payment, fee_type=None))
    assert reply["return_code"] == "FAIL"
    assert await world.snapshot(("payments", "refunds")) == before
    assert await count(world, "payment_events", payment_id=payment["id"], type="amount_mismatch") == 1
    assert await count(world, "outbox_events", payment_id=payment["id"], type="payment.amount_mismatch") == 1


@on_the_fake
async def test_a_refund_notification_with_a_wrong_refund_fee_changes_nothing_and_raises_one_alert(
    world: World,
) -> None:
    payment = await world.create_payment()
    await world.pay(payment)
    refund = await world.api.post(
        f"/v1/payments/{payment['id']}/refunds", json={"amount": 100}, headers={**world.auth(), "Idempotency-Key": "r"}
    )
    assert refund.status_code == 201
    inner = encode_xml(
        {
            "out_refund_no": refund.json()["out_refund_no"],
            "out_trade_no": payment["out_trade_no"],
            "refund_status": "SUCCESS",
            "refund_fee": 1000,  # we asked for 100
            "total_fee": 1000,
        },
        root="root",
    )
    body = encode_xml(
        {
            "return_code": "SUCCESS",
            "appid": "wx8888888888888888",
            "mch_id": "1900000109",
            "sub_mch_id": SUB1,
            "nonce_str": "abc",
            "req_info": encrypt_req_info(inner, API_KEY),
        }
    )
    before = await world.snapshot(("payments", "refunds"))
    for _ in range(2):  # WeChat retries: one alert for the same message
        _status, reply = await post_notify(world, body, "refund")
        assert reply["return_code"] == "FAIL"
    assert await world.snapshot(("payments", "refunds")) == before
    assert await count(world, "payment_events", refund_id=refund.json()["id"], type="refund_amount_mismatch") == 2
    assert await count(world, "outbox_events", refund_id=refund.json()["id"], type="payment.amount_mismatch") == 1


@on_the_fake
async def test_notifications_are_answered_before_routing_and_observed_as_their_route(world: World) -> None:
    import httpx2

    payment = await world.create_payment()
    body = notification(payment)
    response = await world.api.post(
        "/wechatpay/notify/payment", content=body, headers={"X-Request-Id": "req-notify-early-1"}
    )
    assert (response.status_code, response.content) == (200, SUCCESS_XML)
    assert response.headers["content-type"] == "application/xml"
    assert response.headers["x-request-id"] == "req-notify-early-1"
    metrics = (await world.api.get("/metrics")).text
    assert 'minipay_http_requests_total{method="POST",route="/wechatpay/notify/payment",status="200"} 1.0' in metrics
    assert 'minipay_notifications_total{kind="payment",outcome="applied"} 1.0' in metrics
    # Other methods go on to the router, which knows the route and its method.
    assert (await world.api.get("/wechatpay/notify/payment")).status_code == 405
    # Under a proxy's mount point, the path the router would match.
    mounted = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=world.service, root_path="/pay"), base_url="http://minipay.test"
    )
    async with mounted:
        again = await mounted.post("/pay/wechatpay/notify/payment", content=body)
    assert (again.status_code, again.content) == (200, SUCCESS_XML)
    # The router itself answers the same routes, should the early layer be left out.
    routed = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=world.service.router), base_url="http://minipay.test"
    )
    async with routed:
        direct = await routed.post("/wechatpay/notify/payment", content=body)
    assert (direct.status_code, direct.content) == (200, SUCCESS_XML)
    assert await count(world, "payment_events", payment_id=payment["id"], type="succeeded") == 1
