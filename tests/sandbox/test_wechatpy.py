"""A third-party v2 client works unchanged except for its base URL: wechatpy 1.8.18 (uses ``requests``).

Institution mode with ``sub_openid``: unified order, pay params, order query, close, refund,
refund query; the payment and refund notifications are checked with wechatpy's own code.
The sandbox runs on a real loopback socket (wechatpy cannot take an ASGI transport).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import httpx2
import pytest
from wechatpy.exceptions import WeChatPayException
from wechatpy.pay import WeChatPay

from minipay.sandbox import TLSMaterial, create_app, generate_tls_material, running
from tests.profiles import LENIENT, STRICT
from tests.sandbox.conftest import APPID, HKD_APP, HKD_SUB, KEY, MCH_ID, Receiver

#: base URL, merchant URL, the merchant's receiver, the sandbox's TLS files (strict) or None.
World = tuple[str, str, Receiver, TLSMaterial | None]


@pytest.fixture(scope="module", params=["lenient", "strict"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The lenient sandbox over plain HTTP, and the strict one over HTTPS with mutual TLS."""
    receiver = Receiver()
    material = None
    if request.param == "strict":
        material = generate_tls_material(tmp_path_factory.mktemp("tls"), mch_id=MCH_ID)
    app = create_app(STRICT if material is not None else LENIENT, seed=11)
    with running(receiver.app()) as merchant, running(app, tls=material) as sandbox:
        yield sandbox.base_url, merchant.base_url, receiver, material


def wechatpy_client(base_url: str, material: TLSMaterial | None = None) -> WeChatPay:
    certs = {"mch_cert": str(material.client_cert), "mch_key": str(material.client_key)} if material else {}
    client = WeChatPay(
        appid=APPID, api_key=KEY, mch_id=MCH_ID, sub_mch_id=HKD_SUB, sub_appid=HKD_APP, timeout=10, **certs
    )
    client.API_BASE_URL = base_url + "/"  # the only change (and, for HTTPS, trusting the sandbox's CA)
    if material is not None:
        client._http.verify = str(material.ca_cert)
        client._http.trust_env = False
        client._http.trust_env = False  # else requests prefers $REQUESTS_CA_BUNDLE to the session's CA
    return client


def control_client(base_url: str, material: TLSMaterial | None) -> httpx2.Client:
    verify = ssl.create_default_context(cafile=str(material.ca_cert)) if material else True
    return httpx2.Client(base_url=base_url, verify=verify)


def wait_for(receiver: Receiver, count: int) -> bytes:
    """The ``count``-th body the merchant received (strict: notifications follow the cashier's answer)."""
    deadline = time.monotonic() + 10
    while len(receiver.received) < count:
        assert time.monotonic() < deadline, "no notification"
        time.sleep(0.05)
    return receiver.received[count - 1]


def test_wechatpy_runs_the_whole_mini_program_flow(world: World) -> None:
    base_url, merchant_url, receiver, material = world
    client = wechatpy_client(base_url, material)
    received = len(receiver.received)
    with control_client(base_url, material) as control:
        openid = control.post("/sandbox/login", json={"appid": HKD_APP, "user": "wechatpy"}).json()["openid"]
        order = client.order.create(
            trade_type="JSAPI",
            body="wechatpy coffee",
            total_fee=1500,
            fee_type="HKD",
            notify_url=f"{merchant_url}/wxpay/notify",
            client_ip="203.0.113.10",
            out_trade_no="WXPY0001",
            sub_user_id=openid,
            attach="via=wechatpy",
        )
        assert order["result_code"] == "SUCCESS"
        assert client.check_signature(order)
        params = client.jsapi.get_jsapi_params(order["prepay_id"])
        assert params["appId"] == HKD_APP
        wx_request_payment = {k: params[k] for k in ("timeStamp", "nonceStr", "package", "signType", "paySign")}
        assert control.post("/sandbox/pay", json=wx_request_payment).json()["errMsg"] == "requestPayment:ok"

        notification = client.parse_payment_result(wait_for(receiver, received + 1))  # wechatpy's signature check
        assert notification["out_trade_no"] == "WXPY0001"
        assert notification["total_fee"] == 1500
        assert notification["cash_fee"] == 1380
        assert notification["sub_openid"] == openid

        queried = client.order.query(out_trade_no="WXPY0001")
        assert queried["trade_state"] == "SUCCESS"
        assert queried["transaction_id"] == notification["transaction_id"]
        assert client.check_signature(queried)

        refund = client.refund.apply(
            total_fee=1500,
            refund_fee=500,
            out_refund_no="WXPYR0001",
            out_trade_no="WXPY0001",
            fee_type="HKD",
            notify_url=f"{merchant_url}/wxpay/refund",
        )
        assert refund["result_code"] == "SUCCESS"
        assert client.check_signature(refund)
        assert client.refund.query(out_refund_no="WXPYR0001")["refund_status_0"] == "PROCESSING"
        control.post("/sandbox/clock", json={"advance": 60})
        status = client.refund.query(out_trade_no="WXPY0001")
        assert status["refund_status_0"] == "SUCCESS"
        assert client.check_signature(status)
        refund_note = client.parse_refund_notify_result(wait_for(receiver, received + 2))  # decrypts req_info
        assert refund_note["refund_status"] == "SUCCESS"
        assert refund_note["out_refund_no"] == "WXPYR0001"
        assert refund_note["refund_fee"] == 500

        with pytest.raises(WeChatPayException) as paid:
            client.order.close("WXPY0001")
        assert paid.value.errcode == "ORDERPAID"


def test_wechatpy_closes_an_unpaid_order_after_five_minutes(world: World) -> None:
    base_url, merchant_url, _, material = world
    client = wechatpy_client(base_url, material)
    with control_client(base_url, material) as control:
        openid = control.post("/sandbox/login", json={"appid": HKD_APP, "user": "closer"}).json()["openid"]
        client.order.create(
            trade_type="JSAPI",
            body="to be closed",
            total_fee=100,
            fee_type="HKD",
            notify_url=f"{merchant_url}/wxpay/notify",
            client_ip="203.0.113.10",
            out_trade_no="WXPY0002",
            sub_user_id=openid,
        )
        with pytest.raises(WeChatPayException) as early:
            client.order.close("WXPY0002")
        assert early.value.errcode == "TRADE_STATE_ERROR"
        control.post("/sandbox/clock", json={"advance": 300})
        assert client.order.close("WXPY0002")["result_code"] == "SUCCESS"
        assert client.order.query(out_trade_no="WXPY0002")["trade_state"] == "CLOSED"


def test_wechatpy_sees_a_bad_key_as_a_communication_failure(world: World) -> None:
    base_url, _, _, material = world
    client = WeChatPay(appid=APPID, api_key="Z" * 32, mch_id=MCH_ID, sub_mch_id=HKD_SUB, sub_appid=HKD_APP)
    client.API_BASE_URL = base_url + "/"
    if material is not None:
        client._http.verify = str(material.ca_cert)
        client._http.trust_env = False
    with pytest.raises(WeChatPayException) as info:
        client.order.query(out_trade_no="ANY")
    assert info.value.return_code == "FAIL"
