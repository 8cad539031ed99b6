"""The pure parts: the retry decision, pay params, notifications and the framework-neutral handler."""

from __future__ import annotations

import pytest

from minipay.client import (
    Backoff,
    Client,
    ConfigurationError,
    ConnectError,
    FieldError,
    LoginError,
    NotificationHandler,
    OrderPaidError,
    PaymentNotification,
    ReadTimeoutError,
    RefundNotification,
    SignatureError,
    UnexpectedResponseError,
    WeChatSystemError,
    decide,
)
from minipay.protocol import (
    NotEnoughError,
    build_payment_notification,
    build_refund_notification,
    decode_xml,
    encode_xml,
    reply_success,
    sign,
    verify_pay_params,
)
from tests.client.conftest import APPID, KEY, MCH_ID, SUB_APPID, SUB_MCH_ID

# --- the retry decision ---------------------------------------------------------------------------

NO_JITTER = Backoff(initial=0.5, factor=2.0, cap=8.0, jitter=0.0)


def _decide(error: Exception, *, idempotent: bool = False, retries: int = 0, host: int = 0, hosts: int = 1):  # type: ignore[no-untyped-def]
    return decide(
        error,  # type: ignore[arg-type]
        idempotent=idempotent,
        retries_used=retries,
        max_retries=2,
        host_index=host,
        host_count=hosts,
        backoff=NO_JITTER,
        random=lambda: 0.0,
    )


def test_systemerror_backs_off_exponentially_up_to_max_retries() -> None:
    error = WeChatSystemError("x", operation="unifiedorder", err_code="SYSTEMERROR")
    assert _decide(error).delay == 0.5
    assert _decide(error, retries=1).delay == 1.0
    assert _decide(error, retries=2).action == "raise"


def test_a_connect_error_fails_over_for_free_then_backs_off_from_the_first_host() -> None:
    error = ConnectError("x", operation="orderquery")
    first = _decide(error, host=0, hosts=3)
    assert (first.action, first.host_index, first.delay, first.retries_used) == ("retry", 1, 0.0, 0)
    last = _decide(error, host=2, hosts=3)
    assert (last.action, last.host_index, last.delay, last.retries_used) == ("retry", 0, 0.5, 1)


def test_an_unknown_outcome_is_retried_only_for_reads() -> None:
    timeout = ReadTimeoutError("x", operation="unifiedorder")
    assert _decide(timeout, idempotent=False).action == "raise"
    assert _decide(timeout, idempotent=True).action == "retry"
    http_500 = UnexpectedResponseError("x", operation="refund", outcome_unknown=True)
    assert _decide(http_500, idempotent=False).action == "raise"


def test_final_and_later_errors_are_not_retried_in_the_loop() -> None:
    assert _decide(OrderPaidError("x", operation="unifiedorder", err_code="ORDERPAID")).action == "raise"
    later = NotEnoughError("x", operation="refund", err_code="NOTENOUGH", retryable=True)
    assert _decide(later).action == "raise"
    assert _decide(SignatureError("bad")).action == "raise"
    assert _decide(LoginError(-1, "busy", retryable=True)).action == "retry"
    assert _decide(LoginError(45011, "limit", retryable=True)).action == "raise"


def test_jitter_only_ever_shortens_the_delay() -> None:
    backoff = Backoff(initial=1.0, jitter=0.5)
    assert backoff.delay(0, lambda: 0.0) == 1.0
    assert backoff.delay(0, lambda: 0.999) == pytest.approx(0.5005)
    assert backoff.delay(10, lambda: 0.0) == 8.0  # capped


# --- pay params --------------------------------------------------------------------------------------


def _client(**kwargs: object) -> Client:
    options: dict[str, object] = {
        "appid": APPID,
        "mch_id": MCH_ID,
        "api_key": KEY,
        "sub_mch_id": SUB_MCH_ID,
        "sub_appid": SUB_APPID,
        "base_url": "http://sandbox",
    }
    options.update(kwargs)
    return Client(**options)  # type: ignore[arg-type]


def test_pay_params_are_exactly_what_wx_request_payment_takes() -> None:
    with _client() as client:
        params = client.pay_params("wx201411101639507cbf6ffd8b0779950874")
    assert list(params) == ["timeStamp", "nonceStr", "package", "signType", "paySign"]
    assert params["package"] == "prepay_id=wx201411101639507cbf6ffd8b0779950874"
    assert params["timeStamp"].isdigit()
    assert len(params["timeStamp"]) == 10
    assert verify_pay_params(params, app_id=SUB_APPID, key=KEY) == "wx201411101639507cbf6ffd8b0779950874"


def test_pay_params_follow_the_client_sign_type_and_need_a_mini_program() -> None:
    with _client(sign_type="HMAC-SHA256") as client:
        params = client.pay_params("wx1", sub_appid="wx2234567890abcdef")
        assert params["signType"] == "HMAC-SHA256"
        assert len(params["paySign"]) == 64
        assert verify_pay_params(params, app_id="wx2234567890abcdef", key=KEY) == "wx1"
    with _client(sub_appid=None) as client, pytest.raises(ConfigurationError):
        client.pay_params("wx1")


def test_orders_create_refuses_openid_with_a_mini_program() -> None:
    with _client() as client, pytest.raises(FieldError) as caught:
        client.orders.create(
            out_trade_no="O1",
            total_fee=1,
            fee_type="HKD",
            body="x",
            notify_url="https://merchant.example.com/n",
            spbill_create_ip="203.0.113.10",
            openid="oInstitutionOpenid",
        )
    assert caught.value.field == "openid"


def test_a_notify_url_wechat_cannot_reach_is_refused_unless_allowed() -> None:
    order = {
        "out_trade_no": "O1",
        "total_fee": 1,
        "fee_type": "HKD",
        "body": "x",
        "notify_url": "http://127.0.0.1:8000/notify",
        "spbill_create_ip": "203.0.113.10",
        "sub_openid": "o1",
    }
    with _client() as client, pytest.raises(FieldError, match="private"):
        client.orders.create(**order)  # type: ignore[arg-type]


def test_institution_mode_needs_a_sub_merchant() -> None:
    with _client(sub_mch_id=None) as client, pytest.raises(ConfigurationError, match="sub_mch_id"):
        client.orders.query(out_trade_no="O1")


def test_certificate_verification_may_be_turned_off_only_away_from_wechat() -> None:
    _client(verify=False, login_base_url="http://sandbox").close()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"api_key": "short"}, "32"),
        ({"region": "EU", "base_url": None}, "region"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"sign_type": "SHA1"}, "sign_type"),
        ({"max_retries": -1}, "max_retries"),
        ({"read_timeout": 0}, "timeouts"),
        ({"verify": False}, "verify=False"),  # the login host is WeChat's
        ({"verify": False, "base_url": None, "login_base_url": "http://sandbox"}, "verify=False"),
    ],
)
def test_bad_settings_are_configuration_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _client(**options)


# --- notifications and the handler ----------------------------------------------------------------

PAYMENT = {
    "return_code": "SUCCESS",
    "appid": APPID,
    "mch_id": MCH_ID,
    "sub_appid": SUB_APPID,
    "sub_mch_id": SUB_MCH_ID,
    "nonce_str": "5d2b6c2a8db53831f7eda20af46e531c",
    "result_code": "SUCCESS",
    "openid": "oPq0Ot5Vn3Dxn0J5uEXAMPLEopenid",
    "is_subscribe": "N",
    "sub_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "sub_is_subscribe": "N",
    "trade_type": "JSAPI",
    "bank_type": "OTHERS",
    "total_fee": "1000",
    "fee_type": "HKD",
    "cash_fee": "920",
    "cash_fee_type": "CNY",
    "transaction_id": "4200000001202401010000000001",
    "out_trade_no": "ORDER20240101000001",
    "time_end": "20240101120510",
    "rate_value": "92000000",
}


def test_the_spec_sample_notification_verifies() -> None:
    body = build_payment_notification(PAYMENT, KEY)
    assert b"68CEFB625095A0CF49601A93B7E9FB91" in body  # spec 7.6
    with _client() as client:
        event = client.parse_payment_notification(body)
    assert event.total_fee == 1000
    assert event.exchange_rate == 92000000


def test_an_hmac_client_refuses_an_md5_notification() -> None:
    body = build_payment_notification(PAYMENT, KEY, "MD5")
    with _client(sign_type="HMAC-SHA256") as client:
        with pytest.raises(SignatureError):
            client.parse_payment_notification(body)
        assert client.parse_payment_notification(build_payment_notification(PAYMENT, KEY, "HMAC-SHA256")).is_success


def test_an_hmac_notification_without_sign_type_is_verified_with_the_configured_algorithm() -> None:
    # Live HMAC-SHA256 notifications come without sign_type (WxJava #1585): absent must not mean MD5.
    fields = dict(decode_xml(build_payment_notification(PAYMENT, KEY, "HMAC-SHA256")))
    del fields["sign_type"]
    fields["sign"] = sign({k: v for k, v in fields.items() if k != "sign"}, KEY, "HMAC-SHA256")
    body = encode_xml(fields)
    with _client(sign_type="HMAC-SHA256") as client:
        assert client.parse_payment_notification(body).is_success
        fields["sign"] = sign({k: v for k, v in fields.items() if k != "sign"}, KEY, "MD5")
        with pytest.raises(SignatureError):  # still no downgrade: an MD5 signature is refused
            client.parse_payment_notification(encode_xml(fields))


def test_a_notification_for_another_merchant_is_refused() -> None:
    body = build_payment_notification(PAYMENT | {"mch_id": "1900000999"}, KEY)
    with _client() as client, pytest.raises(FieldError, match="another merchant"):
        client.parse_payment_notification(body)


def test_the_handler_acknowledges_once_the_callback_returns() -> None:
    seen: list[PaymentNotification] = []
    with _client() as client:
        reply = NotificationHandler(client).payment(build_payment_notification(PAYMENT, KEY), seen.append)
    assert (reply.status_code, reply.content) == (200, reply_success())
    assert reply.acknowledged
    assert seen[0].out_trade_no == "ORDER20240101000001"


def test_the_handler_refuses_a_forged_notification_without_calling_back() -> None:
    forged = build_payment_notification(PAYMENT | {"total_fee": "1"}, "Z" * 32)
    seen: list[PaymentNotification] = []
    with _client() as client:
        reply = NotificationHandler(client).payment(forged, seen.append)
        garbage = NotificationHandler(client).payment(b"<!DOCTYPE x><xml/>", seen.append)
    assert reply.status_code == 400
    assert b"FAIL" in reply.content
    assert garbage.status_code == 400
    assert seen == []


def test_the_handler_answers_fail_when_the_callback_raises_so_wechat_retries() -> None:
    def broken(event: PaymentNotification) -> None:
        raise RuntimeError("database down: password=hunter2")

    with _client() as client:
        reply = NotificationHandler(client).payment(build_payment_notification(PAYMENT, KEY), broken)
    assert reply.status_code == 500
    assert b"FAIL" in reply.content
    assert b"hunter2" not in reply.content


def test_the_sync_handler_refuses_a_coroutine_callback() -> None:
    async def on_payment(event: PaymentNotification) -> None:
        return None

    with _client() as client:
        reply = NotificationHandler(client).payment(build_payment_notification(PAYMENT, KEY), on_payment)
    assert reply.status_code == 500


@pytest.mark.anyio
async def test_the_async_handler_awaits_the_callback_and_decrypts_refunds() -> None:
    seen: list[RefundNotification] = []

    async def on_refund(event: RefundNotification) -> None:
        seen.append(event)

    body = build_refund_notification(
        {"return_code": "SUCCESS", "appid": APPID, "mch_id": MCH_ID, "sub_mch_id": SUB_MCH_ID, "nonce_str": "n1"},
        {
            "transaction_id": "4200000001202401010000000001",
            "out_trade_no": "ORDER20240101000001",
            "refund_id": "50000000012024010200000000001",
            "out_refund_no": "REFUND20240102000001",
            "total_fee": 1000,
            "refund_fee": 500,
            "settlement_refund_fee": 500,
            "refund_status": "SUCCESS",
            "success_time": "2024-01-02 10:00:00",
            "refund_recv_accout": "支付用户零钱",
            "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
            "refund_request_source": "API",
        },
        KEY,
    )
    with _client() as client:
        handler = NotificationHandler(client)
        reply = await handler.arefund(body, on_refund)
        wrong_key = await NotificationHandler(_client(api_key="Z" * 32)).arefund(body, on_refund)
    assert reply.status_code == 200
    assert seen[0].refund_status == "SUCCESS"
    assert seen[0].refund_fee == 500
    assert wrong_key.status_code == 400
    assert len(seen) == 1


def test_the_unsigned_success_answers_are_listed_explicitly() -> None:
    from minipay.client._operations import BILL_DOWNLOAD, CLOSE_ORDER, ORDER_QUERY, RATE_QUERY, REFUND, UNIFIED_ORDER

    signed = (UNIFIED_ORDER, ORDER_QUERY, CLOSE_ORDER, REFUND, RATE_QUERY)
    assert BILL_DOWNLOAD.unsigned_success
    assert not any(op.unsigned_success for op in signed)
