"""Once over real sockets: the sandbox and a merchant receiver on loopback, plain HTTP and TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx2
import pytest

from minipay.protocol import build_pay_params, decode_xml, encode_xml, sign, to_unix, verify
from minipay.sandbox import create_app
from minipay.sandbox._config import SandboxConfig
from minipay.sandbox._server import running
from minipay.sandbox._tls import generate_tls_material
from tests.profiles import LENIENT
from tests.sandbox.conftest import APPID, HKD_APP, HKD_SUB, KEY, MCH_ID, START, Receiver


def signed(fields: dict[str, str | int]) -> bytes:
    body: dict[str, str | int] = {"appid": APPID, "mch_id": MCH_ID, "nonce_str": "loopback1", **fields}
    body["sign"] = sign(body, KEY)
    return encode_xml(body)


def test_full_flow_over_loopback_with_a_real_notification() -> None:
    receiver = Receiver()
    sandbox_app = create_app(LENIENT, seed=3, start=START)
    with (
        running(receiver.app()) as merchant,
        running(sandbox_app) as sandbox,
        httpx2.Client(base_url=sandbox.base_url) as http,
    ):
        openid = http.post("/sandbox/login", json={"appid": HKD_APP, "user": "carol"}).json()["openid"]
        order = {
            "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "Loopback", "out_trade_no": "LOOP1", "fee_type": "HKD",
            "total_fee": 500, "spbill_create_ip": "127.0.0.1", "notify_url": f"{merchant.base_url}/notify",
            "trade_type": "JSAPI", "sub_openid": openid,
        }  # fmt: skip
        answer = decode_xml(http.post("/pay/unifiedorder", content=signed(order)).content)
        verify(answer, KEY, "MD5")
        params = build_pay_params(app_id=HKD_APP, prepay_id=answer["prepay_id"], key=KEY, timestamp=to_unix(START))
        assert http.post("/sandbox/pay", json=dict(params)).json()["errMsg"] == "requestPayment:ok"
        [note] = http.get("/sandbox/notifications", params={"out_trade_no": "LOOP1"}).json()["notifications"]
        assert note["state"] == "delivered"
        assert note["attempts"][0]["status"] == 200
        verify(decode_xml(receiver.received[0]), KEY, "MD5")
        query = decode_xml(
            http.post("/pay/orderquery", content=signed({"sub_mch_id": HKD_SUB, "out_trade_no": "LOOP1"})).content
        )
        assert query["trade_state"] == "SUCCESS"
        assert "Minipay sandbox" in http.get("/sandbox/").text


def test_drop_fault_closes_the_tcp_connection_without_an_answer() -> None:
    sandbox_app = create_app(LENIENT, seed=3, start=START)
    with running(sandbox_app) as sandbox, httpx2.Client(base_url=sandbox.base_url) as http:
        http.post("/sandbox/faults", json={"endpoint": "orderquery", "fault": "lost_response"})
        with pytest.raises(httpx2.RemoteProtocolError):
            http.post("/pay/orderquery", content=signed({"sub_mch_id": HKD_SUB, "out_trade_no": "X"}))
        ok = http.post("/pay/orderquery", content=signed({"sub_mch_id": HKD_SUB, "out_trade_no": "X"}))
        assert decode_xml(ok.content)["err_code"] == "ORDERNOTEXIST"


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


def test_tls_mode_demands_the_institution_client_certificate_on_secapi(tls_dir: Path) -> None:
    material = generate_tls_material(tls_dir, mch_id=MCH_ID)
    assert material.client_p12.exists()
    assert material.client_p12_password == MCH_ID
    config = SandboxConfig.from_dict({"tls": {"require_client_cert": True}})
    app = create_app(config, seed=3, start=START)
    refund = signed({"sub_mch_id": HKD_SUB, "out_trade_no": "X", "out_refund_no": "R", "total_fee": 1, "refund_fee": 1})
    anonymous = ssl.create_default_context(cafile=str(material.ca_cert))
    with_cert = ssl.create_default_context(cafile=str(material.ca_cert))
    with_cert.load_cert_chain(str(material.client_cert), str(material.client_key))
    wrong = generate_tls_material(tls_dir / "other", mch_id=MCH_ID)  # same mch_id, another CA
    wrong_cert = ssl.create_default_context(cafile=str(material.ca_cert))
    wrong_cert.load_cert_chain(str(wrong.client_cert), str(wrong.client_key))
    with running(app, tls=material) as sandbox:
        assert sandbox.base_url.startswith("https://127.0.0.1:")
        with httpx2.Client(base_url=sandbox.base_url, verify=anonymous) as http:
            refused = decode_xml(http.post("/secapi/pay/refund", content=refund).content)
            assert refused["return_code"] == "FAIL"
            assert "certificate" in refused["return_msg"]
            # Other paths need no certificate.
            query = http.post("/pay/orderquery", content=signed({"sub_mch_id": HKD_SUB, "out_trade_no": "X"}))
            assert decode_xml(query.content)["err_code"] == "ORDERNOTEXIST"
        with httpx2.Client(base_url=sandbox.base_url, verify=with_cert) as http:
            accepted = decode_xml(http.post("/secapi/pay/refund", content=refund).content)
            assert accepted["return_code"] == "SUCCESS"
            assert accepted["err_code"] == "ORDERNOTEXIST"
        # A certificate from another CA fails the TLS handshake (TLS 1.3: seen at the first read).
        failures = (httpx2.ConnectError, httpx2.RemoteProtocolError, httpx2.ReadError)
        with httpx2.Client(base_url=sandbox.base_url, verify=wrong_cert) as http, pytest.raises(failures):
            http.post("/secapi/pay/refund", content=refund)


@pytest.mark.anyio
async def test_a_client_certificate_of_another_mch_id_is_refused(tls_dir: Path) -> None:
    other = generate_tls_material(tls_dir / "cn", mch_id="1900000999")
    app = create_app(SandboxConfig.from_dict({"tls": {"require_client_cert": True}}), seed=3, start=START)
    pem = other.client_cert.read_text()

    async def with_peer_cert(scope: dict[str, object], receive: object, send: object) -> None:
        scope["extensions"] = {"tls": {"client_cert_chain": [pem]}}
        await app(scope, receive, send)  # type: ignore[arg-type]

    refund = signed({"sub_mch_id": HKD_SUB, "out_trade_no": "X", "out_refund_no": "R", "total_fee": 1, "refund_fee": 1})
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(with_peer_cert), base_url="http://sandbox") as http:
        answer = decode_xml((await http.post("/secapi/pay/refund", content=refund)).content)
    assert answer["return_code"] == "FAIL"
    assert "does not belong" in answer["return_msg"]


@pytest.mark.anyio
async def test_without_a_client_certificate_secapi_fails_before_the_signature_is_read() -> None:
    # WeChat checks the certificate at its gateway: a missing one is the answer, whatever the body.
    app = create_app(SandboxConfig.from_dict({"tls": {"require_client_cert": True}}), seed=3, start=START)
    forged = signed({"sub_mch_id": HKD_SUB, "out_trade_no": "X", "out_refund_no": "R", "total_fee": 1,
                     "refund_fee": 1}).replace(b"<total_fee>1</total_fee>", b"<total_fee>2</total_fee>")  # fmt: skip
    assert b"<total_fee>2</total_fee>" in forged
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://sandbox") as http:
        for body in (forged, b"<xml><mch_id>1999999999</mch_id></xml>"):
            response = await http.post("/secapi/pay/refund", content=body)
            assert response.status_code == 200
            answer = decode_xml(response.content)
            assert answer["return_code"] == "FAIL"
            assert answer["return_msg"].startswith("证书错误"), answer
            assert "sign" not in answer


def test_the_p12_opens_with_the_mch_id_as_password(tls_dir: Path) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    material = generate_tls_material(tls_dir / "p12", mch_id=MCH_ID)
    key, cert, cas = pkcs12.load_key_and_certificates(material.client_p12.read_bytes(), MCH_ID.encode())
    assert key is not None
    assert cert is not None
    assert MCH_ID in cert.subject.rfc4514_string()
    assert len(cas) == 1
