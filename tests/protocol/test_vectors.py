"""Every signature and encryption vector of spec 3.2-3.4, 6.3, 7.6 and 12.2, reproduced by the code."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest

from minipay.protocol import (
    CloseOrderRequest,
    ExchangeRateRequest,
    FieldError,
    OrderQueryRequest,
    PaymentNotification,
    RefundRequest,
    SignatureError,
    UnifiedOrderRequest,
    UnifiedOrderResponse,
    build_pay_params,
    build_request,
    check_response,
    decode_xml,
    decrypt_req_info,
    encrypt_req_info,
    explain_signature,
    parse_payment_notification,
    sign,
    string_to_sign,
    verify,
    verify_pay_params,
)
from tests.protocol import vectors as v


def test_official_example_string_a_is_sorted_raw_fields() -> None:
    assert string_to_sign(v.OFFICIAL_FIELDS) == v.OFFICIAL_STRING_A


def test_official_example_md5() -> None:
    assert sign(v.OFFICIAL_FIELDS, v.OFFICIAL_KEY) == v.OFFICIAL_MD5


def test_official_example_hmac_sha256() -> None:
    assert sign(v.OFFICIAL_FIELDS, v.OFFICIAL_KEY, "HMAC-SHA256") == v.OFFICIAL_HMAC


def test_official_example_verifies_with_both_algorithms() -> None:
    verify({**v.OFFICIAL_FIELDS, "sign": v.OFFICIAL_MD5}, v.OFFICIAL_KEY)
    verify({**v.OFFICIAL_FIELDS, "sign": v.OFFICIAL_HMAC}, v.OFFICIAL_KEY)


def test_official_paysign_example() -> None:
    assert sign(v.PAYSIGN_FIELDS, v.PAYSIGN_KEY) == v.PAYSIGN


def test_official_paysign_example_through_build_pay_params() -> None:
    params = build_pay_params(
        app_id=v.PAYSIGN_FIELDS["appId"],
        prepay_id="wx2017033010242291fcfe0db70013231072",
        key=v.PAYSIGN_KEY,
        timestamp=1490840662,
        nonce=v.PAYSIGN_FIELDS["nonceStr"],
    )
    assert params["paySign"] == v.PAYSIGN
    assert "appId" not in params
    assert verify_pay_params(params, app_id="wxd678efh567hg6787", key=v.PAYSIGN_KEY) == (
        "wx2017033010242291fcfe0db70013231072"
    )


def test_unified_order_string_sign_temp_matches_the_spec() -> None:
    explanation = explain_signature(v.UNIFIED_ORDER_FIELDS, v.KEY)
    assert explanation.string_to_sign == v.UNIFIED_ORDER_STRING_SIGN_TEMP.replace(v.KEY, "<redacted>")
    assert v.KEY not in repr(explanation)


def test_unified_order_md5_vector() -> None:
    assert sign(v.UNIFIED_ORDER_FIELDS, v.KEY) == v.UNIFIED_ORDER_MD5


def test_unified_order_hmac_vector_signs_the_sign_type_field() -> None:
    fields = {**v.UNIFIED_ORDER_FIELDS, "sign_type": "HMAC-SHA256"}
    assert sign(fields, v.KEY, "HMAC-SHA256") == v.UNIFIED_ORDER_HMAC


def _unified_order_request() -> UnifiedOrderRequest:
    return UnifiedOrderRequest(
        sub_mch_id=v.SUB_MCH_ID,
        sub_appid=v.SUB_APPID,
        sub_openid=v.SUB_OPENID,
        body="Demo Shop-Coffee",
        out_trade_no=v.OUT_TRADE_NO,
        total_fee=1000,
        fee_type="HKD",
        spbill_create_ip="203.0.113.10",
        notify_url="https://merchant.example.com/wxpay/notify",
    )


@pytest.mark.parametrize(
    ("sign_type", "expected"), [("MD5", v.UNIFIED_ORDER_MD5), ("HMAC-SHA256", v.UNIFIED_ORDER_HMAC)]
)
def test_unified_order_request_model_reproduces_the_vectors(sign_type: str, expected: str) -> None:
    fields = build_request(
        _unified_order_request(),
        appid=v.APPID,
        mch_id=v.MCH_ID,
        key=v.KEY,
        sign_type=sign_type,
        nonce=v.UNIFIED_ORDER_FIELDS["nonce_str"],
    )
    assert fields["sign"] == expected
    expected_fields = dict(v.UNIFIED_ORDER_FIELDS)
    if sign_type != "MD5":
        expected_fields["sign_type"] = sign_type
    assert {k: val for k, val in fields.items() if k != "sign"} == expected_fields


def test_unified_order_response_vector_passes_check_response() -> None:
    assert sign(v.UNIFIED_ORDER_RESPONSE_FIELDS, v.KEY) == v.UNIFIED_ORDER_RESPONSE_MD5
    fields = check_response("unifiedorder", decode_xml(v.UNIFIED_ORDER_RESPONSE_XML), key=v.KEY)
    response = UnifiedOrderResponse.from_fields(fields)
    assert response.prepay_id == "wx201411101639507cbf6ffd8b0779950874"
    assert response.sign == v.UNIFIED_ORDER_RESPONSE_MD5


@pytest.mark.parametrize(("sign_type", "expected"), [("MD5", v.SIGN_AGAIN_MD5), ("HMAC-SHA256", v.SIGN_AGAIN_HMAC)])
def test_sign_again_vectors(sign_type: str, expected: str) -> None:
    assert sign({**v.SIGN_AGAIN_FIELDS, "signType": sign_type}, v.KEY, sign_type) == expected
    params = build_pay_params(
        app_id=v.SUB_APPID,
        prepay_id="wx201411101639507cbf6ffd8b0779950874",
        key=v.KEY,
        sign_type=sign_type,
        timestamp=1704067200,
        nonce=v.SIGN_AGAIN_FIELDS["nonceStr"],
    )
    assert params == {
        "timeStamp": "1704067200",
        "nonceStr": "e61463f8efa94090b1f366cccfbbb444",
        "package": "prepay_id=wx201411101639507cbf6ffd8b0779950874",
        "signType": sign_type,
        "paySign": expected,
    }


def test_notification_sample_vector() -> None:
    fields = decode_xml(v.NOTIFICATION_XML)
    assert sign(fields, v.KEY) == v.NOTIFICATION_MD5
    notification = parse_payment_notification(v.NOTIFICATION_XML, v.KEY)
    assert isinstance(notification, PaymentNotification)
    assert notification.sign == v.NOTIFICATION_MD5


def test_order_query_vector() -> None:
    assert sign(v.ORDER_QUERY_FIELDS, v.KEY) == v.ORDER_QUERY_MD5
    request = OrderQueryRequest(sub_mch_id=v.SUB_MCH_ID, sub_appid=v.SUB_APPID, out_trade_no=v.OUT_TRADE_NO)
    fields = build_request(request, appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY, nonce=v.ORDER_QUERY_FIELDS["nonce_str"])
    assert fields["sign"] == v.ORDER_QUERY_MD5


def test_close_order_vector() -> None:
    assert sign(v.CLOSE_ORDER_FIELDS, v.KEY) == v.CLOSE_ORDER_MD5
    request = CloseOrderRequest(sub_mch_id=v.SUB_MCH_ID, sub_appid=v.SUB_APPID, out_trade_no=v.OUT_TRADE_NO)
    fields = build_request(request, appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY, nonce=v.CLOSE_ORDER_FIELDS["nonce_str"])
    assert fields["sign"] == v.CLOSE_ORDER_MD5


def test_refund_vector() -> None:
    assert sign(v.REFUND_FIELDS, v.KEY) == v.REFUND_MD5
    request = RefundRequest(
        sub_mch_id=v.SUB_MCH_ID,
        sub_appid=v.SUB_APPID,
        out_trade_no=v.OUT_TRADE_NO,
        out_refund_no="REFUND20240102000001",
        total_fee=1000,
        refund_fee=500,
        refund_fee_type="HKD",
        notify_url="https://merchant.example.com/wxpay/refund-notify",
    )
    fields = build_request(request, appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY, nonce=v.REFUND_FIELDS["nonce_str"])
    assert fields["sign"] == v.REFUND_MD5


def test_exchange_rate_vector_has_no_nonce() -> None:
    assert sign(v.EXCHANGE_RATE_FIELDS, v.KEY) == v.EXCHANGE_RATE_MD5
    request = ExchangeRateRequest(sub_mch_id=v.SUB_MCH_ID, fee_type="HKD", date=date(2024, 1, 1))
    fields = build_request(request, appid=v.APPID, mch_id=v.MCH_ID, key=v.KEY)
    assert "nonce_str" not in fields
    assert fields["sign"] == v.EXCHANGE_RATE_MD5


def test_req_info_aes_key_is_lower_hex_md5_of_the_api_key() -> None:
    assert hashlib.md5(v.KEY.encode()).hexdigest() == v.REQ_INFO_KEY_STAR
    assert hashlib.md5(v.OFFICIAL_KEY.encode()).hexdigest() == v.OFFICIAL_KEY_STAR


def test_req_info_vector_encrypts_exactly() -> None:
    assert encrypt_req_info(v.REQ_INFO_PLAINTEXT, v.KEY) == v.REQ_INFO_CIPHERTEXT


def test_req_info_vector_decrypts_exactly() -> None:
    assert decrypt_req_info(v.REQ_INFO_CIPHERTEXT, v.KEY) == v.REQ_INFO_PLAINTEXT
    assert decode_xml(decrypt_req_info(v.REQ_INFO_CIPHERTEXT, v.KEY), root="root") == {"refund_status": "SUCCESS"}


@pytest.mark.parametrize("timestamp", [1490840662000, 0, -1, True, "1490840662"])
def test_pay_params_refuse_a_timestamp_that_is_not_unix_seconds(timestamp: object) -> None:
    with pytest.raises(FieldError, match="timeStamp"):
        build_pay_params(app_id=v.PAYSIGN_FIELDS["appId"], prepay_id="wx1", key=v.PAYSIGN_KEY, timestamp=timestamp)  # type: ignore[arg-type]


@pytest.mark.parametrize("nonce", ["", "a" * 33, "nonce with spaces"])
def test_pay_params_refuse_a_bad_nonce(nonce: str) -> None:
    with pytest.raises(FieldError, match="nonceStr"):
        build_pay_params(app_id=v.PAYSIGN_FIELDS["appId"], prepay_id="wx1", key=v.PAYSIGN_KEY, nonce=nonce)


@pytest.mark.parametrize("package", ["prepay_id=", "prepayid=wx1", "wx2017033010242291fcfe0db70013231072"])
def test_pay_params_with_a_validly_signed_but_malformed_package_are_refused(package: str) -> None:
    fields = {**v.PAYSIGN_FIELDS, "package": package}
    params = {
        "timeStamp": fields["timeStamp"],
        "nonceStr": fields["nonceStr"],
        "package": package,
        "signType": "MD5",
        "paySign": sign(fields, v.PAYSIGN_KEY),
    }
    with pytest.raises(SignatureError, match="package"):
        verify_pay_params(params, app_id=fields["appId"], key=v.PAYSIGN_KEY)  # type: ignore[arg-type]
