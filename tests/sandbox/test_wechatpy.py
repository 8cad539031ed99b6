"""A third-party v2 client works unchanged except for its base URL: wechatpy 1.8.18 (uses ``requests``).

Institution mode with ``sub_openid``: unified order, pay params, order query, close, refund,
refund query; the payment and refund notifications are checked with wechatpy's own code.
The sandbox runs on a real loopback socket (wechatpy cannot take an ASGI transport).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from wechatpy.exceptions import WeChatPayException
from wechatpy.pay import WeChatPay

from minipay.sandbox import create_app, running
from tests.sandbox.conftest import APPID, HKD_APP, HKD_SUB, KEY, MCH_ID, Receiver


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[str, str, Receiver]]:
    receiver = Receiver()
    with running(receiver.app()) as merchant, running(create_app(seed=11)) as sandbox:
        yield sandbox.base_url, merchant.base_url, receiver


def wechatpy_client(base_url: str) -> WeChatPay:
    client = WeChatPay(appid=APPID, api_key=KEY, mch_id=MCH_ID, sub_mch_id=HKD_SUB, sub_appid=HKD_APP, timeout=10)
    client.API_BASE_URL = base_url + "/"  # the only change
    return client


def test_wechatpy_runs_the_whole_mini_program_flow(world: tuple[str, str, Receiver]) -> None:
    base_url, merchant_url, receiver = world
    client = wechatpy_client(base_url)
    with httpx2.Client(base_url=base_url) as control:
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

        notification = client.parse_payment_result(receiver.received[-1])  # wechatpy's own signature check
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
        refund_note = client.parse_refund_notify_result(receiver.received[-1])  # wechatpy decrypts req_info
        assert refund_note["refund_status"] == "SUCCESS"
        assert refund_note["out_refund_no"] == "WXPYR0001"
        assert refund_note["refund_fee"] == 500

        with pytest.raises(WeChatPayException) as paid:
            client.order.close("WXPY0001")
        assert paid.value.errcode == "ORDERPAID"


def test_wechatpy_closes_an_unpaid_order_after_five_minutes(world: tuple[str, str, Receiver]) -> None:
    base_url, merchant_url, _ = world
    client = wechatpy_client(base_url)
    with httpx2.Client(base_url=base_url) as control:
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


def test_wechatpy_sees_a_bad_key_as_a_communication_failure(world: tuple[str, str, Receiver]) -> None:
    base_url, _, _ = world
    client = WeChatPay(appid=APPID, api_key="Z" * 32, mch_id=MCH_ID, sub_mch_id=HKD_SUB, sub_appid=HKD_APP)
    client.API_BASE_URL = base_url + "/"
    with pytest.raises(WeChatPayException) as info:
        client.order.query(out_trade_no="ANY")
    assert info.value.return_code == "FAIL"
