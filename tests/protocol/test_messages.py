"""Typed messages: field rules on build, wire rendering, from_fields / to_fields round trips."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipay.protocol import (
    CHINA_TZ,
    COMMON_REQUEST_FIELDS,
    Code2SessionResult,
    Coupon,
    DownloadBillRequest,
    ExchangeRateResponse,
    FieldError,
    LoginError,
    OrderQueryRequest,
    OrderQueryResponse,
    RefundQueryRequest,
    RefundQueryResponse,
    RefundRequest,
    RefundResponse,
    UnifiedOrderRequest,
    UnifiedOrderResponse,
    build_request,
    check_notify_url,
    verify,
)
from tests.protocol import vectors as v

BASE: dict[str, Any] = {
    "sub_mch_id": v.SUB_MCH_ID,
    "sub_appid": v.SUB_APPID,
    "sub_openid": v.SUB_OPENID,
    "body": "Demo Shop-Coffee",
    "out_trade_no": v.OUT_TRADE_NO,
    "total_fee": 1000,
    "fee_type": "HKD",
    "spbill_create_ip": "203.0.113.10",
    "notify_url": "https://merchant.example.com/wxpay/notify",
}


def _order(**changes: Any) -> UnifiedOrderRequest:
    data = {**BASE, **changes}
    return UnifiedOrderRequest(**{k: val for k, val in data.items() if val is not None})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"out_trade_no": "A" * 33}, "out_trade_no"),
        ({"out_trade_no": "ORDER 1"}, "out_trade_no"),
        ({"out_trade_no": "ORDER@1"}, "out_trade_no"),
        ({"out_trade_no": ""}, "out_trade_no"),
        ({"total_fee": 0}, "total_fee"),
        ({"total_fee": -1}, "total_fee"),
        ({"total_fee": "1000"}, "total_fee"),
        ({"total_fee": 10.0}, "total_fee"),
        ({"total_fee": True}, "total_fee"),
        ({"fee_type": "hkd"}, "fee_type"),
        ({"fee_type": "XXX"}, "fee_type"),
        ({"fee_type": "HK"}, "fee_type"),
        ({"body": "b" * 128}, "body"),
        ({"body": "Coffee \U0001f375"}, "body"),
        ({"attach": "a" * 128}, "attach"),
        ({"body": "咖" * 43}, "body"),  # 43 characters but 129 bytes of UTF-8: WeChat counts bytes
        ({"attach": "é" * 64}, "attach"),  # 128 bytes
        ({"detail": "咖" * 2001}, "detail"),  # 6003 bytes
        ({"attach": "\U00020000"}, "attach"),
        ({"body": "Coffee\x00"}, "body"),
        ({"attach": "a\x1fb"}, "attach"),
        ({"body": "caf\ud800"}, "body"),
        ({"detail": "\ufffe"}, "detail"),
        ({"sub_openid": "oUpF8u\x07"}, "sub_openid"),
        ({"device_info": "\udfff"}, "device_info"),
        ({"notify_url": "ftp://merchant.example.com/notify"}, "notify_url"),
        ({"notify_url": "https://merchant.example.com/notify?x=1"}, "notify_url"),
        ({"notify_url": "/relative/notify"}, "notify_url"),
        ({"notify_url": "https://merchant.example.com/" + "a" * 256}, "notify_url"),
        ({"spbill_create_ip": "not-an-ip"}, "spbill_create_ip"),
        ({"time_expire": datetime(2024, 1, 1, 12, 0)}, "time_expire"),
        ({"time_start": "20240101120000"}, "time_start"),
        ({"openid": "oINSTITUTION"}, "openid"),
        ({"sub_openid": None}, "sub_openid"),
        ({"sub_mch_id": ""}, "sub_mch_id"),
        ({"trade_type": "MICROPAY"}, "trade_type"),
        ({"unknown_field": "x"}, "unknown_field"),
    ],
)
def test_unified_order_refuses_rule_breaking_fields(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as info:
        _order(**changes)
    assert info.value.field == field


def test_field_error_is_a_value_error_and_never_a_pydantic_error() -> None:
    with pytest.raises(ValueError, match="total_fee") as info:
        _order(total_fee=0)
    assert type(info.value) is FieldError


def test_sub_openid_without_sub_appid_is_refused() -> None:
    with pytest.raises(FieldError) as info:
        _order(sub_appid=None)
    assert info.value.field == "sub_openid"


def test_openid_without_sub_appid_is_the_non_institution_path() -> None:
    request = _order(sub_appid=None, sub_openid=None, openid="oINSTITUTION")
    assert request.to_fields()["openid"] == "oINSTITUTION"


def test_out_trade_no_accepts_its_whole_charset() -> None:
    assert _order(out_trade_no="aZ09_-|*").out_trade_no == "aZ09_-|*"


def test_times_are_sent_in_china_time_from_any_zone() -> None:
    london = timezone(timedelta(hours=0))
    request = _order(
        time_start=datetime(2014, 11, 11, 0, 0, tzinfo=london),
        time_expire=datetime(2014, 11, 11, 0, 30, tzinfo=UTC),
    )
    fields = request.to_fields()
    assert fields["time_start"] == "20141111080000"
    assert fields["time_expire"] == "20141111083000"


def test_time_expire_must_follow_time_start() -> None:
    start = datetime(2024, 1, 1, 12, 0, tzinfo=CHINA_TZ)
    with pytest.raises(FieldError) as info:
        _order(time_start=start, time_expire=start)
    assert info.value.field == "time_expire"


def test_request_models_are_frozen() -> None:
    request = _order()
    with pytest.raises(ValueError, match="frozen"):
        request.total_fee = 5  # type: ignore[misc]


def test_to_fields_has_no_common_fields_and_only_strings() -> None:
    fields = _order(attach="store=42").to_fields()
    assert not COMMON_REQUEST_FIELDS & fields.keys()
    assert all(isinstance(val, str) for val in fields.values())
    assert fields["total_fee"] == "1000"
    assert fields["attach"] == "store=42"


def test_extra_fields_are_sent_and_signed() -> None:
    request = _order(extra_fields={"scene_info": '{"id":"1"}'})
    fields = build_request(request, appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY)
    assert fields["scene_info"] == '{"id":"1"}'
    verify(fields, v.KEY)


def test_extra_fields_cannot_smuggle_known_or_common_fields() -> None:
    with pytest.raises(FieldError):
        _order(extra_fields={"total_fee": "1"})
    with pytest.raises(FieldError):
        _order(extra_fields={"sign": "X"})


def test_build_request_adds_nonce_and_sign_type_for_hmac() -> None:
    fields = build_request(_order(), appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY, sign_type="HMAC-SHA256")
    assert fields["sign_type"] == "HMAC-SHA256"
    assert len(fields["nonce_str"]) == 32
    assert len(fields["sign"]) == 64
    verify(fields, v.KEY)


@pytest.mark.parametrize("nonce", ["", "n" * 33, "with space", "\u4e2d"])
def test_build_request_refuses_a_bad_given_nonce(nonce: str) -> None:
    with pytest.raises(FieldError) as info:
        build_request(_order(), appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY, nonce=nonce)
    assert info.value.field == "nonce_str"


def test_sandbox_parses_a_received_request_with_the_same_rules() -> None:
    fields = build_request(_order(attach="x"), appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY)
    fields["version"] = "1.0"
    fields["brand_new"] = "kept"
    parsed = UnifiedOrderRequest.from_fields(fields)
    assert parsed.total_fee == 1000
    assert parsed.version == "1.0"
    assert parsed.extra_fields == {"brand_new": "kept"}
    with pytest.raises(FieldError) as info:
        UnifiedOrderRequest.from_fields({**fields, "total_fee": "10.00"})
    assert info.value.field == "total_fee"
    with pytest.raises(FieldError):
        UnifiedOrderRequest.from_fields({**fields, "fee_type": "hkd"})


def test_received_request_times_are_parsed_as_china_time() -> None:
    fields = {k: str(val) for k, val in BASE.items()}
    parsed = UnifiedOrderRequest.from_fields({**fields, "time_expire": "20240101123000"})
    assert parsed.time_expire == datetime(2024, 1, 1, 12, 30, tzinfo=CHINA_TZ)


def test_received_request_missing_a_mandatory_field_names_it() -> None:
    fields = {k: str(val) for k, val in BASE.items() if k != "out_trade_no"}
    with pytest.raises(FieldError) as info:
        UnifiedOrderRequest.from_fields(fields)
    assert info.value.field == "out_trade_no"


def test_order_query_needs_exactly_one_identifier() -> None:
    with pytest.raises(FieldError):
        OrderQueryRequest(sub_mch_id=v.SUB_MCH_ID)
    with pytest.raises(FieldError):
        OrderQueryRequest(sub_mch_id=v.SUB_MCH_ID, out_trade_no="A1", transaction_id="4200")
    assert OrderQueryRequest(sub_mch_id=v.SUB_MCH_ID, transaction_id="4200").to_fields() == {
        "sub_mch_id": v.SUB_MCH_ID,
        "transaction_id": "4200",
    }


def test_refund_rules() -> None:
    ok = RefundRequest(sub_mch_id="1", out_trade_no="A1", out_refund_no="R@1", total_fee=10, refund_fee=10)
    assert ok.refund_fee == 10
    with pytest.raises(FieldError) as info:
        RefundRequest(sub_mch_id="1", out_trade_no="A1", out_refund_no="R1", total_fee=10, refund_fee=11)
    assert info.value.field == "refund_fee"
    with pytest.raises(FieldError):
        RefundRequest(sub_mch_id="1", out_refund_no="R1", total_fee=10, refund_fee=1)
    with pytest.raises(FieldError):
        RefundRequest(sub_mch_id="1", out_trade_no="A1", out_refund_no="R 1", total_fee=10, refund_fee=1)
    with pytest.raises(FieldError):
        RefundRequest(
            sub_mch_id="1", out_trade_no="A1", out_refund_no="R1", total_fee=10, refund_fee=1, refund_fee_type="usd"
        )


def test_refund_query_needs_an_identifier_and_a_sane_offset() -> None:
    with pytest.raises(FieldError):
        RefundQueryRequest(sub_mch_id="1")
    with pytest.raises(FieldError):
        RefundQueryRequest(sub_mch_id="1", out_refund_no="R1", offset=-1)
    assert RefundQueryRequest(sub_mch_id="1", out_refund_no="R1", offset=10).to_fields()["offset"] == "10"


def test_download_bill_date_is_the_china_day_of_an_aware_datetime() -> None:
    late_utc = datetime(2024, 1, 1, 20, 0, tzinfo=UTC)  # already 2 January in China
    assert DownloadBillRequest(bill_date=late_utc).to_fields()["bill_date"] == "20240102"
    assert DownloadBillRequest(bill_date=date(2024, 1, 1)).to_fields() == {"bill_date": "20240101", "bill_type": "ALL"}
    with pytest.raises(FieldError):
        DownloadBillRequest(bill_date=datetime(2024, 1, 1))
    with pytest.raises(FieldError):
        DownloadBillRequest(bill_date=date(2024, 1, 1), bill_type="EVERYTHING")  # type: ignore[arg-type]


# --- responses ----------------------------------------------------------------------------------


def test_unified_order_response_keeps_unknown_fields() -> None:
    fields = {**v.UNIFIED_ORDER_RESPONSE_FIELDS, "brand_new": "1"}
    response = UnifiedOrderResponse.from_fields(fields)
    assert response.extra == {"brand_new": "1"}
    assert response.to_fields() == fields


def test_order_query_response_converts_amounts_times_and_coupons() -> None:
    fields = {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "trade_state": "SUCCESS",
        "total_fee": "1000",
        "cash_fee": "900",
        "coupon_fee": "100",
        "coupon_count": "2",
        "coupon_type_0": "CASH",
        "coupon_id_0": "C0",
        "coupon_fee_0": "60",
        "coupon_id_1": "C1",
        "coupon_fee_1": "40",
        "time_end": "20240101120510",
        "rate": "92000000",
    }
    response = OrderQueryResponse.from_fields(fields)
    assert response.total_fee == 1000
    assert response.time_end == datetime(2024, 1, 1, 12, 5, 10, tzinfo=CHINA_TZ)
    assert response.coupons == [
        Coupon(index=0, coupon_type="CASH", coupon_id="C0", coupon_fee=60),
        Coupon(index=1, coupon_id="C1", coupon_fee=40),
    ]
    assert response.rate == 92000000
    assert response.is_paid
    assert response.to_fields() == fields


def test_non_integer_amount_in_a_response_is_a_field_error() -> None:
    with pytest.raises(FieldError) as info:
        OrderQueryResponse.from_fields({"return_code": "SUCCESS", "total_fee": "10.00"})
    assert info.value.field == "total_fee"


@pytest.mark.parametrize("text", ["9" * 19, "9" * 5000, "-" + "9" * 5000, "+5", "--5", "-", "\u0661"])
def test_an_out_of_range_or_odd_integer_is_a_field_error_on_both_sides(text: str) -> None:
    # int() alone raises a plain ValueError past 4300 digits: the sandbox parses requests with this too.
    with pytest.raises(FieldError) as info:
        OrderQueryResponse.from_fields({"return_code": "SUCCESS", "total_fee": text})
    assert info.value.field == "total_fee"
    received = build_request(_order(), appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY) | {"total_fee": text}
    with pytest.raises(FieldError) as info:
        UnifiedOrderRequest.from_fields(received)
    assert info.value.field == "total_fee"


def test_the_largest_wire_integer_is_taken() -> None:
    assert OrderQueryResponse.from_fields({"return_code": "SUCCESS", "total_fee": "9" * 18}).total_fee == 10**18 - 1


def test_an_absurd_record_index_stays_an_unknown_field() -> None:
    huge = "9" * 5000  # int() would raise a plain ValueError on it
    response = RefundQueryResponse.from_fields(
        {"return_code": "SUCCESS", f"refund_fee_{huge}": "1", "refund_fee_0": "5", f"coupon_refund_fee_0_{huge}": "3"}
    )
    assert [r.refund_fee for r in response.refunds] == [5]
    assert set(response.extra) == {f"refund_fee_{huge}", f"coupon_refund_fee_0_{huge}"}


def test_malformed_time_in_a_response_is_a_field_error() -> None:
    with pytest.raises(FieldError):
        OrderQueryResponse.from_fields({"return_code": "SUCCESS", "time_end": "2024-01-01"})


def test_refund_query_response_parses_the_indexed_refunds_in_order() -> None:
    fields = {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "out_trade_no": "A1",
        "refund_count": "2",
        "out_refund_no_1": "R1",
        "refund_fee_1": "200",
        "refund_status_1": "PROCESSING",
        "out_refund_no_0": "R0",
        "refund_id_0": "50000",
        "refund_fee_0": "100",
        "refund_status_0": "SUCCESS",
        "refund_recv_accout_0": "支付用户零钱",
        "refund_success_time_0": "2024-01-02 10:00:00",
        "coupon_refund_count_0": "1",
        "coupon_type_0_0": "CASH",
        "coupon_refund_id_0_0": "CR0",
        "coupon_refund_fee_0_0": "5",
        "refund_fee_type_0": "HKD",
        "mystery_0": "kept",
    }
    response = RefundQueryResponse.from_fields(fields)
    assert [r.out_refund_no for r in response.refunds] == ["R0", "R1"]
    first = response.refunds[0]
    assert first.refund_fee == 100
    assert first.refund_success_time == datetime(2024, 1, 2, 10, 0, tzinfo=CHINA_TZ)
    assert first.coupons[0].coupon_refund_fee == 5
    assert first.refund_fee_type == "HKD"
    assert response.extra == {"mystery_0": "kept"}
    assert response.to_fields() == fields


def test_refund_response_parses_its_coupons() -> None:
    fields = {
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "refund_fee": "500",
        "cash_refund_fee": "460",
        "coupon_refund_count": "1",
        "coupon_refund_fee_0": "10",
        "coupon_refund_id_0": "X",
    }
    response = RefundResponse.from_fields(fields)
    assert response.cash_refund_fee == 460
    assert response.coupons[0].coupon_refund_fee == 10
    assert response.to_fields() == fields


def test_exchange_rate_response() -> None:
    response = ExchangeRateResponse.from_fields(
        {"return_code": "SUCCESS", "fee_type": "USD", "rate": "650000000", "rate_time": "20150807"}
    )
    assert response.rate == 650_000_000
    assert response.rate_date == date(2015, 8, 7)


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@settings(deadline=None)  # a loaded CI box must not turn slowness into flakiness
@given(
    total_fee=st.integers(min_value=1, max_value=10**12),
    coupons=st.lists(st.tuples(_TEXT.filter(bool), st.integers(min_value=0, max_value=10**6)), max_size=5),
    extra=st.dictionaries(st.from_regex(r"zz[a-z]{1,8}", fullmatch=True), _TEXT.filter(bool), max_size=3),
)
def test_order_query_response_round_trips(
    total_fee: int, coupons: list[tuple[str, int]], extra: dict[str, str]
) -> None:
    fields = {"return_code": "SUCCESS", "total_fee": str(total_fee), **extra}
    for n, (coupon_id, fee) in enumerate(coupons):
        fields[f"coupon_id_{n}"] = coupon_id
        fields[f"coupon_fee_{n}"] = str(fee)
    assert OrderQueryResponse.from_fields(fields).to_fields() == fields


# --- jscode2session ----------------------------------------------------------------------------


def test_code2session_masks_the_session_key() -> None:
    result = Code2SessionResult.from_json(
        {"openid": v.SUB_OPENID, "session_key": "tiihtNczf5v6AKRyjwEUhQ==", "errcode": 0}
    )
    assert result.openid == v.SUB_OPENID
    assert result.session_key.reveal() == "tiihtNczf5v6AKRyjwEUhQ=="
    assert "tiihtNczf5v6AKRyjwEUhQ==" not in repr(result)
    assert "tiihtNczf5v6AKRyjwEUhQ==" not in str(result)


def test_code2session_error_raises_login_error() -> None:
    with pytest.raises(LoginError) as info:
        Code2SessionResult.from_json({"errcode": 40029, "errmsg": "invalid code, rid: 1"})
    assert info.value.errcode == 40029
    assert not info.value.retryable
    with pytest.raises(LoginError) as busy:
        Code2SessionResult.from_json({"errcode": -1, "errmsg": "system error"})
    assert busy.value.retryable


def test_code2session_without_openid_is_refused() -> None:
    with pytest.raises(FieldError):
        Code2SessionResult.from_json({"session_key": "k"})


_OUT_TRADE_NO = st.from_regex(r"[0-9A-Za-z_\-|*]{1,32}", fullmatch=True)
_BMP = st.characters(codec="utf-8", max_codepoint=0xFFFF, exclude_categories=("Cs", "Cc"))
_BODY = st.text(alphabet=_BMP, min_size=1, max_size=127).filter(
    lambda s: "\ufffe" not in s and "\uffff" not in s and len(s.encode()) <= 127  # bytes of UTF-8
)


@settings(deadline=None)
@given(
    out_trade_no=_OUT_TRADE_NO,
    total_fee=st.integers(min_value=1, max_value=10**12),
    fee_type=st.sampled_from(["HKD", "JPY", "USD", "CNY", "EUR"]),
    body=_BODY,
    attach=st.none() | _BODY,
    minutes=st.none() | st.integers(min_value=1, max_value=60 * 24 * 7),
)
def test_a_built_request_parses_back_on_the_sandbox_side(
    out_trade_no: str, total_fee: int, fee_type: str, body: str, attach: str | None, minutes: int | None
) -> None:
    start = datetime(2024, 1, 1, 12, 0, tzinfo=CHINA_TZ)
    request = _order(
        out_trade_no=out_trade_no,
        total_fee=total_fee,
        fee_type=fee_type,
        body=body,
        attach=attach,
        time_start=start if minutes else None,
        time_expire=start + timedelta(minutes=minutes) if minutes else None,
    )
    wire = build_request(request, appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY)
    verify(wire, v.KEY)
    assert UnifiedOrderRequest.from_fields(wire) == request


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/notify",
        "https://127.0.0.1/notify",
        "https://192.168.1.20/notify",
        "https://10.0.0.1/notify",
        "https://172.16.0.5/notify",
        "http://[::1]/notify",
        "http://169.254.1.1/notify",
        "http://0.0.0.0/notify",
    ],
)
def test_notify_url_for_real_wechat_refuses_local_and_private_hosts(url: str) -> None:
    with pytest.raises(FieldError) as info:
        check_notify_url(url)
    assert info.value.field == "notify_url"
    assert check_notify_url(url, allow_local=True) == url  # the sandbox and tests call back locally


def test_notify_url_for_real_wechat_takes_a_public_host() -> None:
    for url in ("https://merchant.example.com/wxpay/notify", "http://8.8.8.8/notify"):
        assert check_notify_url(url) == url
