"""Payment and refund notifications: verification first, typed results, exact replies, tampering."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime

import pytest

from minipay.protocol import (
    CHINA_TZ,
    DecryptionError,
    FieldError,
    PaymentNotification,
    RefundNotification,
    SignatureError,
    SignPolicy,
    XMLError,
    build_payment_notification,
    build_refund_notification,
    decode_xml,
    decrypt_req_info,
    encode_xml,
    encrypt_req_info,
    parse_payment_notification,
    parse_refund_notification,
    reply_fail,
    reply_success,
    sign,
)
from tests.protocol import vectors as v

NOTIFICATION_FIELDS = decode_xml(v.NOTIFICATION_XML)
OUTER = {
    "return_code": "SUCCESS",
    "appid": v.APPID,
    "mch_id": v.MCH_ID,
    "sub_appid": v.SUB_APPID,
    "sub_mch_id": v.SUB_MCH_ID,
    "nonce_str": "0b9f35f484df17a732e537c37708d1d0",
}
INNER = {
    "transaction_id": "4200000001202401010000000001",
    "out_trade_no": v.OUT_TRADE_NO,
    "refund_id": "50000000012024010200000000001",
    "out_refund_no": "REFUND20240102000001",
    "total_fee": "1000",
    "refund_fee": "500",
    "settlement_refund_fee": "500",
    "refund_status": "SUCCESS",
    "success_time": "2024-01-02 10:00:00",
    "refund_recv_accout": "支付用户零钱",
    "refund_account": "REFUND_SOURCE_UNSETTLED_FUNDS",
    "refund_request_source": "API",
    "cash_refund_fee": "460",
}


def test_sample_notification_parses_into_its_typed_model() -> None:
    notification = parse_payment_notification(v.NOTIFICATION_XML, v.KEY)
    assert isinstance(notification, PaymentNotification)
    assert notification.is_success
    assert notification.out_trade_no == v.OUT_TRADE_NO
    assert notification.total_fee == 1000
    assert notification.cash_fee == 920
    assert notification.fee_type == "HKD"
    assert notification.sub_mch_id == v.SUB_MCH_ID
    assert notification.sub_openid == v.SUB_OPENID
    assert notification.time_end == datetime(2024, 1, 1, 12, 5, 10, tzinfo=CHINA_TZ)
    assert notification.rate_value == 92_000_000
    assert notification.exchange_rate == 92_000_000


def test_rate_is_accepted_under_its_other_name() -> None:
    fields = {k: val for k, val in NOTIFICATION_FIELDS.items() if k not in ("sign", "rate_value")}
    fields["rate"] = "92000000"
    notification = parse_payment_notification(build_payment_notification(fields, v.KEY), v.KEY)
    assert notification.rate == 92_000_000
    assert notification.exchange_rate == 92_000_000


def test_unknown_fields_are_verified_and_kept() -> None:
    fields = {k: val for k, val in NOTIFICATION_FIELDS.items() if k != "sign"}
    fields["sign_type"] = "MD5"
    fields["promotion_detail"] = '{"x": 1}'
    notification = parse_payment_notification(build_payment_notification(fields, v.KEY), v.KEY)
    assert notification.extra == {"promotion_detail": '{"x": 1}'}
    assert notification.sign_type == "MD5"


def test_unknown_field_added_by_a_forger_breaks_the_signature() -> None:
    forged = v.NOTIFICATION_XML.replace(b"</xml>", b"<extra_field>1</extra_field></xml>")
    with pytest.raises(SignatureError):
        parse_payment_notification(forged, v.KEY)


def test_forged_amount_is_refused() -> None:
    forged = v.NOTIFICATION_XML.replace(b"<total_fee>1000</total_fee>", b"<total_fee>1</total_fee>")
    with pytest.raises(SignatureError, match="wrong signature"):
        parse_payment_notification(forged, v.KEY)


def test_notification_signed_with_another_key_is_refused() -> None:
    with pytest.raises(SignatureError):
        parse_payment_notification(v.NOTIFICATION_XML, v.OFFICIAL_KEY)


def test_missing_sign_is_a_failure() -> None:
    unsigned = encode_xml({k: val for k, val in NOTIFICATION_FIELDS.items() if k != "sign"})
    with pytest.raises(SignatureError, match="missing"):
        parse_payment_notification(unsigned, v.KEY)


def test_md5_notification_is_refused_under_a_hmac_policy() -> None:
    with pytest.raises(SignatureError, match="refused"):
        parse_payment_notification(v.NOTIFICATION_XML, v.KEY, policy=SignPolicy(pinned="HMAC-SHA256"))


def test_hmac_notification_passes_the_hmac_policy() -> None:
    fields = {k: val for k, val in NOTIFICATION_FIELDS.items() if k != "sign"}
    body = build_payment_notification(fields, v.KEY, "HMAC-SHA256")
    assert b"<sign_type><![CDATA[HMAC-SHA256]]></sign_type>" in body
    notification = parse_payment_notification(body, v.KEY, policy=SignPolicy(pinned="HMAC-SHA256"))
    assert notification.sign_type == "HMAC-SHA256"


def test_a_key_lookup_picks_the_institution_from_the_decoded_fields() -> None:
    seen: list[dict[str, str]] = []

    def lookup(fields: Mapping[str, str]) -> tuple[str, SignPolicy]:
        seen.append(dict(fields))
        return v.KEY, SignPolicy()

    notification = parse_payment_notification(v.NOTIFICATION_XML, lookup)
    assert notification.mch_id == seen[0]["mch_id"] == v.MCH_ID
    with pytest.raises(SignatureError, match="refused"):
        parse_payment_notification(v.NOTIFICATION_XML, lambda fields: (v.KEY, SignPolicy(pinned="HMAC-SHA256")))


def test_a_key_lookup_refuses_by_raising_before_the_signature_is_read() -> None:
    class Foreign(Exception):
        pass

    def lookup(fields: Mapping[str, str]) -> tuple[str, SignPolicy]:
        raise Foreign(fields["mch_id"])

    with pytest.raises(Foreign):
        parse_payment_notification(v.NOTIFICATION_XML, lookup)
    with pytest.raises(Foreign):
        parse_refund_notification(build_refund_notification(OUTER, INNER, v.KEY), lookup)


def test_hostile_notification_body_is_an_xml_error() -> None:
    with pytest.raises(XMLError):
        parse_payment_notification(b'<!DOCTYPE x [<!ENTITY e "e">]><xml><a>&e;</a></xml>', v.KEY)


def test_oversized_notification_is_refused() -> None:
    with pytest.raises(XMLError, match="too large"):
        parse_payment_notification(v.NOTIFICATION_XML, v.KEY, max_bytes=100)


def test_signed_but_malformed_amount_is_a_field_error() -> None:
    fields = {k: val for k, val in NOTIFICATION_FIELDS.items() if k != "sign"}
    fields["total_fee"] = "10.00"
    with pytest.raises(FieldError):
        parse_payment_notification(build_payment_notification(fields, v.KEY), v.KEY)


def test_builder_reproduces_the_sample_byte_for_byte_after_decoding() -> None:
    body = build_payment_notification(NOTIFICATION_FIELDS, v.KEY)
    assert decode_xml(body) == NOTIFICATION_FIELDS


def test_model_round_trips_to_the_signed_fields() -> None:
    notification = PaymentNotification.from_fields(NOTIFICATION_FIELDS)
    assert notification.to_fields() == NOTIFICATION_FIELDS


def test_reply_success_is_exact() -> None:
    assert reply_success() == (
        b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
    )


def test_reply_fail_carries_the_message() -> None:
    assert decode_xml(reply_fail("签名失败 ]]> & <")) == {"return_code": "FAIL", "return_msg": "签名失败 ]]> & <"}


# --- refund notifications ----------------------------------------------------------------------


def test_refund_notification_round_trips() -> None:
    body = build_refund_notification(OUTER, INNER, v.KEY)
    assert b"<sign>" not in body
    notification = parse_refund_notification(body, v.KEY)
    assert isinstance(notification, RefundNotification)
    assert notification.refund_status == "SUCCESS"
    assert notification.refund_fee == 500
    assert notification.cash_refund_fee == 460
    assert notification.sub_mch_id == v.SUB_MCH_ID
    assert notification.success_time == datetime(2024, 1, 2, 10, 0, tzinfo=CHINA_TZ)
    assert notification.inner_fields() == INNER


def test_refund_notification_with_the_spec_vector_req_info() -> None:
    body = encode_xml({**OUTER, "req_info": v.REQ_INFO_CIPHERTEXT})
    assert parse_refund_notification(body, v.KEY).refund_status == "SUCCESS"


def test_refund_notification_with_a_wrong_key_is_refused() -> None:
    body = build_refund_notification(OUTER, INNER, v.KEY)
    with pytest.raises((DecryptionError, XMLError)):
        parse_refund_notification(body, v.OFFICIAL_KEY)


def _with_req_info(req_info: str) -> bytes:
    return encode_xml({**OUTER, "req_info": req_info})


def test_missing_req_info_is_refused() -> None:
    with pytest.raises(DecryptionError, match="no req_info"):
        parse_refund_notification(encode_xml(OUTER), v.KEY)


@pytest.mark.parametrize(
    "req_info",
    [
        "not base64!!",
        base64.b64encode(b"short").decode(),  # not whole blocks
        base64.b64encode(b"\x00" * 16).decode(),  # decrypts to garbage padding
        v.REQ_INFO_CIPHERTEXT[:-4] + "AAA=",  # tampered last block
        v.REQ_INFO_CIPHERTEXT.replace("=", "") + "!",
    ],
)
def test_tampered_req_info_is_refused(req_info: str) -> None:
    with pytest.raises((DecryptionError, XMLError)):
        parse_refund_notification(_with_req_info(req_info), v.KEY)


def test_swapped_ciphertext_blocks_are_refused() -> None:
    raw = base64.b64decode(v.REQ_INFO_CIPHERTEXT)
    swapped = raw[16:32] + raw[:16] + raw[32:]
    with pytest.raises((DecryptionError, XMLError)):
        parse_refund_notification(_with_req_info(base64.b64encode(swapped).decode()), v.KEY)


def test_hostile_inner_document_is_refused_by_the_same_codec() -> None:
    evil = b'<!DOCTYPE root [<!ENTITY x SYSTEM "file:///etc/passwd">]><root><a>&x;</a></root>'
    with pytest.raises(XMLError, match="DOCTYPE"):
        parse_refund_notification(_with_req_info(encrypt_req_info(evil, v.KEY)), v.KEY)


def test_inner_document_with_the_wrong_root_is_refused() -> None:
    inner = encode_xml({"refund_status": "SUCCESS"})  # <xml>, not <root>
    with pytest.raises(XMLError, match="root"):
        parse_refund_notification(_with_req_info(encrypt_req_info(inner, v.KEY)), v.KEY)


def test_inner_fields_cannot_override_outer_ones() -> None:
    inner = encode_xml({"refund_status": "SUCCESS", "sub_mch_id": "999"}, root="root")
    with pytest.raises(DecryptionError, match="outer"):
        parse_refund_notification(_with_req_info(encrypt_req_info(inner, v.KEY)), v.KEY)


def test_refund_notification_builder_refuses_a_sign() -> None:
    with pytest.raises(ValueError, match="sign"):
        build_refund_notification({**OUTER, "sign": "X"}, INNER, v.KEY)


def test_payment_builder_replaces_a_stale_sign() -> None:
    fields = {**NOTIFICATION_FIELDS, "sign": "0" * 32}
    body = build_payment_notification(fields, v.KEY)
    assert decode_xml(body)["sign"] == sign({k: val for k, val in fields.items() if k != "sign"}, v.KEY)


def test_req_info_with_altered_unused_base64_bits_is_refused() -> None:
    # "mg==" and "mh==" decode to the same bytes: only the canonical spelling is WeChat's.
    assert v.REQ_INFO_CIPHERTEXT.endswith("mg==")
    altered = v.REQ_INFO_CIPHERTEXT[:-3] + "h=="
    assert base64.b64decode(altered) == base64.b64decode(v.REQ_INFO_CIPHERTEXT)
    with pytest.raises(DecryptionError, match="canonical"):
        decrypt_req_info(altered, v.KEY)


@pytest.mark.parametrize(
    "req_info",
    [
        v.REQ_INFO_CIPHERTEXT[:20] + "\n" + v.REQ_INFO_CIPHERTEXT[20:],  # a line break inside
        v.REQ_INFO_CIPHERTEXT.rstrip("="),  # padding left off
        v.REQ_INFO_CIPHERTEXT + "=",  # too much padding
        v.REQ_INFO_CIPHERTEXT.replace("+", "-").replace("/", "_"),  # the URL-safe alphabet
        v.REQ_INFO_CIPHERTEXT[:-4] + "\uff2d\uff47==",  # full-width letters
        "",
    ],
    ids=["line-break", "no-padding", "extra-padding", "url-safe", "non-ascii", "empty"],
)
def test_req_info_must_be_strict_base64(req_info: str) -> None:
    with pytest.raises(DecryptionError):
        decrypt_req_info(req_info, v.KEY)


def test_req_info_of_another_type_is_a_decryption_error() -> None:
    with pytest.raises(DecryptionError):
        decrypt_req_info(base64.b64decode(v.REQ_INFO_CIPHERTEXT), v.KEY)  # type: ignore[arg-type]


@pytest.mark.parametrize("tail", [b"\x01\x02", b"\x03\x03\x04\x04", b"\x00" * 15 + b"\x10"], ids=["1-2", "3-4", "0-16"])
def test_req_info_whose_padding_bytes_disagree_is_refused(tail: bytes) -> None:
    # The last byte alone is in range; PKCS#7 also wants the bytes before it to repeat it.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    plain = b"<root><a>1</a></root>"
    plain += b" " * (-(len(plain) + len(tail)) % 16) + tail
    aes_key = hashlib.md5(v.KEY.encode()).hexdigest().encode()
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()  # ECB: WeChat's mode (spec 12.2)
    forged = base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
    with pytest.raises(DecryptionError, match="padding"):
        decrypt_req_info(forged, v.KEY)
