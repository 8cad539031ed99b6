"""Retry, fail-over, timeout and signature behaviour, proven with ``httpx2.MockTransport``."""

from __future__ import annotations

import gzip
from datetime import date, datetime
from typing import Any

import httpx2
import pytest

from minipay.client import (
    AsyncClient,
    Backoff,
    BusinessError,
    Client,
    ClientEvent,
    CommunicationError,
    ConnectError,
    OrderPaidError,
    ReadTimeoutError,
    ResponseSignatureError,
    SignatureError,
    UnexpectedResponseError,
    WeChatSystemError,
)
from minipay.protocol import CHINA_TZ
from tests.client.conftest import (
    APPID,
    KEY,
    MCH_ID,
    ORDER,
    REFUND,
    SUB_APPID,
    SUB_MCH_ID,
    FakeWeChat,
    Sleeps,
    business_error,
    forged,
    ok_fields,
    raw,
    signed,
    system_error,
)

HK = "https://apihk.mch.weixin.qq.com"
US = "https://apius.mch.weixin.qq.com"


def make_client(fake: FakeWeChat, sleeps: Sleeps, **kwargs: Any) -> Client:
    options: dict[str, Any] = {
        "appid": APPID,
        "mch_id": MCH_ID,
        "api_key": KEY,
        "sub_mch_id": SUB_MCH_ID,
        "sub_appid": SUB_APPID,
        "transport": httpx2.MockTransport(fake),
        "sleep": sleeps,
        "random": lambda: 0.5,
    }
    options.update(kwargs)
    return Client(**options)


def make_async_client(fake: FakeWeChat, sleeps: Sleeps, **kwargs: Any) -> AsyncClient:
    options: dict[str, Any] = {
        "appid": APPID,
        "mch_id": MCH_ID,
        "api_key": KEY,
        "sub_mch_id": SUB_MCH_ID,
        "sub_appid": SUB_APPID,
        "transport": httpx2.MockTransport(fake),
        "sleep": sleeps.asleep,
        "random": lambda: 0.5,
    }
    options.update(kwargs)
    return AsyncClient(**options)


def business_fields(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in ("nonce_str", "sign")}


def test_systemerror_is_retried_with_identical_business_fields_and_a_fresh_nonce(
    fake: FakeWeChat, sleeps: Sleeps
) -> None:
    fake.script = [system_error, system_error]
    with make_client(fake, sleeps) as client:
        order = client.orders.create(**ORDER)
    assert order.prepay_id == "wx201411101639507cbf6ffd8b0779950874"
    assert len(fake.requests) == 3
    first = business_fields(fake.bodies[0])
    assert all(business_fields(body) == first for body in fake.bodies)
    assert first["out_trade_no"] == ORDER["out_trade_no"]
    assert len({body["nonce_str"] for body in fake.bodies}) == 3
    assert len({body["sign"] for body in fake.bodies}) == 3
    # Exponential backoff with jitter: 0.5 s then 1 s, each scaled by (1 - 0.5 * 0.5).
    assert sleeps.delays == [0.375, 0.75]


def test_systemerror_after_the_last_retry_raises_with_the_operation_and_ids(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [system_error] * 3
    with make_client(fake, sleeps, max_retries=2) as client, pytest.raises(WeChatSystemError) as caught:
        client.orders.create(**ORDER)
    error = caught.value
    assert len(fake.requests) == 3
    assert error.operation == "unifiedorder"
    assert error.err_code == "SYSTEMERROR"
    assert error.retryable is True
    assert error.outcome_unknown is True  # a create that kept failing may still have happened
    assert error.ids == {"mch_id": MCH_ID, "sub_mch_id": SUB_MCH_ID, "out_trade_no": ORDER["out_trade_no"]}


def test_refund_systemerror_is_retried_with_the_same_out_refund_no(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [system_error]
    with make_client(fake, sleeps) as client:
        refund = client.refunds.create(**REFUND)
    assert refund.out_refund_no == REFUND["out_refund_no"]
    assert [body["out_refund_no"] for body in fake.bodies] == [REFUND["out_refund_no"]] * 2
    assert fake.bodies[0]["nonce_str"] != fake.bodies[1]["nonce_str"]


def test_connection_errors_are_retried_with_identical_fields(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [httpx2.ConnectError("refused"), httpx2.ConnectTimeout("slow")]
    with make_client(fake, sleeps) as client:
        client.orders.create(**ORDER)
    # The fake records what each attempt tried to send, then raises the scripted failure.
    assert len(fake.requests) == 3
    first = business_fields(fake.bodies[0])
    assert all(business_fields(body) == first for body in fake.bodies)
    assert len({body["nonce_str"] for body in fake.bodies}) == 3
    assert sleeps.delays == [0.375, 0.75]


def test_connection_errors_fail_over_to_the_next_host_in_order(fake: FakeWeChat, sleeps: Sleeps) -> None:
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.host)
        if request.url.host == "apihk.mch.weixin.qq.com":
            raise httpx2.ConnectError("apihk unreachable")
        return fake(request)

    with make_client(fake, sleeps, transport=httpx2.MockTransport(handler), failover=["US"]) as client:
        assert client.hosts == (HK, US)
        client.orders.query(out_trade_no="ORDER20240101000001")
    assert seen == ["apihk.mch.weixin.qq.com", "apius.mch.weixin.qq.com"]
    assert sleeps.delays == []  # failing over is immediate; backing off is for a whole round


def test_when_every_host_refuses_the_client_backs_off_and_starts_again_from_the_first(
    fake: FakeWeChat, sleeps: Sleeps
) -> None:
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.host)
        raise httpx2.ConnectError("down")

    with (
        make_client(fake, sleeps, transport=httpx2.MockTransport(handler), failover=["US"], max_retries=1) as client,
        pytest.raises(ConnectError) as caught,
    ):
        client.orders.create(**ORDER)
    assert seen == ["apihk.mch.weixin.qq.com", "apius.mch.weixin.qq.com"] * 2
    assert sleeps.delays == [0.375]
    assert caught.value.retryable is True
    assert caught.value.outcome_unknown is False


@pytest.mark.parametrize("operation", ["orders.create", "refunds.create", "orders.close"])
def test_a_read_timeout_on_a_write_is_not_retried_and_leaves_the_outcome_unknown(
    fake: FakeWeChat, sleeps: Sleeps, operation: str
) -> None:
    fake.script = [lambda request, fields: (_ for _ in ()).throw(httpx2.ReadTimeout("no answer"))]
    calls = {
        "orders.create": lambda client: client.orders.create(**ORDER),
        "refunds.create": lambda client: client.refunds.create(**REFUND),
        "orders.close": lambda client: client.orders.close(out_trade_no="ORDER20240101000001"),
    }
    with make_client(fake, sleeps) as client, pytest.raises(ReadTimeoutError) as caught:
        calls[operation](client)
    assert len(fake.requests) == 1
    assert sleeps.delays == []
    assert caught.value.outcome_unknown is True
    assert caught.value.retryable is False


def test_a_read_timeout_on_a_query_is_retried(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [lambda request, fields: (_ for _ in ()).throw(httpx2.ReadTimeout("no answer"))]
    with make_client(fake, sleeps) as client:
        result = client.orders.query(out_trade_no="ORDER20240101000001")
    assert result.trade_state == "NOTPAY"
    assert len(fake.requests) == 2


def test_a_dropped_connection_after_sending_a_create_is_an_unknown_outcome(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [lambda request, fields: (_ for _ in ()).throw(httpx2.RemoteProtocolError("server disconnected"))]
    with make_client(fake, sleeps) as client, pytest.raises(ReadTimeoutError) as caught:
        client.orders.create(**ORDER)
    assert caught.value.outcome_unknown is True
    assert len(fake.requests) == 1


def test_an_answer_httpx2_cannot_decode_is_an_unexpected_response_not_a_raw_httpx2_error(
    fake: FakeWeChat, sleeps: Sleeps
) -> None:
    def broken_gzip(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
        return httpx2.Response(200, content=b"not gzip at all", headers={"Content-Encoding": "gzip"})

    fake.script = [broken_gzip]
    with make_client(fake, sleeps) as client, pytest.raises(UnexpectedResponseError) as caught:
        client.refunds.create(**REFUND)
    assert caught.value.outcome_unknown is True  # the refund may have been processed
    assert caught.value.out_refund_no == REFUND["out_refund_no"]
    assert len(fake.requests) == 1
    fake.script = [broken_gzip]
    with make_client(fake, sleeps) as client:  # a read is asked again
        assert client.orders.query(out_trade_no=ORDER["out_trade_no"]).trade_state == "NOTPAY"


def test_a_response_with_a_wrong_signature_is_rejected_before_result_code(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [forged]
    with make_client(fake, sleeps) as client, pytest.raises(SignatureError):
        client.orders.create(**ORDER)
    assert len(fake.requests) == 1  # never retried: a forged answer is not a transient failure


@pytest.mark.parametrize(
    ("operation", "wire", "unknown"),
    [
        ("orders.create", "unifiedorder", True),
        ("refunds.create", "refund", True),
        ("orders.close", "closeorder", True),
        ("orders.query", "orderquery", False),
    ],
)
def test_a_bad_answer_signature_carries_the_call_and_leaves_a_write_unknown(
    fake: FakeWeChat, sleeps: Sleeps, operation: str, wire: str, unknown: bool
) -> None:
    # A damaged or tampered copy of a real success looks like this: a refund recorded as failed
    # while WeChat paid it out would invite a second refund, so the caller must query first.
    calls = {
        "orders.create": lambda client: client.orders.create(**ORDER),
        "refunds.create": lambda client: client.refunds.create(**REFUND),
        "orders.close": lambda client: client.orders.close(out_trade_no=ORDER["out_trade_no"]),
        "orders.query": lambda client: client.orders.query(out_trade_no=ORDER["out_trade_no"]),
    }
    fake.script = [forged]
    with make_client(fake, sleeps) as client, pytest.raises(ResponseSignatureError) as caught:
        calls[operation](client)
    error = caught.value
    assert isinstance(error, SignatureError)
    assert not isinstance(error, BusinessError)
    assert error.operation == wire
    assert error.outcome_unknown is unknown
    assert error.retryable is False
    assert error.err_code == ""
    assert error.mch_id == MCH_ID
    assert error.sub_mch_id == SUB_MCH_ID
    assert error.out_trade_no == ORDER["out_trade_no"]
    if operation == "refunds.create":
        assert error.out_refund_no == REFUND["out_refund_no"]
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("out_trade_no", "SOMEONE-ELSES-ORDER"), ("mch_id", "1900000999"), ("appid", "wx9999999999999999")],
)
def test_a_verified_answer_to_another_call_is_refused(fake: FakeWeChat, sleeps: Sleeps, field: str, value: str) -> None:
    # v2 echoes no request nonce: a correctly signed answer replayed from another call must not be
    # taken as this call's answer (e.g. another order's "SUCCESS" for this order's query).
    def replayed(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
        answer = ok_fields(request.url.path, fields) | {field: value}
        return httpx2.Response(200, content=signed(answer))

    fake.script = [replayed]
    with make_client(fake, sleeps) as client, pytest.raises(UnexpectedResponseError, match=field) as caught:
        client.orders.create(**ORDER)
    assert caught.value.outcome_unknown is True
    assert caught.value.out_trade_no == ORDER["out_trade_no"]
    assert len(fake.requests) == 1
    fake.script = [replayed]
    with make_client(fake, sleeps) as client:  # a read is asked again; the honest answer is accepted
        assert client.orders.query(out_trade_no=ORDER["out_trade_no"]).out_trade_no == ORDER["out_trade_no"]
    assert len(fake.requests) == 3


def test_a_malformed_signed_success_names_the_call(fake: FakeWeChat, sleeps: Sleeps) -> None:
    def no_prepay_id(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
        answer = ok_fields(request.url.path, fields)
        del answer["prepay_id"]
        return httpx2.Response(200, content=signed(answer))

    fake.script = [no_prepay_id]
    with make_client(fake, sleeps) as client, pytest.raises(UnexpectedResponseError) as caught:
        client.orders.create(**ORDER)
    assert caught.value.operation == "unifiedorder"
    assert caught.value.out_trade_no == ORDER["out_trade_no"]
    assert caught.value.outcome_unknown is True
    assert len(fake.requests) == 1


def test_a_forged_business_failure_is_a_signature_error_not_a_business_error(fake: FakeWeChat, sleeps: Sleeps) -> None:
    def forged_paid(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
        answer = business_error("ORDERPAID")(request, fields)
        text = answer.content.replace(b"ORDERPAID", b"ORDERCLOSED")  # tampered after signing
        return httpx2.Response(200, content=text)

    fake.script = [forged_paid]
    with make_client(fake, sleeps) as client, pytest.raises(SignatureError):
        client.orders.create(**ORDER)


def test_an_unsigned_success_is_rejected(fake: FakeWeChat, sleeps: Sleeps) -> None:
    unsigned = (
        b"<xml><return_code>SUCCESS</return_code><result_code>SUCCESS</result_code><prepay_id>wx1</prepay_id></xml>"
    )
    fake.script = [raw(200, unsigned)]
    with make_client(fake, sleeps) as client, pytest.raises(SignatureError):
        client.orders.create(**ORDER)


def test_hmac_sha256_pinning_refuses_an_md5_signed_answer(sleeps: Sleeps) -> None:
    fake = FakeWeChat(sign_type="MD5")
    with make_client(fake, sleeps, sign_type="HMAC-SHA256") as client, pytest.raises(SignatureError):
        client.orders.query(out_trade_no="ORDER20240101000001")
    assert fake.bodies[0]["sign_type"] == "HMAC-SHA256"
    assert len(fake.bodies[0]["sign"]) == 64


def test_hmac_sha256_client_accepts_hmac_answers(sleeps: Sleeps) -> None:
    fake = FakeWeChat(sign_type="HMAC-SHA256")
    with make_client(fake, sleeps, sign_type="HMAC-SHA256") as client:
        assert client.orders.query(out_trade_no="ORDER20240101000001").trade_state == "NOTPAY"


def test_business_errors_map_to_their_class_and_are_not_retried(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [business_error("ORDERPAID")]
    with make_client(fake, sleeps) as client, pytest.raises(OrderPaidError) as caught:
        client.orders.create(**ORDER)
    assert len(fake.requests) == 1
    assert caught.value.err_code == "ORDERPAID"
    assert caught.value.out_trade_no == ORDER["out_trade_no"]


def test_return_code_fail_is_a_communication_error(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [raw(200, "<xml><return_code>FAIL</return_code><return_msg>签名错误</return_msg></xml>".encode())]
    with make_client(fake, sleeps) as client, pytest.raises(CommunicationError) as caught:
        client.orders.query(out_trade_no="ORDER20240101000001")
    assert caught.value.return_msg == "签名错误"


def test_http_500_on_a_create_is_an_unknown_outcome_and_not_retried(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [raw(500, b"oops")]
    with make_client(fake, sleeps) as client, pytest.raises(UnexpectedResponseError) as caught:
        client.orders.create(**ORDER)
    assert caught.value.outcome_unknown is True
    assert len(fake.requests) == 1


def test_sleep_and_clock_are_injectable_and_events_carry_latency(fake: FakeWeChat, sleeps: Sleeps) -> None:
    ticks = iter(float(n) for n in range(100))
    events: list[ClientEvent] = []
    fake.script = [system_error]
    with make_client(fake, sleeps, clock=lambda: next(ticks), on_event=events.append) as client:
        client.orders.query(out_trade_no="ORDER20240101000001")
    kinds = [(e.kind, e.attempt, e.outcome) for e in events]
    assert kinds == [
        ("request", 1, None),
        ("response", 1, "SYSTEMERROR"),
        ("retry", 1, "SYSTEMERROR"),
        ("request", 2, None),
        ("response", 2, "ok"),
    ]
    assert all(e.latency == 1.0 for e in events if e.kind == "response")
    assert events[0].ids["out_trade_no"] == "ORDER20240101000001"


def test_custom_backoff_and_max_retries_zero(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [system_error]
    with (
        make_client(fake, sleeps, max_retries=0, backoff=Backoff(initial=2.0)) as client,
        pytest.raises(WeChatSystemError),
    ):
        client.orders.query(out_trade_no="ORDER20240101000001")
    assert sleeps.delays == []


@pytest.mark.anyio
async def test_async_client_retries_systemerror_with_identical_fields(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [system_error]
    async with make_async_client(fake, sleeps) as client:
        order = await client.orders.create(**ORDER)
    assert order.prepay_id
    assert business_fields(fake.bodies[0]) == business_fields(fake.bodies[1])
    assert fake.bodies[0]["nonce_str"] != fake.bodies[1]["nonce_str"]
    assert sleeps.delays == [0.375]


@pytest.mark.anyio
async def test_async_client_fails_over_and_does_not_retry_a_timed_out_refund(sleeps: Sleeps) -> None:
    fake = FakeWeChat()
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.host)
        if request.url.host == "apihk.mch.weixin.qq.com":
            raise httpx2.ConnectError("down")
        raise httpx2.ReadTimeout("no answer")

    async with make_async_client(fake, sleeps, transport=httpx2.MockTransport(handler), failover=["US"]) as client:
        with pytest.raises(ReadTimeoutError) as caught:
            await client.refunds.create(**REFUND)
    assert seen == ["apihk.mch.weixin.qq.com", "apius.mch.weixin.qq.com"]
    assert caught.value.outcome_unknown is True


@pytest.mark.anyio
async def test_async_client_rejects_a_forged_answer(fake: FakeWeChat, sleeps: Sleeps) -> None:
    fake.script = [forged]
    async with make_async_client(fake, sleeps) as client:
        with pytest.raises(SignatureError):
            await client.orders.query(out_trade_no="ORDER20240101000001")


def test_an_injected_http_client_is_used_and_left_open(fake: FakeWeChat, sleeps: Sleeps) -> None:
    http = httpx2.Client(transport=httpx2.MockTransport(fake))
    with make_client(fake, sleeps, transport=None, http_client=http) as client:
        client.orders.query(out_trade_no="ORDER20240101000001")
    assert not http.is_closed
    http.close()


def test_the_default_sub_appid_is_not_sent_with_another_sub_merchant(fake: FakeWeChat, sleeps: Sleeps) -> None:
    with make_client(fake, sleeps) as client:
        client.orders.query(out_trade_no="O1")
        client.orders.query(out_trade_no="O1", sub_mch_id="1900000111")
        client.orders.query(out_trade_no="O1", sub_mch_id="1900000111", sub_appid="wx2234567890abcdef")
    assert fake.bodies[0]["sub_appid"] == SUB_APPID
    assert "sub_appid" not in fake.bodies[1]
    assert fake.bodies[2]["sub_appid"] == "wx2234567890abcdef"


def _timeout(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
    raise httpx2.ReadTimeout("no answer")


def _refused(request: httpx2.Request, fields: dict[str, str]) -> httpx2.Response:
    raise httpx2.ConnectError("refused")


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (_refused, ConnectError),
        (_timeout, ReadTimeoutError),
        (system_error, WeChatSystemError),
        (business_error("ORDERPAID"), OrderPaidError),
        (raw(200, b"<xml><return_code>FAIL</return_code><return_msg>bad</return_msg></xml>"), CommunicationError),
        (forged, ResponseSignatureError),
        (raw(502, b"bad gateway"), UnexpectedResponseError),
    ],
)
def test_every_error_of_a_call_carries_the_operation_ids_codes_and_flags(
    fake: FakeWeChat, sleeps: Sleeps, reply: Any, kind: type[Exception]
) -> None:
    fake.script = [reply] * 3
    with make_client(fake, sleeps) as client, pytest.raises(kind) as caught:
        client.orders.create(**ORDER)
    error: Any = caught.value
    assert error.operation == "unifiedorder"
    assert error.ids["mch_id"] == MCH_ID
    assert error.ids["sub_mch_id"] == SUB_MCH_ID
    assert error.ids["out_trade_no"] == ORDER["out_trade_no"]
    assert isinstance(error.err_code, str)
    assert isinstance(error.err_code_des, str)
    assert isinstance(error.retryable, bool)
    assert isinstance(error.outcome_unknown, bool)
    assert ORDER["out_trade_no"] in str(error)


def _bill_body() -> bytes:
    from minipay.protocol import BillRow, render_bill

    row = BillRow(
        transaction_time=datetime(2024, 1, 1, 12, 0, tzinfo=CHINA_TZ),
        appid=APPID,
        mch_id=MCH_ID,
        sub_mch_id=SUB_MCH_ID,
        transaction_id="4200000001202401010000000001",
        out_trade_no=ORDER["out_trade_no"],
        trade_type="JSAPI",
        trade_state="SUCCESS",
        fee_type="HKD",
        total_fee=1000,
    )
    return render_bill([row])


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda body: gzip.compress(body)[:-12], id="truncated gzip"),
        pytest.param(lambda body: gzip.compress(body)[:12], id="gzip header only"),
        pytest.param(lambda body: body[: body.index(b"\r\n", body.index(b"\r\n") + 2) + 2], id="no summary"),
    ],
)
def test_a_cut_short_bill_is_refused_not_parsed_as_an_empty_or_shorter_day(
    fake: FakeWeChat, sleeps: Sleeps, cut: Any
) -> None:
    body = _bill_body()
    whole = raw(200, gzip.compress(body))
    fake.script = [whole]
    with make_client(fake, sleeps) as client:
        bill = client.bills.download(bill_date=date(2024, 1, 1), gzip=True)
        assert [row.out_trade_no for row in bill.rows] == [ORDER["out_trade_no"]]
        assert bill.summary is not None
        fake.script = [raw(200, cut(body))] * 3
        with pytest.raises(UnexpectedResponseError, match="bill") as caught:
            client.bills.download(bill_date=date(2024, 1, 1), gzip=True)
    assert caught.value.operation == "downloadbill"
    assert caught.value.ids["sub_mch_id"] == SUB_MCH_ID


@pytest.mark.anyio
async def test_async_client_backs_off_on_connection_errors_and_never_resends_a_timed_out_create(
    fake: FakeWeChat, sleeps: Sleeps
) -> None:
    fake.script = [_refused, _refused]
    async with make_async_client(fake, sleeps) as client:
        await client.orders.create(**ORDER)
        assert len(fake.requests) == 3
        assert all(business_fields(body) == business_fields(fake.bodies[0]) for body in fake.bodies)
        assert len({body["nonce_str"] for body in fake.bodies}) == 3
        assert sleeps.delays == [0.375, 0.75]
        fake.script = [_timeout]
        with pytest.raises(ReadTimeoutError) as caught:
            await client.orders.create(**ORDER)
        assert caught.value.outcome_unknown is True
        assert len(fake.requests) == 4
        fake.script = [raw(500, b"oops")]
        with pytest.raises(UnexpectedResponseError) as failed:
            await client.orders.close(out_trade_no=ORDER["out_trade_no"])
        assert failed.value.outcome_unknown is True
        assert len(fake.requests) == 5
        fake.script = [_timeout, raw(500, b"oops")]
        assert (await client.orders.query(out_trade_no=ORDER["out_trade_no"])).trade_state == "NOTPAY"
        assert len(fake.requests) == 8


def test_an_exchange_rate_is_believed_only_with_a_valid_signature(fake: FakeWeChat, sleeps: Sleeps) -> None:
    # queryexchagerate has no result_code layer, but its answer is signed like every other one.
    unsigned = (
        b"<xml><return_code>SUCCESS</return_code><appid>wx8888888888888888</appid><mch_id>1900000109</mch_id>"
        b"<fee_type>HKD</fee_type><rate_time>20240101</rate_time><rate>1</rate></xml>"
    )
    fake.script = [forged, raw(200, unsigned)]
    with make_client(fake, sleeps) as client:
        for _ in range(2):
            with pytest.raises(ResponseSignatureError) as caught:
                client.rates.query(fee_type="HKD", date=date(2024, 1, 1))
            assert caught.value.operation == "queryexchagerate"
            assert caught.value.outcome_unknown is False
        assert client.rates.query(fee_type="HKD", date=date(2024, 1, 1)).rate == 92000000
    assert "nonce_str" not in fake.bodies[0]  # spec 14: this API takes none
