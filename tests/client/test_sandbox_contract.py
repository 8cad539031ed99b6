"""Contract tests: every SDK operation, sync and async, against the sandbox in-process, and every
error path the sandbox can produce mapped to the right exception."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from minipay.client import (
    Bill,
    CommunicationError,
    ExchangeRate,
    LoginError,
    OrderClosedError,
    OrderNotFoundError,
    OrderPaidError,
    OrderQueryResponse,
    ReadTimeoutError,
    RefundNotFoundError,
    ResponseSignatureError,
    SignatureError,
    UnexpectedResponseError,
    UnifiedOrderResponse,
)
from minipay.protocol import (
    CHINA_TZ,
    AppIdMchIdNotMatchError,
    BusinessError,
    FrequencyLimitedError,
    InvalidRequestError,
    InvalidTransactionIdError,
    NoAuthError,
    NotEnoughError,
    OutTradeNoUsedError,
    ParamError,
    TradeOverdueError,
    TradeStateError,
    verify_pay_params,
)
from minipay.sandbox import SandboxConfig
from tests.client.sandbox_drivers import NOTIFY_URL, REFUND_NOTIFY_URL, Driver, sandbox_driver


@pytest.fixture(params=["sync", "async"])
def d(request: pytest.FixtureRequest) -> Iterator[Driver]:
    with sandbox_driver(request.param) as driver:
        yield driver


def order_args(openid: str, out_trade_no: str = "ORDER0001", **extra: Any) -> dict[str, Any]:
    return {
        "out_trade_no": out_trade_no,
        "total_fee": 1000,
        "fee_type": "HKD",
        "body": "Demo Shop-Coffee",
        "notify_url": NOTIFY_URL,
        "spbill_create_ip": "203.0.113.10",
        "sub_openid": openid,
    } | extra


def paid_order(d: Driver, out_trade_no: str = "ORDER0001") -> UnifiedOrderResponse:
    code, _ = d.login()
    session = d.call("code_to_session", d.sub()["sub_appid"], d.sub()["app_secret"], code)
    order: UnifiedOrderResponse = d.call("orders.create", **order_args(session.openid, out_trade_no))
    answer = d.control("POST", "/sandbox/pay", json=dict(d.client.pay_params(order.prepay_id)))
    assert answer["errMsg"] == "requestPayment:ok"
    return order


def china_today(d: Driver) -> datetime:
    clock = d.control("GET", "/sandbox/clock")
    return datetime.fromisoformat(clock["now"]).astimezone(CHINA_TZ)


# --- the whole Mini Program flow ------------------------------------------------------------------


def test_the_mini_program_flow_runs_end_to_end(d: Driver) -> None:
    sub = d.sub()
    code, openid = d.login("alice")
    session = d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code)
    assert session.openid == openid
    assert "*" in repr(session.session_key)

    order = d.call("orders.create", **order_args(session.openid, attach="table=7"))
    assert isinstance(order, UnifiedOrderResponse)
    assert order.prepay_id.startswith("wx")

    params = d.client.pay_params(order.prepay_id)
    assert set(params) == {"timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert verify_pay_params(params, app_id=sub["sub_appid"], key=d.institution["api_key"]) == order.prepay_id
    paid = d.control("POST", "/sandbox/pay", json=dict(params))
    assert paid["errMsg"] == "requestPayment:ok"

    # The sandbox delivered the signed notification to our handler, which acknowledged it.
    assert d.received.replies == [200]
    [event] = d.received.payments
    assert event.out_trade_no == "ORDER0001"
    assert event.total_fee == 1000
    assert event.fee_type == "HKD"
    assert event.attach == "table=7"
    assert event.is_success
    notes = d.control("GET", "/sandbox/notifications", params={"out_trade_no": "ORDER0001"})["notifications"]
    assert notes[0]["state"] == "delivered"

    query: OrderQueryResponse = d.call("orders.query", out_trade_no="ORDER0001")
    assert query.trade_state == "SUCCESS"
    assert query.is_paid
    assert query.transaction_id == paid["transaction_id"] == event.transaction_id
    assert query.cash_fee_type == "CNY"
    assert query.time_end is not None
    assert query.time_end.utcoffset() == timedelta(hours=8)
    by_transaction = d.call("orders.query", transaction_id=query.transaction_id)
    assert by_transaction.out_trade_no == "ORDER0001"

    refund = d.call(
        "refunds.create",
        out_refund_no="REFUND0001",
        out_trade_no="ORDER0001",
        total_fee=1000,
        refund_fee=400,
        refund_fee_type="HKD",
        notify_url=REFUND_NOTIFY_URL,
    )
    assert refund.out_refund_no == "REFUND0001"
    assert refund.refund_fee == 400
    processing = d.call("refunds.query", out_refund_no="REFUND0001")
    assert processing.find("REFUND0001").refund_status == "PROCESSING"

    d.advance(120)  # the sandbox completes the refund and sends the encrypted notification
    done = d.call("refunds.query", out_trade_no="ORDER0001")
    record = done.find("REFUND0001")
    assert record is not None
    assert record.refund_status == "SUCCESS"
    assert record.refund_success_time is not None
    [refund_event] = d.received.refunds
    assert refund_event.out_refund_no == "REFUND0001"
    assert refund_event.refund_status == "SUCCESS"
    assert d.received.replies == [200, 200]
    assert d.call("orders.query", out_trade_no="ORDER0001").trade_state == "REFUND"

    rate: ExchangeRate = d.call("rates.query", fee_type="HKD", date=china_today(d).date())
    assert rate.rate == d.world["rates"]["HKD"]
    assert rate.fee_type == "HKD"

    day = china_today(d).date()
    d.advance(36 * 3600)  # bills are ready the next China-time morning
    bill: Bill = d.call("bills.download", bill_date=day)
    assert not bill.empty
    assert {row.out_trade_no for row in bill.rows} == {"ORDER0001"}
    assert bill.raw.startswith(b"\xef\xbb\xbf") or b"`" in bill.raw
    assert bill.summary is not None
    gz: Bill = d.call("bills.download", bill_date=day, gzip=True)
    assert gz.raw[:2] == b"\x1f\x8b"
    assert gz.rows == bill.rows


def test_a_second_sub_merchant_is_chosen_per_call(d: Driver) -> None:
    other = d.sub(1)
    code, _ = d.login("bob", sub=1)
    session = d.call("code_to_session", other["sub_appid"], other["app_secret"], code)
    order = d.call(
        "orders.create",
        **order_args(session.openid, "JPYORDER1", fee_type="JPY"),
        sub_mch_id=other["sub_mch_id"],
        sub_appid=other["sub_appid"],
    )
    params = d.client.pay_params(order.prepay_id, sub_appid=other["sub_appid"])
    assert d.control("POST", "/sandbox/pay", json=dict(params))["errMsg"] == "requestPayment:ok"
    query = d.call("orders.query", out_trade_no="JPYORDER1", sub_mch_id=other["sub_mch_id"])
    assert query.sub_mch_id == other["sub_mch_id"]
    assert query.fee_type == "JPY"
    with pytest.raises(OrderNotFoundError):  # the default sub-merchant does not have it
        d.call("orders.query", out_trade_no="JPYORDER1")


def test_reentry_with_the_same_parameters_returns_the_same_prepay_id(d: Driver) -> None:
    code, _ = d.login()
    session = d.call("code_to_session", d.sub()["sub_appid"], d.sub()["app_secret"], code)
    first = d.call("orders.create", **order_args(session.openid))
    again = d.call("orders.create", **order_args(session.openid))
    assert again.prepay_id == first.prepay_id


def test_closing_an_unpaid_order_after_five_minutes(d: Driver) -> None:
    code, _ = d.login()
    session = d.call("code_to_session", d.sub()["sub_appid"], d.sub()["app_secret"], code)
    d.call("orders.create", **order_args(session.openid))
    with pytest.raises(TradeStateError):
        d.call("orders.close", out_trade_no="ORDER0001")
    d.advance(301)
    closed = d.call("orders.close", out_trade_no="ORDER0001")
    assert closed.result_code == "SUCCESS"
    assert d.call("orders.query", out_trade_no="ORDER0001").trade_state == "CLOSED"
    with pytest.raises(OrderClosedError):
        d.call("orders.create", **order_args(session.openid))


def test_no_bill_exist_is_an_empty_bill(d: Driver) -> None:
    bill = d.call("bills.download", bill_date=china_today(d).date() - timedelta(days=3))
    assert bill.empty
    assert bill.raw == b""
    gz = d.call("bills.download", bill_date=china_today(d).date() - timedelta(days=3), gzip=True)
    assert gz.empty
    assert d.journal("downloadbill")[-1]["fields"]["tar_type"] == "GZIP"


@pytest.mark.parametrize(("layout", "header"), [("documented", "交易时间"), ("english", "Transaction time")])
def test_bills_download_reads_either_bill_layout(layout: str, header: str) -> None:
    config = SandboxConfig.default()
    config = config.model_copy(update={"rules": config.rules.model_copy(update={"bill_layout": layout})})
    for mode in ("sync", "async"):
        with sandbox_driver(mode, config) as d:
            paid_order(d)
            paid_order(d, "ORDER0002")
            d.advance(60)
            refund = {"out_trade_no": "ORDER0001", "total_fee": 1000, "refund_fee": 400, "refund_fee_type": "HKD"}
            d.call("refunds.create", out_refund_no="R1", **refund)
            day = china_today(d).date()
            d.advance(36 * 3600)
            bill: Bill = d.call("bills.download", bill_date=day)
            assert bill.raw.decode().startswith(header)
            assert [(r.out_trade_no, r.trade_state, r.total_fee, r.refund_fee) for r in bill.rows] == [
                ("ORDER0001", "SUCCESS", 1000, 0),
                ("ORDER0002", "SUCCESS", 1000, 0),
                ("ORDER0001", "REFUND", 0, 400),
            ]
            assert bill.rows[0].service_fee == 6
            assert bill.summary is not None
            assert (bill.summary.transaction_count, bill.summary.total_fee, bill.summary.refund_fee) == (3, 2000, 400)
            refunds: Bill = d.call("bills.download", bill_date=day, bill_type="REFUND", gzip=True)
            assert [(r.out_refund_no, r.refund_status) for r in refunds.rows] == [("R1", "SUCCESS")]
            if layout == "documented":  # 400 x 0.60% = 2.4 cents, given back: kept exactly
                assert (refunds.rows[0].service_fee, refunds.rows[0].service_fee_major) == (-2, Decimal("-0.02400"))
                assert refunds.rows[0].refund_request_time is not None
            else:
                assert (refunds.rows[0].service_fee, refunds.rows[0].service_fee_major) == (0, None)


# --- business errors the sandbox answers -----------------------------------------------------------


def test_paying_twice_the_same_order_number_is_order_paid(d: Driver) -> None:
    paid_order(d)
    _, openid = d.login()
    with pytest.raises(OrderPaidError) as caught:
        d.call("orders.create", **order_args(openid))
    assert caught.value.operation == "unifiedorder"
    assert caught.value.out_trade_no == "ORDER0001"
    with pytest.raises(OrderPaidError):
        d.call("orders.close", out_trade_no="ORDER0001")


def test_reusing_an_order_number_with_other_parameters_is_refused(d: Driver) -> None:
    _, openid = d.login()
    d.call("orders.create", **order_args(openid))
    with pytest.raises(InvalidRequestError):
        d.call("orders.create", **order_args(openid, total_fee=999))


def test_unknown_orders_and_refunds_are_not_found(d: Driver) -> None:
    with pytest.raises(OrderNotFoundError):
        d.call("orders.query", out_trade_no="NOPE")
    with pytest.raises(RefundNotFoundError):
        d.call("refunds.query", out_refund_no="NOPE")


def test_refund_rules_map_to_their_errors(d: Driver) -> None:
    _, openid = d.login()
    d.call("orders.create", **order_args(openid, "UNPAID1"))
    refund = {"out_refund_no": "R1", "total_fee": 1000, "refund_fee": 100, "refund_fee_type": "HKD"}
    with pytest.raises(OrderNotFoundError):  # not paid
        d.call("refunds.create", out_trade_no="UNPAID1", **refund)
    paid_order(d, "PAID1")
    with pytest.raises(ParamError):  # currency differs from the order's
        d.call("refunds.create", out_trade_no="PAID1", **(refund | {"refund_fee_type": "CNY"}))
    d.call("refunds.create", out_trade_no="PAID1", **(refund | {"refund_fee": 900}))
    with pytest.raises(ParamError):  # more than what is left
        d.call("refunds.create", out_trade_no="PAID1", **(refund | {"out_refund_no": "R2", "refund_fee": 200}))


def test_a_fee_type_the_sub_merchant_cannot_take_is_a_param_error(d: Driver) -> None:
    _, openid = d.login()
    with pytest.raises(ParamError):
        d.call("orders.create", **order_args(openid, fee_type="USD"))


def test_an_openid_of_another_mini_program_is_refused(d: Driver) -> None:
    _, foreign_openid = d.login("alice", sub=1)
    with pytest.raises(ParamError):
        d.call("orders.create", **order_args(foreign_openid))


def test_a_sub_appid_not_bound_to_the_sub_merchant_is_refused(d: Driver) -> None:
    _, openid = d.login()
    with pytest.raises(AppIdMchIdNotMatchError):
        d.call("orders.create", **order_args(openid), sub_appid=d.sub(1)["sub_appid"])


def test_a_wrong_api_key_is_a_communication_error() -> None:
    for mode in ("sync", "async"):
        with sandbox_driver(mode, api_key="Z" * 32) as d, pytest.raises(CommunicationError) as caught:
            d.call("orders.query", out_trade_no="ORDER0001")
        assert caught.value.return_msg


def test_a_short_cny_pool_is_not_enough() -> None:
    config = SandboxConfig.default()
    config = config.model_copy(update={"rules": config.rules.model_copy(update={"cny_pool": True})})
    for mode in ("sync", "async"):
        with sandbox_driver(mode, config) as d:
            paid_order(d)
            d.advance(86400)  # yesterday's takings were converted: today's pool is empty
            with pytest.raises(NotEnoughError) as caught:
                d.call(
                    "refunds.create",
                    out_refund_no="R1",
                    out_trade_no="ORDER0001",
                    total_fee=1000,
                    refund_fee=1000,
                    refund_fee_type="HKD",
                )
            assert caught.value.retryable is True
            assert len(d.journal("refund")) == 1  # "later", not retried in the loop


# --- login errors ----------------------------------------------------------------------------------


def test_login_codes_are_single_use_and_checked(d: Driver) -> None:
    sub = d.sub()
    code, _ = d.login()
    d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code)
    with pytest.raises(LoginError) as reused:
        d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code)
    assert reused.value.errcode == 40163
    assert reused.value.retryable is False
    assert (reused.value.operation, reused.value.err_code, reused.value.outcome_unknown) == (
        "jscode2session",
        "40163",
        False,
    )
    assert reused.value.err_code_des == reused.value.errmsg
    with pytest.raises(LoginError) as invalid:
        d.call("code_to_session", sub["sub_appid"], sub["app_secret"], "not-a-code")
    assert invalid.value.errcode == 40029
    code, _ = d.login()
    d.advance(301)
    with pytest.raises(LoginError) as expired:
        d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code)
    assert expired.value.errcode == 40029


def test_login_system_busy_is_retried_and_rate_limits_are_raised_as_retryable(d: Driver) -> None:
    sub = d.sub()
    d.fault("jscode2session", "-1", times=2)
    code, openid = d.login()
    assert d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code).openid == openid
    assert len(d.sleeps) == 2
    d.fault("jscode2session", "45011")
    code, _ = d.login()
    with pytest.raises(LoginError) as limited:
        d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code)
    assert limited.value.errcode == 45011
    assert limited.value.retryable is True
    d.fault("jscode2session", "40226")
    with pytest.raises(LoginError) as risky:
        d.call("code_to_session", sub["sub_appid"], sub["app_secret"], code)
    assert risky.value.retryable is False


# --- faults ----------------------------------------------------------------------------------------


def test_systemerror_is_retried_with_the_same_out_trade_no_against_the_sandbox(d: Driver) -> None:
    _, openid = d.login()
    d.fault("unifiedorder", "SYSTEMERROR", times=2)
    order = d.call("orders.create", **order_args(openid))
    assert order.prepay_id
    calls = d.journal("unifiedorder")
    assert [c["fields"]["out_trade_no"] for c in calls] == ["ORDER0001"] * 3
    assert len({c["fields"]["nonce_str"] for c in calls}) == 3
    assert [c["err_code"] for c in calls][:2] == ["SYSTEMERROR", "SYSTEMERROR"]


def test_http_500_on_create_leaves_the_outcome_unknown(d: Driver) -> None:
    _, openid = d.login()
    d.fault("unifiedorder", "http_500")
    with pytest.raises(UnexpectedResponseError) as caught:
        d.call("orders.create", **order_args(openid))
    assert caught.value.outcome_unknown is True
    assert len(d.journal("unifiedorder")) == 1


def test_a_lost_response_on_create_is_unknown_and_the_order_is_found_by_query(d: Driver) -> None:
    _, openid = d.login()
    d.fault("unifiedorder", "lost_response")
    with pytest.raises(ReadTimeoutError) as caught:
        d.call("orders.create", **order_args(openid))
    assert caught.value.outcome_unknown is True
    assert len(d.journal("unifiedorder")) == 1  # never re-created silently
    assert d.call("orders.query", out_trade_no="ORDER0001").trade_state == "NOTPAY"


def test_a_dropped_query_is_retried(d: Driver) -> None:
    paid_order(d)
    d.fault("orderquery", "drop")
    assert d.call("orders.query", out_trade_no="ORDER0001").trade_state == "SUCCESS"
    assert len(d.journal("orderquery")) == 2


def test_a_badly_signed_answer_is_a_signature_error(d: Driver) -> None:
    paid_order(d)
    d.fault("orderquery", "bad_signature")
    with pytest.raises(SignatureError):
        d.call("orders.query", out_trade_no="ORDER0001")
    d.fault("refund", "bad_signature")
    with pytest.raises(SignatureError) as caught:
        d.call(
            "refunds.create",
            out_refund_no="R1",
            out_trade_no="ORDER0001",
            total_fee=1000,
            refund_fee=100,
            refund_fee_type="HKD",
        )
    # The sandbox did accept the refund: the SDK must not let the caller believe it failed.
    assert isinstance(caught.value, ResponseSignatureError)
    assert caught.value.outcome_unknown is True
    assert caught.value.out_refund_no == "R1"
    assert d.call("refunds.query", out_refund_no="R1").find("R1") is not None


def test_exchange_rate_of_every_configured_currency(d: Driver) -> None:
    day = china_today(d).date()
    for currency, rate in d.world["rates"].items():
        if currency == "CNY":
            continue
        answer = d.call("rates.query", fee_type=currency, date=day)
        assert answer.rate == rate
        assert answer.rate_date == day


def test_an_hmac_sha256_client_runs_the_flow_and_verifies_hmac_everywhere() -> None:
    for mode in ("sync", "async"):
        with sandbox_driver(mode, sign_type="HMAC-SHA256") as d:
            order = paid_order(d)
            assert d.received.replies == [200]  # the HMAC-signed notification passed the pinned policy
            assert d.journal("unifiedorder")[0]["fields"]["sign_type"] == "HMAC-SHA256"
            assert d.call("orders.query", out_trade_no="ORDER0001").trade_state == "SUCCESS"
            assert d.client.pay_params(order.prepay_id)["signType"] == "HMAC-SHA256"
            assert d.call("rates.query", fee_type="HKD", date=china_today(d).date()).rate > 0


def _rules(**changes: Any) -> SandboxConfig:
    config = SandboxConfig.default()
    return config.model_copy(update={"rules": config.rules.model_copy(update=changes)})


def test_a_sub_merchant_of_another_institution_is_no_auth(d: Driver) -> None:
    with pytest.raises(NoAuthError) as caught:
        d.call("orders.query", out_trade_no="ORDER0001", sub_mch_id="1900000999")
    assert caught.value.sub_mch_id == "1900000999"


def test_an_unknown_merchant_or_unbound_appid_is_a_communication_error() -> None:
    for mode in ("sync", "async"):
        with sandbox_driver(mode, mch_id="1900000999") as d, pytest.raises(CommunicationError):
            d.call("orders.query", out_trade_no="ORDER0001")
        with sandbox_driver(mode, appid="wx9999999999999999") as d, pytest.raises(CommunicationError):
            d.call("orders.query", out_trade_no="ORDER0001")


def test_a_malformed_transaction_id_is_invalid_for_refunds_and_unknown_for_orders(d: Driver) -> None:
    # Spec 10.4/11: INVALID_TRANSACTIONID belongs to the refund APIs; order query answers ORDERNOTEXIST.
    with pytest.raises(OrderNotFoundError):
        d.call("orders.query", transaction_id="not-a-transaction")
    with pytest.raises(InvalidTransactionIdError):
        d.call("refunds.query", transaction_id="not-a-transaction")


def test_the_out_trade_no_used_wording_of_reentry() -> None:
    for mode in ("sync", "async"):
        with sandbox_driver(mode, _rules(reentry_error="OUT_TRADE_NO_USED")) as d:
            _, openid = d.login()
            d.call("orders.create", **order_args(openid))
            with pytest.raises(OutTradeNoUsedError):
                d.call("orders.create", **order_args(openid, body="Another body"))


def test_refund_limits_map_to_their_errors() -> None:
    refund = {"out_trade_no": "ORDER0001", "total_fee": 1000, "refund_fee": 100, "refund_fee_type": "HKD"}
    for mode in ("sync", "async"):
        with sandbox_driver(mode, _rules(refund_spacing=60, refund_cap=2)) as d:
            paid_order(d)
            d.call("refunds.create", out_refund_no="R1", **refund)
            with pytest.raises(FrequencyLimitedError) as limited:  # two refunds of one order < 60 s apart
                d.call("refunds.create", out_refund_no="R2", **refund)
            assert limited.value.retryable is True
            assert len(d.journal("refund")) == 2  # "later": not retried in the loop
            d.advance(61)
            d.call("refunds.create", out_refund_no="R2", **refund)
            d.advance(61)
            with pytest.raises(BusinessError) as capped:  # more partial refunds than allowed
                d.call("refunds.create", out_refund_no="R3", **refund)
            assert capped.value.err_code == "ERROR"
            assert capped.value.outcome_unknown is True


def test_a_refund_after_the_refund_window_is_overdue(d: Driver) -> None:
    paid_order(d)
    d.advance(366 * 86400)
    with pytest.raises(TradeOverdueError):
        d.call(
            "refunds.create",
            out_refund_no="LATE1",
            out_trade_no="ORDER0001",
            total_fee=1000,
            refund_fee=100,
            refund_fee_type="HKD",
        )


def test_a_scripted_abnormal_refund_is_reported_by_query(d: Driver) -> None:
    paid_order(d)
    d.control("POST", "/sandbox/refunds/outcome", json={"out_trade_no": "ORDER0001", "status": "CHANGE"})
    d.call(
        "refunds.create",
        out_refund_no="R1",
        out_trade_no="ORDER0001",
        total_fee=1000,
        refund_fee=100,
        refund_fee_type="HKD",
    )
    d.advance(120)
    assert d.call("refunds.query", out_refund_no="R1").find("R1").refund_status == "CHANGE"
