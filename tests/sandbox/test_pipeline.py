"""Spec 18.4: every request goes through method, body, encoding, XML, merchant, signature, required fields."""

from __future__ import annotations

import pytest

from minipay.protocol import HMAC_SHA256, SignatureError, decode_xml, encode_xml, sign, verify
from tests.sandbox.conftest import APPID, HKD_APP, HKD_SUB, KEY, MCH_ID, Sandbox

pytestmark = pytest.mark.anyio

ALL_XML_PATHS = [
    "/pay/unifiedorder",
    "/pay/orderquery",
    "/pay/closeorder",
    "/secapi/pay/refund",
    "/pay/refundquery",
    "/pay/downloadbill",
    "/pay/queryexchagerate",
    "/payitil/report",
]

# The spec's unified-order sample (section 5.5), signed with the spec's fake key (section 3.4).
SPEC_SAMPLE = {
    "appid": "wx8888888888888888",
    "mch_id": "1900000109",
    "sub_appid": "wx1234567890abcdef",
    "sub_mch_id": "1900000110",
    "nonce_str": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "body": "Demo Shop-Coffee",
    "out_trade_no": "ORDER20240101000001",
    "fee_type": "HKD",
    "total_fee": "1000",
    "spbill_create_ip": "203.0.113.10",
    "notify_url": "https://merchant.example.com/wxpay/notify",
    "trade_type": "JSAPI",
    "sub_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    "sign": "ADB78094AECABDCAEFBBFCCA21AB3DEE",
}


@pytest.mark.parametrize("path", ALL_XML_PATHS)
async def test_get_is_refused_with_return_code_fail_and_no_sign(sandbox: Sandbox, path: str) -> None:
    response = await sandbox.http.get(path)
    assert response.status_code == 200
    answer = decode_xml(response.content)
    assert answer["return_code"] == "FAIL"
    assert "REQUIRE_POST_METHOD" in answer["return_msg"]
    assert "sign" not in answer


@pytest.mark.parametrize("path", ALL_XML_PATHS)
async def test_empty_body_is_post_data_empty(sandbox: Sandbox, path: str) -> None:
    answer = decode_xml((await sandbox.http.post(path, content=b"")).content)
    assert answer["return_code"] == "FAIL"
    assert "POST_DATA_EMPTY" in answer["return_msg"]


async def test_non_utf8_body_is_not_utf8(sandbox: Sandbox) -> None:
    body = "<xml><body>咖啡</body></xml>".encode("gbk")
    answer = decode_xml((await sandbox.http.post("/pay/unifiedorder", content=body)).content)
    assert answer["return_code"] == "FAIL"
    assert "NOT_UTF8" in answer["return_msg"]


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><a>1</a>",
        b"<!DOCTYPE x [<!ENTITY e 'x'>]><xml><a>&e;</a></xml>",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>',
        b"<xml><a><b>nested</b></a></xml>",
        b"not xml at all",
    ],
)
async def test_malformed_or_hostile_xml_is_xml_format_error(sandbox: Sandbox, body: bytes) -> None:
    answer = decode_xml((await sandbox.http.post("/pay/orderquery", content=body)).content)
    assert answer["return_code"] == "FAIL"
    assert "XML_FORMAT_ERROR" in answer["return_msg"]
    assert "passwd" not in answer["return_msg"] or "root:" not in answer["return_msg"]


async def test_unknown_mch_id_fails_at_the_communication_layer(sandbox: Sandbox) -> None:
    answer = await sandbox.call(
        "/pay/orderquery", {"mch_id": "1999999999", "sub_mch_id": HKD_SUB, "out_trade_no": "X1"}
    )
    assert answer["return_code"] == "FAIL"
    assert "MCHID_NOT_EXIST" in answer["return_msg"]


async def test_appid_not_bound_to_mch_id_fails(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"appid": HKD_APP, "sub_mch_id": HKD_SUB, "out_trade_no": "X1"})
    assert answer["return_code"] == "FAIL"
    assert "APPID_MCHID_NOT_MATCH" in answer["return_msg"]


async def test_wrong_key_is_a_signature_error(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "X1"}, key="Z" * 32)
    assert answer == {"return_code": "FAIL", "return_msg": "签名错误"}


async def test_a_field_changed_after_signing_is_a_signature_error(sandbox: Sandbox) -> None:
    fields = {"appid": APPID, "mch_id": MCH_ID, "sub_mch_id": HKD_SUB, "out_trade_no": "X1", "nonce_str": "n1"}
    fields["sign"] = sign(fields, KEY)
    fields["out_trade_no"] = "X2"
    answer = decode_xml((await sandbox.http.post("/pay/orderquery", content=encode_xml(fields))).content)
    assert answer["return_msg"] == "签名错误"


async def test_unknown_fields_are_part_of_the_signature(sandbox: Sandbox) -> None:
    fields = {"sub_mch_id": HKD_SUB, "out_trade_no": "X1", "future_field": "value"}
    answer = await sandbox.call("/pay/orderquery", fields)
    assert answer["return_code"] == "SUCCESS"
    assert answer["err_code"] == "ORDERNOTEXIST"


async def test_hmac_request_gets_an_hmac_signed_answer(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "X1"}, sign_type=HMAC_SHA256)
    assert answer["return_code"] == "SUCCESS"
    assert len(answer["sign"]) == 64
    verify(answer, KEY, HMAC_SHA256)


async def test_md5_request_gets_an_md5_signed_answer(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "X1"})
    assert len(answer["sign"]) == 32
    verify(answer, KEY, "MD5")
    with pytest.raises(SignatureError):
        verify(answer, KEY, HMAC_SHA256)


async def test_hmac_signature_without_sign_type_is_checked_as_md5_and_refused(sandbox: Sandbox) -> None:
    fields = {"appid": APPID, "mch_id": MCH_ID, "sub_mch_id": HKD_SUB, "out_trade_no": "X1", "nonce_str": "n1"}
    fields["sign"] = sign(fields, KEY, HMAC_SHA256)
    answer = decode_xml((await sandbox.http.post("/pay/orderquery", content=encode_xml(fields))).content)
    assert answer["return_msg"] == "签名错误"


async def test_unknown_sign_type_is_refused(sandbox: Sandbox) -> None:
    fields = {"appid": APPID, "mch_id": MCH_ID, "sub_mch_id": HKD_SUB, "out_trade_no": "X1", "nonce_str": "n1",
              "sign_type": "SHA1"}  # fmt: skip
    fields["sign"] = sign({k: v for k, v in fields.items()}, KEY)
    answer = decode_xml((await sandbox.http.post("/pay/orderquery", content=encode_xml(fields))).content)
    assert answer["return_code"] == "FAIL"
    assert "sign_type" in answer["return_msg"]


async def test_the_spec_sample_request_passes_the_signature_check(sandbox: Sandbox) -> None:
    response = await sandbox.http.post("/pay/unifiedorder", content=encode_xml(SPEC_SAMPLE))
    answer = decode_xml(response.content)
    # Signature and fields are fine; the sample's sub_openid was never issued by this sandbox.
    assert answer["return_code"] == "SUCCESS"
    assert answer["result_code"] == "FAIL"
    assert answer["err_code"] == "PARAM_ERROR"
    assert "sub_openid" in answer["err_code_des"]


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        ("/pay/unifiedorder", "body"),
        ("/pay/orderquery", "sub_mch_id"),
        ("/pay/closeorder", "out_trade_no"),
        ("/secapi/pay/refund", "out_refund_no"),
        ("/pay/refundquery", "nonce_str"),
        ("/pay/downloadbill", "bill_date"),
        ("/payitil/report", "interface_url"),
    ],
)
async def test_a_missing_required_field_is_lack_params(sandbox: Sandbox, path: str, missing: str) -> None:
    fields: dict[str, str | int] = {
        "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "x", "out_trade_no": "X1", "total_fee": 1,
        "spbill_create_ip": "127.0.0.1", "notify_url": "http://127.0.0.1/n", "trade_type": "JSAPI", "fee_type": "HKD",
        "out_refund_no": "R1", "refund_fee": 1, "bill_date": "20240101", "interface_url": "x", "nonce_str": "abc",
    }  # fmt: skip
    del fields[missing]
    if missing == "nonce_str":
        body = {"appid": APPID, "mch_id": MCH_ID, **fields}
        body["sign"] = sign(body, KEY)
        answer = decode_xml((await sandbox.http.post(path, content=encode_xml(body))).content)
    else:
        answer = await sandbox.call(path, fields)
    if path == "/pay/downloadbill":
        # The bill API fails at the return_code layer (spec 13.2).
        assert answer["return_code"] == "FAIL"
        assert answer["return_msg"].startswith("LACK_PARAMS")
        return
    assert answer["return_code"] == "SUCCESS"
    assert answer["result_code"] == "FAIL"
    assert answer["err_code"] == "LACK_PARAMS"
    verify(answer, KEY, "MD5")


async def test_sub_mch_id_of_another_institution_is_noauth(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": "1234567", "out_trade_no": "X1"})
    assert answer["err_code"] == "NOAUTH"


async def test_answers_work_on_any_host_header(sandbox: Sandbox) -> None:
    for host in ("apius.mch.weixin.qq.com", "localhost:8801", "anything"):
        fields = {"appid": APPID, "mch_id": MCH_ID, "sub_mch_id": HKD_SUB, "out_trade_no": "X1", "nonce_str": "n"}
        fields["sign"] = sign(fields, KEY)
        response = await sandbox.http.post("/pay/orderquery", content=encode_xml(fields), headers={"Host": host})
        assert decode_xml(response.content)["err_code"] == "ORDERNOTEXIST"


async def test_every_err_code_the_sandbox_emits_is_in_the_protocol_code_table(sandbox: Sandbox) -> None:
    import re
    from pathlib import Path

    import minipay.sandbox
    from minipay.protocol._codes import describe_code
    from minipay.sandbox._config import RulesConfig
    from minipay.sandbox._errors import EMITTED_CODES

    operations = ("unifiedorder", "orderquery", "closeorder", "refund", "refundquery")
    for code in EMITTED_CODES:
        assert any(describe_code(op, code).known for op in operations), code
    # EMITTED_CODES is complete: every literal BizFail code in the sandbox and every [rules] default.
    source = "".join(p.read_text("utf-8") for p in Path(minipay.sandbox.__file__).parent.glob("*.py"))
    literals = set(re.findall(r'BizFail\(\s*"([A-Z_]+)"', source)) | set(re.findall(r'missing="([A-Z_]+)"', source))
    rules = RulesConfig()
    defaults = {rules.reentry_error, rules.close_too_early_code, rules.insufficient_funds_code}
    assert len(literals) > 10
    assert literals | defaults <= EMITTED_CODES, sorted((literals | defaults) - EMITTED_CODES)


async def test_err_code_des_comes_from_the_protocol_code_table(sandbox: Sandbox) -> None:
    from minipay.protocol import describe_code
    from minipay.sandbox._errors import BizFail, describe_err_code

    unknown = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "X1"})
    assert unknown["err_code"] == "ORDERNOTEXIST"
    assert unknown["err_code_des"] == describe_code("orderquery", "ORDERNOTEXIST").err_code_des == "此交易订单号不存在"
    closing = await sandbox.call("/pay/closeorder", {"sub_mch_id": HKD_SUB, "out_trade_no": "X1"})
    assert closing["err_code_des"] == describe_code("closeorder", "ORDERNOTEXIST").err_code_des == "订单不存在"
    # The same err_code is worded per operation, as the table words it.
    for path, operation in (("/pay/orderquery", "orderquery"), ("/pay/closeorder", "closeorder")):
        fields: dict[str, str | int] = {"sub_mch_id": HKD_SUB, "out_trade_no": "X1"}
        answer = await sandbox.call(path, fields, headers={"X-Sandbox-Fault": "SYSTEMERROR"})
        assert answer["err_code"] == "SYSTEMERROR"
        assert answer["err_code_des"] == describe_code(operation, "SYSTEMERROR").err_code_des
    assert describe_err_code("orderquery", "SYSTEMERROR") == "系统错误"
    assert describe_err_code("unifiedorder", "SYSTEMERROR") == "系统超时"
    # An explicit text wins; a code listed only under other operations takes their text; an unknown one is itself.
    assert BizFail("PARAM_ERROR", "total_fee参数错误").describe("refund") == "total_fee参数错误"
    assert BizFail("NOTENOUGH").describe("closeorder") == describe_code("refund", "NOTENOUGH").err_code_des
    assert BizFail("SOMETHING_NEW").describe("refund") == "SOMETHING_NEW"


async def test_a_nonce_longer_than_32_characters_is_param_error(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "X1", "nonce_str": "n" * 33})
    assert answer["err_code"] == "PARAM_ERROR"
    assert "nonce_str" in answer["err_code_des"]


def _signed(fields: dict[str, str | int], *, key: str = KEY, sign_type: str = "MD5") -> bytes:
    body: dict[str, str | int] = {"appid": APPID, "mch_id": MCH_ID, "nonce_str": "n1", **fields}
    if sign_type != "MD5":
        body["sign_type"] = sign_type
    body["sign"] = sign(body, key, sign_type)
    return encode_xml(body)


async def test_the_first_failing_step_of_the_pipeline_decides_the_answer(sandbox: Sandbox) -> None:
    # Each request breaks two neighbouring steps of spec 18.4; the earlier step must answer.
    order: dict[str, str | int] = {
        "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "x", "out_trade_no": "P1", "total_fee": 1,
        "spbill_create_ip": "127.0.0.1", "notify_url": "http://127.0.0.1/n", "trade_type": "JSAPI",
        "fee_type": "HKD", "sub_openid": "o" * 28,
    }  # fmt: skip

    async def post(body: bytes, method: str = "POST") -> dict[str, str]:
        response = await sandbox.http.request(method, "/pay/unifiedorder", content=body)
        assert response.status_code == 200  # always, whatever failed
        return decode_xml(response.content)

    # method before XML
    assert "REQUIRE_POST_METHOD" in (await post(b"<xml><a>", method="PUT"))["return_msg"]
    # known merchant before signature
    unknown = await post(_signed({**order, "mch_id": "1999999999"}, key="Z" * 32))
    assert "MCHID_NOT_EXIST" in unknown["return_msg"]
    # signature before required fields: a missing field under a bad signature is a signature error
    no_body = {k: v for k, v in order.items() if k != "body"}
    assert (await post(_signed(no_body, key="Z" * 32)))["return_msg"] == "签名错误"
    # required fields before sub-merchant binding
    lack = await post(_signed({**no_body, "sub_mch_id": "1234567"}))
    assert lack["err_code"] == "LACK_PARAMS"
    # sub_mch_id binding before sub_appid binding
    assert (await post(_signed({**order, "sub_mch_id": "1234567", "sub_appid": "wx0"})))["err_code"] == "NOAUTH"
    # bindings before field rules
    wrong_app = await post(_signed({**order, "sub_appid": "wx2234567890abcdef", "out_trade_no": "bad no!"}))
    assert wrong_app["err_code"] == "APPID_MCHID_NOT_MATCH"
    # field rules (spec 16.5) before business rules (fee_type, sub_openid)
    rules = await post(_signed({**order, "fee_type": "JPY", "time_expire": "2024-01-01"}))
    assert (rules["err_code"], rules["err_code_des"].split("参数错误")[0]) == ("PARAM_ERROR", "time_expire")
    # every signed answer (result_code=FAIL included) is signed with the request's algorithm
    hmac = await post(_signed({**order, "sub_appid": "wx2234567890abcdef"}, sign_type=HMAC_SHA256))
    assert hmac["err_code"] == "APPID_MCHID_NOT_MATCH"
    verify(hmac, KEY, HMAC_SHA256)
    assert "sign" not in unknown  # return_code=FAIL: never signed
    verify(lack, KEY, "MD5")  # result_code=FAIL: signed


async def test_sub_appid_of_another_sub_merchant_is_refused_on_every_endpoint_that_names_one(sandbox: Sandbox) -> None:
    foreign = "wx2234567890abcdef"
    for path, fields in [
        ("/pay/orderquery", {"out_trade_no": "Q1"}),
        ("/pay/closeorder", {"out_trade_no": "Q1"}),
        ("/pay/refundquery", {"out_trade_no": "Q1"}),
        ("/secapi/pay/refund", {"out_trade_no": "Q1", "out_refund_no": "R1", "total_fee": 1, "refund_fee": 1}),
    ]:
        answer = await sandbox.call(path, {"sub_mch_id": HKD_SUB, "sub_appid": foreign, **fields})
        assert answer["err_code"] == "APPID_MCHID_NOT_MATCH", path
        verify(answer, KEY, "MD5")
