"""``minipay sign`` and ``minipay verify`` through typer's CliRunner: vectors, explanations, secrecy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minipay.cli import app
from minipay.protocol import build_refund_notification, decode_xml, encode_xml
from tests.protocol import vectors as v

runner = CliRunner()


def _pairs(fields: dict[str, str]) -> list[str]:
    return [f"{name}={value}" for name, value in fields.items()]


def test_sign_reproduces_the_official_md5_vector() -> None:
    result = runner.invoke(app, ["sign", *_pairs(v.OFFICIAL_FIELDS), "--key", v.OFFICIAL_KEY])
    assert result.exit_code == 0, result.output
    assert f"sign:           {v.OFFICIAL_MD5}" in result.output
    assert f"string-to-sign: {v.OFFICIAL_STRING_A}&key=<redacted>" in result.output
    assert v.OFFICIAL_KEY not in result.output


def test_sign_reproduces_the_official_hmac_vector() -> None:
    args = ["sign", *_pairs(v.OFFICIAL_FIELDS), "--key", v.OFFICIAL_KEY, "--sign-type", "HMAC-SHA256"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert v.OFFICIAL_HMAC in result.output
    assert "algorithm:      HMAC-SHA256" in result.output


def test_sign_reproduces_the_official_pay_sign_with_the_key_from_the_environment() -> None:
    result = runner.invoke(
        app, ["sign", *_pairs(v.PAYSIGN_FIELDS), "--key-env", "WX_KEY"], env={"WX_KEY": v.PAYSIGN_KEY}
    )
    assert result.exit_code == 0, result.output
    assert v.PAYSIGN in result.output
    assert "package=prepay_id=wx2017033010242291fcfe0db70013231072" in result.output  # '=' inside a value
    assert v.PAYSIGN_KEY not in result.output


def test_sign_prompts_for_the_key_without_echoing_it() -> None:
    result = runner.invoke(app, ["sign", *_pairs(v.OFFICIAL_FIELDS)], input=v.OFFICIAL_KEY + "\n")
    assert result.exit_code == 0, result.output
    assert v.OFFICIAL_MD5 in result.output
    assert v.OFFICIAL_KEY not in result.output


def test_sign_takes_an_xml_file_and_reports_a_stale_sign(tmp_path: Path) -> None:
    body = tmp_path / "order.xml"
    body.write_bytes(encode_xml({**v.UNIFIED_ORDER_FIELDS, "sign": "0" * 32}))
    result = runner.invoke(app, ["sign", "--file", str(body), "--key", v.KEY])
    assert result.exit_code == 0, result.output
    assert v.UNIFIED_ORDER_MD5 in result.output
    assert "DIFFERS" in result.output


def test_sign_takes_a_json_file_and_prints_the_signed_xml(tmp_path: Path) -> None:
    fields = {**v.UNIFIED_ORDER_FIELDS, "sign_type": "HMAC-SHA256"}
    path = tmp_path / "order.json"
    path.write_text(json.dumps({**fields, "total_fee": 1000}))
    result = runner.invoke(app, ["sign", "--file", str(path), "--key", v.KEY, "--xml"])
    assert result.exit_code == 0, result.output
    assert v.UNIFIED_ORDER_HMAC in result.output
    xml_line = next(line for line in result.output.splitlines() if line.startswith("<xml>"))
    assert decode_xml(xml_line.encode())["sign"] == v.UNIFIED_ORDER_HMAC


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sign", "appid", "--key", v.KEY], "NAME=VALUE"),
        (["sign", "--key", v.KEY], "no fields"),
        (["sign", "a=1", "--key", "short"], "32 letters or digits"),
        (["sign", "a=1", "--key", v.KEY, "--key-env", "X"], "not both"),
        (["sign", "a=1", "--key-env", "MINIPAY_TEST_UNSET_VARIABLE"], "not set"),
        (["sign", "a=1", "--key", v.KEY, "--sign-type", "SHA1"], "MD5 or HMAC-SHA256"),
        (["sign", "--file", "/nonexistent/file.xml", "--key", v.KEY], "cannot read"),
    ],
)
def test_sign_usage_errors_exit_2_without_a_traceback(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_malformed_key_is_never_echoed() -> None:
    secret = "secret-value-that-is-not-a-key"
    result = runner.invoke(app, ["sign", "a=1", "--key", secret])
    assert result.exit_code == 2
    assert secret not in result.output


# --- verify -------------------------------------------------------------------------------------


def _write(tmp_path: Path, body: bytes) -> str:
    path = tmp_path / "body.xml"
    path.write_bytes(body)
    return str(path)


def test_verify_accepts_the_sample_notification(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", _write(tmp_path, v.NOTIFICATION_XML), "--key", v.KEY])
    assert result.exit_code == 0, result.output
    assert "signature OK (MD5)" in result.output
    assert v.KEY not in result.output


def test_verify_accepts_the_unified_order_response(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", _write(tmp_path, v.UNIFIED_ORDER_RESPONSE_XML), "--key", v.KEY])
    assert result.exit_code == 0, result.output


def test_verify_explains_a_tampered_notification(tmp_path: Path) -> None:
    forged = v.NOTIFICATION_XML.replace(b"<total_fee>1000</total_fee>", b"<total_fee>1</total_fee>")
    result = runner.invoke(app, ["verify", _write(tmp_path, forged), "--key", v.KEY])
    assert result.exit_code == 1
    assert "MISMATCH" in result.output
    assert "algorithm:      MD5" in result.output
    assert "total_fee=1&" in result.output
    assert "&key=<redacted>" in result.output
    assert f"received:       {v.NOTIFICATION_MD5}" in result.output
    assert "expected:" in result.output
    assert v.KEY not in result.output


def test_verify_says_when_the_sender_used_the_other_algorithm(tmp_path: Path) -> None:
    body = encode_xml({**v.OFFICIAL_FIELDS, "sign_type": "MD5", "sign": v.OFFICIAL_HMAC})
    result = runner.invoke(app, ["verify", _write(tmp_path, body), "--key", v.OFFICIAL_KEY])
    assert result.exit_code == 1
    assert "sign_type=MD5" in result.output


def test_verify_with_a_wrong_key_points_at_the_key(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", _write(tmp_path, v.NOTIFICATION_XML), "--key", v.OFFICIAL_KEY])
    assert result.exit_code == 1
    assert "check the API key" in result.output


def test_verify_refuses_md5_when_hmac_is_pinned(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", _write(tmp_path, v.NOTIFICATION_XML), "--key", v.KEY, "--pin-hmac"])
    assert result.exit_code == 1
    assert "refused" in result.output


def test_verify_explains_an_unsigned_failure_answer(tmp_path: Path) -> None:
    body = b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[sign error]]></return_msg></xml>"
    result = runner.invoke(app, ["verify", _write(tmp_path, body), "--key", v.KEY])
    assert result.exit_code == 1
    assert "return_code=FAIL" in result.output


def test_verify_decrypts_a_refund_notification(tmp_path: Path) -> None:
    outer = {"return_code": "SUCCESS", "mch_id": v.MCH_ID, "nonce_str": "n"}
    body = build_refund_notification(outer, {"refund_status": "SUCCESS", "out_refund_no": "R1"}, v.KEY)
    result = runner.invoke(app, ["verify", _write(tmp_path, body), "--key", v.KEY])
    assert result.exit_code == 0, result.output
    assert "out_refund_no = R1" in result.output
    wrong = runner.invoke(app, ["verify", _write(tmp_path, body), "--key", v.OFFICIAL_KEY])
    assert wrong.exit_code == 1


def test_verify_reads_standard_input() -> None:
    result = runner.invoke(app, ["verify", "-", "--key", v.KEY], input=v.NOTIFICATION_XML)
    assert result.exit_code == 0, result.output


def test_verify_refuses_a_hostile_body_with_status_2(tmp_path: Path) -> None:
    body = b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>'
    result = runner.invoke(app, ["verify", _write(tmp_path, body), "--key", v.KEY])
    assert result.exit_code == 2
    assert "DOCTYPE" in result.output


def test_sign_warns_when_the_fields_name_another_algorithm() -> None:
    fields = {**v.OFFICIAL_FIELDS, "sign_type": "MD5"}
    result = runner.invoke(app, ["sign", *_pairs(fields), "--key", v.OFFICIAL_KEY, "--sign-type", "HMAC-SHA256"])
    assert result.exit_code == 0, result.output
    assert "algorithm:      HMAC-SHA256" in result.output
    assert "warning:        the fields say sign_type=MD5, but this signature is HMAC-SHA256" in result.output


def test_sign_follows_the_fields_sign_type_without_a_warning() -> None:
    fields = {**v.OFFICIAL_FIELDS, "sign_type": "HMAC-SHA256"}
    result = runner.invoke(app, ["sign", *_pairs(fields), "--key", v.OFFICIAL_KEY])
    assert result.exit_code == 0, result.output
    assert "algorithm:      HMAC-SHA256" in result.output
    assert "warning" not in result.output


def test_sign_refuses_an_unknown_sign_type_field_naming_the_field() -> None:
    fields = {**v.OFFICIAL_FIELDS, "sign_type": "HMAC_SHA256"}
    result = runner.invoke(app, ["sign", *_pairs(fields), "--key", v.OFFICIAL_KEY])
    assert result.exit_code == 2
    assert "the fields say sign_type='HMAC_SHA256'" in result.output


def test_version_prints_the_installed_package_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"minipay {version('minipay')}"
