"""Unified order, query and close: institution rules, re-entry, expiry, state machine (spec 5, 8, 9, 16)."""

from __future__ import annotations

import pytest

from minipay.protocol import build_pay_params, decode_xml, format_wx_time, verify
from minipay.sandbox import SandboxConfig
from tests.sandbox.conftest import HKD_APP, HKD_SUB, JPY_APP, JPY_SUB, KEY, START, MakeSandbox, Sandbox

pytestmark = pytest.mark.anyio


async def query(sandbox: Sandbox, out_trade_no: str = "ORDER0001", sub: str = HKD_SUB) -> dict[str, str]:
    return await sandbox.call("/pay/orderquery", {"sub_mch_id": sub, "out_trade_no": out_trade_no})


async def close(sandbox: Sandbox, out_trade_no: str = "ORDER0001") -> dict[str, str]:
    return await sandbox.call("/pay/closeorder", {"sub_mch_id": HKD_SUB, "out_trade_no": out_trade_no})


async def test_unified_order_returns_a_signed_prepay_id_of_the_documented_shape(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    verify(answer, KEY, "MD5")
    assert answer["result_code"] == "SUCCESS"
    assert answer["trade_type"] == "JSAPI"
    assert answer["sub_mch_id"] == HKD_SUB
    assert answer["sub_appid"] == HKD_APP
    prepay = answer["prepay_id"]
    assert len(prepay) == 36
    assert prepay.startswith("wx20240101120000")


async def test_same_seed_gives_the_same_ids(make_sandbox: MakeSandbox) -> None:
    a, b = make_sandbox(seed=5), make_sandbox(seed=5)
    assert (await a.order())["prepay_id"] == (await b.order())["prepay_id"]
    c = make_sandbox(seed=6)
    assert (await c.order())["prepay_id"] != (await a.order("ORDER0002"))["prepay_id"]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"fee_type": "USD"}, "fee_type"),
        ({"fee_type": "hkd"}, "fee_type"),
        ({"total_fee": 0}, "total_fee"),
        ({"total_fee": "10.5"}, "total_fee"),
        ({"total_fee": "-1"}, "total_fee"),
        ({"body": "Coffee ☕️🎉"}, "body"),
        ({"body": "x" * 128}, "body"),
        ({"out_trade_no": "ORDER#1"}, "out_trade_no"),
        ({"out_trade_no": "X" * 33}, "out_trade_no"),
        ({"notify_url": "http://merchant.test/notify?x=1"}, "notify_url"),
        ({"notify_url": "ftp://merchant.test/notify"}, "notify_url"),
        ({"spbill_create_ip": "not-an-ip"}, "spbill_create_ip"),
        ({"trade_type": "NATIVE"}, "trade_type"),
        ({"version": "2.0"}, "version"),
        ({"time_expire": "2024-01-01"}, "time_expire"),
        ({"total_fee": "²"}, "total_fee"),  # str.isdigit() says yes, int() raises
        ({"total_fee": "١٠٠٠"}, "total_fee"),  # Arabic-Indic 1000: int() reads it, WeChat would not
        ({"total_fee": "+1000"}, "total_fee"),
    ],
)
async def test_field_rules_fail_with_param_error(
    sandbox: Sandbox, override: dict[str, str | int], fragment: str
) -> None:
    answer = await sandbox.order(**override)
    assert answer["result_code"] == "FAIL", answer
    assert answer["err_code"] == "PARAM_ERROR"
    assert fragment in answer["err_code_des"]


async def test_cny_and_the_settlement_currency_are_both_allowed(sandbox: Sandbox) -> None:
    assert (await sandbox.order("A1", fee_type="CNY"))["result_code"] == "SUCCESS"
    assert (await sandbox.order("A2", fee_type="HKD"))["result_code"] == "SUCCESS"


async def test_jpy_sub_merchant_refuses_hkd(sandbox: Sandbox) -> None:
    answer = await sandbox.order(sub_mch_id=JPY_SUB, sub_appid=JPY_APP, fee_type="HKD")
    assert answer["err_code"] == "PARAM_ERROR"


async def test_sub_appid_of_another_sub_merchant_is_appid_mchid_not_match(sandbox: Sandbox) -> None:
    answer = await sandbox.order(sub_appid=JPY_APP)
    assert answer["err_code"] == "APPID_MCHID_NOT_MATCH"


async def test_sub_openid_of_another_mini_program_fails(sandbox: Sandbox) -> None:
    other = (await sandbox.login(JPY_APP, "alice"))["openid"]
    answer = await sandbox.order(sub_openid=other)
    assert answer["err_code"] == "PARAM_ERROR"
    assert "sub_openid" in answer["err_code_des"]


async def test_mini_program_openid_sent_as_openid_fails(sandbox: Sandbox) -> None:
    openid = (await sandbox.login(HKD_APP, "alice"))["openid"]
    fields = {
        "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "x", "out_trade_no": "O1", "fee_type": "HKD",
        "total_fee": 100, "spbill_create_ip": "203.0.113.10", "notify_url": "http://m.test/n", "trade_type": "JSAPI",
        "openid": openid,
    }  # fmt: skip
    answer = await sandbox.call("/pay/unifiedorder", fields)
    assert answer["err_code"] == "PARAM_ERROR"
    assert "openid" in answer["err_code_des"]


async def test_jsapi_without_any_openid_is_lack_params(sandbox: Sandbox) -> None:
    fields = {
        "sub_mch_id": HKD_SUB, "sub_appid": HKD_APP, "body": "x", "out_trade_no": "O1", "fee_type": "HKD",
        "total_fee": 100, "spbill_create_ip": "203.0.113.10", "notify_url": "http://m.test/n", "trade_type": "JSAPI",
    }  # fmt: skip
    assert (await sandbox.call("/pay/unifiedorder", fields))["err_code"] == "LACK_PARAMS"


async def test_reentry_with_identical_parameters_returns_the_live_prepay_id(sandbox: Sandbox) -> None:
    first = await sandbox.order()
    await sandbox.advance(3600)
    again = await sandbox.order()
    assert again["prepay_id"] == first["prepay_id"]


async def test_reentry_after_two_hours_gets_a_new_prepay_id_and_the_old_one_is_dead(sandbox: Sandbox) -> None:
    first = await sandbox.order()
    await sandbox.advance(7200)
    assert (await sandbox.pay(first["prepay_id"]))["errMsg"].startswith("requestPayment:fail")
    again = await sandbox.order()
    assert again["prepay_id"] != first["prepay_id"]
    assert (await sandbox.pay(again["prepay_id"]))["errMsg"] == "requestPayment:ok"


async def test_reentry_with_changed_parameters_is_invalid_request_by_default(sandbox: Sandbox) -> None:
    await sandbox.order()
    answer = await sandbox.order(total_fee=2000)
    assert answer["err_code"] == "INVALID_REQUEST"


async def test_reentry_error_code_is_configurable(make_sandbox: MakeSandbox) -> None:
    config = SandboxConfig.from_dict({"rules": {"reentry_error": "OUT_TRADE_NO_USED"}})
    sandbox = make_sandbox(config)
    await sandbox.order()
    assert (await sandbox.order(body="Other"))["err_code"] == "OUT_TRADE_NO_USED"


async def test_reentry_of_a_paid_order_is_orderpaid(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    assert (await sandbox.order())["err_code"] == "ORDERPAID"
    assert (await sandbox.order(total_fee=5))["err_code"] == "ORDERPAID"


async def test_reentry_of_a_closed_order_is_orderclosed(sandbox: Sandbox) -> None:
    await sandbox.order()
    await sandbox.advance(300)
    assert (await close(sandbox))["result_code"] == "SUCCESS"
    assert (await sandbox.order())["err_code"] == "ORDERCLOSED"


async def test_time_expire_too_close_is_refused(sandbox: Sandbox) -> None:
    soon = format_wx_time(START.replace(second=30))
    assert (await sandbox.order(time_expire=soon))["err_code"] == "PARAM_ERROR"


async def test_expired_order_cannot_be_paid_and_stays_notpay_by_default(sandbox: Sandbox) -> None:
    expire = format_wx_time(START.replace(minute=10))
    answer = await sandbox.order(time_expire=expire)
    await sandbox.advance(601)
    paid = await sandbox.pay(answer["prepay_id"])
    assert paid["errMsg"] == "requestPayment:fail 订单已关闭"
    assert (await query(sandbox))["trade_state"] == "NOTPAY"
    assert (await sandbox.order(time_expire=expire))["err_code"] == "ORDERCLOSED"


async def test_expired_order_reads_closed_when_auto_close_is_on(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"auto_close_expired": True}}))
    await sandbox.order(time_expire=format_wx_time(START.replace(minute=10)))
    await sandbox.advance(601)
    assert (await query(sandbox))["trade_state"] == "CLOSED"


async def test_query_follows_notpay_success_refund(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    notpay = await query(sandbox)
    assert notpay["trade_state"] == "NOTPAY"
    assert "transaction_id" not in notpay
    await sandbox.pay(answer["prepay_id"])
    paid = await query(sandbox)
    verify(paid, KEY, "MD5")
    assert paid["trade_state"] == "SUCCESS"
    assert paid["total_fee"] == "1000"
    assert paid["fee_type"] == "HKD"
    assert paid["cash_fee"] == "920"
    assert paid["cash_fee_type"] == "CNY"
    assert paid["sub_openid"] == (await sandbox.login())["openid"]
    assert paid["openid"].startswith("o")
    assert paid["openid"] != paid["sub_openid"]
    assert len(paid["transaction_id"]) == 28
    assert paid["time_end"] == "20240101120000"
    by_id = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "transaction_id": paid["transaction_id"]})
    assert by_id["out_trade_no"] == "ORDER0001"
    refund = {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001", "out_refund_no": "R1", "total_fee": 1000,
              "refund_fee": 100}  # fmt: skip
    assert (await sandbox.call("/secapi/pay/refund", refund))["result_code"] == "SUCCESS"
    assert (await query(sandbox))["trade_state"] == "REFUND"


async def test_jpy_cash_fee_uses_the_zero_decimal_exponent(sandbox: Sandbox) -> None:
    answer = await sandbox.order("J1", sub_mch_id=JPY_SUB, sub_appid=JPY_APP, fee_type="JPY", total_fee=1000)
    assert (await sandbox.pay(answer["prepay_id"], app_id=JPY_APP))["errMsg"] == "requestPayment:ok"
    paid = await query(sandbox, "J1", JPY_SUB)
    assert paid["cash_fee"] == "4800"


async def test_cny_order_pays_its_own_amount(sandbox: Sandbox) -> None:
    await sandbox.paid_order("C1", fee_type="CNY", total_fee=777)
    assert (await query(sandbox, "C1"))["cash_fee"] == "777"


async def test_rates_by_date_override_the_default_rate(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rates_by_date": {"20240101": {"HKD": 90000000}}}))
    await sandbox.paid_order()
    assert (await query(sandbox))["cash_fee"] == "900"


async def test_query_of_unknown_or_foreign_order_is_ordernotexist(sandbox: Sandbox) -> None:
    await sandbox.order()
    assert (await query(sandbox, "NOPE"))["err_code"] == "ORDERNOTEXIST"
    assert (await query(sandbox, "ORDER0001", JPY_SUB))["err_code"] == "ORDERNOTEXIST"
    unknown_tx = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "transaction_id": "4" * 28})
    assert unknown_tx["err_code"] == "ORDERNOTEXIST"


async def test_query_without_any_order_id_is_lack_params(sandbox: Sandbox) -> None:
    assert (await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB}))["err_code"] == "LACK_PARAMS"


async def test_close_within_five_minutes_is_refused_then_allowed(sandbox: Sandbox) -> None:
    await sandbox.order()
    early = await close(sandbox)
    assert early["err_code"] == "TRADE_STATE_ERROR"
    await sandbox.advance(300)
    closed = await close(sandbox)
    verify(closed, KEY, "MD5")
    assert closed["result_code"] == "SUCCESS"
    assert (await query(sandbox))["trade_state"] == "CLOSED"
    assert (await close(sandbox))["err_code"] == "ORDERCLOSED"


async def test_close_rule_can_be_switched_off_and_its_code_changed(make_sandbox: MakeSandbox) -> None:
    off = make_sandbox(SandboxConfig.from_dict({"rules": {"close_min_age": 0}}))
    await off.order()
    assert (await close(off))["result_code"] == "SUCCESS"
    other = make_sandbox(SandboxConfig.from_dict({"rules": {"close_too_early_code": "SYSTEMERROR"}}))
    await other.order()
    assert (await close(other))["err_code"] == "SYSTEMERROR"


async def test_close_of_a_paid_order_is_orderpaid_and_of_an_unknown_one_ordernotexist(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await sandbox.advance(600)
    assert (await close(sandbox))["err_code"] == "ORDERPAID"
    assert (await close(sandbox, "NOPE"))["err_code"] == "ORDERNOTEXIST"


async def test_closed_order_cannot_be_paid(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    await sandbox.advance(300)
    await close(sandbox)
    assert (await sandbox.pay(answer["prepay_id"]))["errMsg"] == "requestPayment:fail 订单已关闭"


async def test_a_closed_order_paid_with_force_is_success_and_notified(sandbox: Sandbox) -> None:
    # Pay-after-expiry: the payer's password screen was open when the merchant closed the order.
    answer = await sandbox.order()
    await sandbox.advance(300)
    assert (await close(sandbox))["result_code"] == "SUCCESS"
    paid = await sandbox.pay(answer["prepay_id"], force=True)
    assert paid["errMsg"] == "requestPayment:ok"
    assert paid["paid_after_close"] is True
    found = await query(sandbox)
    verify(found, KEY, "MD5")
    assert (found["trade_state"], found["transaction_id"]) == ("SUCCESS", paid["transaction_id"])
    assert (found["total_fee"], found["cash_fee"]) == ("1000", "920")
    (notification,) = await sandbox.notifications("ORDER0001")
    assert (notification["kind"], notification["state"]) == ("payment", "delivered")
    (body,) = sandbox.receiver.received
    notified = decode_xml(body)
    verify(notified, KEY, "MD5")
    assert (notified["result_code"], notified["transaction_id"]) == ("SUCCESS", paid["transaction_id"])
    # The order is paid now: closing it again is ORDERPAID, re-entry too.
    assert (await close(sandbox))["err_code"] == "ORDERPAID"
    assert (await sandbox.order())["err_code"] == "ORDERPAID"
    (order,) = (await sandbox.http.get("/sandbox/state")).json()["orders"]
    assert (order["trade_state"], order["paid_after_close"]) == ("SUCCESS", True)
    assert order["closed_at"] is not None


async def test_an_expired_order_paid_with_force_is_success(sandbox: Sandbox) -> None:
    answer = await sandbox.order(time_expire=format_wx_time(START.replace(minute=10)))
    await sandbox.advance(601)
    assert (await query(sandbox))["trade_state"] == "NOTPAY"
    paid = await sandbox.pay(answer["prepay_id"], force=True)
    assert (paid["errMsg"], paid["paid_after_close"]) == ("requestPayment:ok", True)
    assert (await query(sandbox))["trade_state"] == "SUCCESS"
    assert len(await sandbox.notifications("ORDER0001")) == 1


async def test_force_on_a_live_order_is_an_ordinary_payment(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    paid = await sandbox.pay(answer["prepay_id"], force=True)
    assert paid["errMsg"] == "requestPayment:ok"
    assert "paid_after_close" not in paid
    (order,) = (await sandbox.http.get("/sandbox/state")).json()["orders"]
    assert order["paid_after_close"] is False


async def test_force_lifts_only_the_close_every_other_check_still_applies(sandbox: Sandbox) -> None:
    answer = await sandbox.order()
    await sandbox.advance(300)
    await close(sandbox)
    prepay = answer["prepay_id"]
    bad = build_pay_params(app_id=HKD_APP, prepay_id=prepay, key="Z" * 32)
    refused = (await sandbox.http.post("/sandbox/pay", json={**bad, "force": True})).json()
    assert refused["errMsg"] == "requestPayment:fail 支付验证签名失败"
    assert (await sandbox.pay(prepay, force=True, outcome="cancel"))["errMsg"] == "requestPayment:fail cancel"
    assert (await query(sandbox))["trade_state"] == "CLOSED"
    assert await sandbox.notifications() == []
    not_bool = await sandbox.http.post("/sandbox/pay", json={"package": f"prepay_id={prepay}", "force": "yes"})
    assert not_bool.status_code == 400
    assert (await sandbox.pay(prepay, force=True))["errMsg"] == "requestPayment:ok"
    assert (await sandbox.pay(prepay, force=True))["errMsg"] == "requestPayment:fail 该订单已支付"
    await sandbox.advance(7200)  # the prepay's 2-hour life is not lifted either
    other = await sandbox.order("ORDER0002")
    await sandbox.advance(7200)
    await close(sandbox, "ORDER0002")
    assert (await sandbox.pay(other["prepay_id"], force=True))["errMsg"] == "requestPayment:fail prepay_id已过期"


async def test_attach_and_device_info_are_echoed(sandbox: Sandbox) -> None:
    answer = await sandbox.order(attach="store=42", device_info="WEB")
    assert answer["device_info"] == "WEB"
    await sandbox.pay(answer["prepay_id"])
    paid = await query(sandbox)
    assert paid["attach"] == "store=42"
    assert paid["device_info"] == "WEB"


async def test_a_malformed_transaction_id_in_a_query_is_ordernotexist(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "transaction_id": "abc"})
    assert answer["err_code"] == "ORDERNOTEXIST"
