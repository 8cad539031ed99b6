"""A refund over a real loopback TLS server that demands the institution's client certificate."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn

from minipay.client import Client, ClientCertificate, CommunicationError, ReadTimeoutError, TransportError
from minipay.client._certs import build_ssl_context
from minipay.sandbox import create_app
from tests.client.pki import Issued, issue, make_ca
from tests.profiles import LENIENT

NOTIFY_URL = "https://merchant.example.com/wxpay/notify"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def tls_sandbox(tmp_path: Path, ca: Issued) -> Iterator[str]:
    """The sandbox behind uvicorn with ``ssl_cert_reqs=CERT_REQUIRED``, in a thread on a free port."""
    server_cert = issue(ca, "127.0.0.1", server=True)
    (tmp_path / "server.pem").write_bytes(server_cert.cert_pem)
    (tmp_path / "server.key").write_bytes(server_cert.key_pem())
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    port = _free_port()
    config = uvicorn.Config(
        create_app(LENIENT, seed=3),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(tmp_path / "server.pem"),
        ssl_keyfile=str(tmp_path / "server.key"),
        ssl_ca_certs=str(tmp_path / "ca.pem"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            thread.join(0.01)
        assert server.started, "uvicorn did not start"
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def mutual_tls_options(
    base_url: str, inst: dict[str, Any], sub: dict[str, Any], cert: ClientCertificate, ca_file: Path
) -> dict[str, Any]:
    """Client settings for the sandbox's institution ``inst`` and sub-merchant ``sub`` (from
    ``/sandbox/merchants``) behind :func:`tls_sandbox`: its certificate, trusting the test CA."""
    return {
        "appid": inst["appid"],
        "mch_id": inst["mch_id"],
        "api_key": inst["api_key"],
        "sub_mch_id": sub["sub_mch_id"],
        "sub_appid": sub["sub_appid"],
        "base_url": base_url,
        "login_base_url": base_url,
        "cert": cert,
        "verify": str(ca_file),
    }


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


def test_a_refund_goes_through_mutual_tls_with_a_p12_certificate(tmp_path: Path, ca: Issued) -> None:
    with tls_sandbox(tmp_path, ca) as base_url:
        institution_cert = issue(ca, "1900000109", server=False)
        cert = ClientCertificate.from_p12(institution_cert.p12(b"1900000109"))  # password = mch_id
        control_tls = build_ssl_context(str(tmp_path / "ca.pem"), cert, mch_id="1900000109")
        with httpx2.Client(base_url=base_url, verify=control_tls) as control:
            world = control.get("/sandbox/merchants").json()
            inst = world["institutions"][0]
            sub = inst["sub_merchants"][0]
            with Client(**mutual_tls_options(base_url, inst, sub, cert, tmp_path / "ca.pem")) as client:
                code = control.post("/sandbox/login", json={"appid": sub["sub_appid"], "user": "tls"}).json()["code"]
                session = client.code_to_session(sub["sub_appid"], sub["app_secret"], code)
                order = client.orders.create(
                    out_trade_no="TLS0001",
                    total_fee=1000,
                    fee_type="HKD",
                    body="Coffee",
                    notify_url=NOTIFY_URL,
                    spbill_create_ip="203.0.113.10",
                    sub_openid=session.openid,
                )
                paid = control.post("/sandbox/pay", json=dict(client.pay_params(order.prepay_id))).json()
                assert paid["errMsg"] == "requestPayment:ok"
                refund = client.refunds.create(
                    out_refund_no="TLSR0001",
                    out_trade_no="TLS0001",
                    total_fee=1000,
                    refund_fee=300,
                    refund_fee_type="HKD",
                )
                assert refund.refund_fee == 300
                assert client.refunds.query(out_refund_no="TLSR0001").find("TLSR0001") is not None


def test_without_the_client_certificate_the_server_refuses_the_connection(tmp_path: Path, ca: Issued) -> None:
    with (
        tls_sandbox(tmp_path, ca) as base_url,
        Client(
            appid="wx8888888888888888",
            mch_id="1900000109",
            api_key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
            sub_mch_id="1900000110",
            base_url=base_url,
            verify=str(tmp_path / "ca.pem"),
            max_retries=0,
        ) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.refunds.create(
            out_refund_no="TLSR0002", out_trade_no="TLS0002", total_fee=1000, refund_fee=300, refund_fee_type="HKD"
        )
    # TLS 1.3 reports the refusal after the handshake: whether it surfaces as a connect or a read
    # failure, the SDK never pretends it knows the outcome of a sent refund.
    assert isinstance(caught.value, ReadTimeoutError) or caught.value.retryable


def test_a_refund_to_wechat_without_a_certificate_is_refused_before_sending() -> None:
    from minipay.client import ConfigurationError

    with (
        Client(appid="wx8888888888888888", mch_id="1900000109", api_key="a" * 32, sub_mch_id="1900000110") as client,
        pytest.raises(ConfigurationError, match="certificate"),
    ):
        client.refunds.create(
            out_refund_no="R1", out_trade_no="O1", total_fee=1000, refund_fee=300, refund_fee_type="HKD"
        )


# --- the sandbox's own TLS mode (minipay sandbox --tls): the app checks the certificate's CN -------


@pytest.fixture
def sandbox_tls(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    from minipay.sandbox import SandboxConfig, generate_tls_material, running

    material = generate_tls_material(tmp_path, mch_id="1900000109")
    config = SandboxConfig.default()
    config = config.model_copy(update={"tls": config.tls.model_copy(update={"require_client_cert": True})})
    with running(create_app(config, seed=5), tls=material) as server:
        yield server.base_url, material


def _world_client(base_url: str, material: Any, **options: Any) -> Client:
    return Client(
        appid="wx8888888888888888",
        mch_id="1900000109",
        api_key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
        sub_mch_id="1900000110",
        sub_appid="wx1234567890abcdef",
        base_url=base_url,
        login_base_url=base_url,
        verify=str(material.ca_cert),
        **options,
    )


def _pay(client: Client, control: httpx2.Client, out_trade_no: str) -> None:
    code = control.post("/sandbox/login", json={"appid": "wx1234567890abcdef", "user": "tls"}).json()["code"]
    session = client.code_to_session("wx1234567890abcdef", "5f2c0b7a9d3e4f6a8b1c2d3e4f5a6b7c", code)
    order = client.orders.create(
        out_trade_no=out_trade_no,
        total_fee=1000,
        fee_type="HKD",
        body="Coffee",
        notify_url=NOTIFY_URL,
        spbill_create_ip="203.0.113.10",
        sub_openid=session.openid,
    )
    assert control.post("/sandbox/pay", json=dict(client.pay_params(order.prepay_id))).json()["errMsg"].endswith("ok")


def test_the_sandbox_tls_mode_accepts_the_institution_certificate_from_pem_files(sandbox_tls: tuple[str, Any]) -> None:
    base_url, material = sandbox_tls
    cert = ClientCertificate.from_pem(material.client_cert, material.client_key)
    with (
        httpx2.Client(base_url=base_url, verify=build_ssl_context(str(material.ca_cert))) as control,
        _world_client(base_url, material, cert=cert) as client,
    ):
        _pay(client, control, "TLSPEM01")
        refund = client.refunds.create(
            out_refund_no="TLSPEMR1", out_trade_no="TLSPEM01", total_fee=1000, refund_fee=1000, refund_fee_type="HKD"
        )
        assert refund.refund_fee == 1000


@pytest.mark.anyio
async def test_the_async_client_refunds_over_the_sandbox_tls_mode_with_a_p12_path(sandbox_tls: tuple[str, Any]) -> None:
    from minipay.client import AsyncClient

    base_url, material = sandbox_tls
    with (
        httpx2.Client(base_url=base_url, verify=build_ssl_context(str(material.ca_cert))) as control,
        _world_client(base_url, material) as setup,
    ):
        _pay(setup, control, "TLSP1201")
    async with AsyncClient(
        appid="wx8888888888888888",
        mch_id="1900000109",
        api_key="a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6",
        sub_mch_id="1900000110",
        base_url=base_url,
        verify=str(material.ca_cert),
        cert=ClientCertificate.from_p12(material.client_p12),  # password defaults to the mch_id
    ) as client:
        refund = await client.refunds.create(
            out_refund_no="TLSP12R1", out_trade_no="TLSP1201", total_fee=1000, refund_fee=100, refund_fee_type="HKD"
        )
        assert refund.out_refund_no == "TLSP12R1"


def test_the_sandbox_tls_mode_refuses_a_refund_without_a_certificate(sandbox_tls: tuple[str, Any]) -> None:
    base_url, material = sandbox_tls
    with (
        httpx2.Client(base_url=base_url, verify=build_ssl_context(str(material.ca_cert))) as control,
        _world_client(base_url, material) as client,
    ):
        _pay(client, control, "TLSNOC01")
        with pytest.raises(CommunicationError) as caught:
            client.refunds.create(
                out_refund_no="TLSNOCR1", out_trade_no="TLSNOC01", total_fee=1000, refund_fee=100, refund_fee_type="HKD"
            )
    assert "证书" in caught.value.return_msg
