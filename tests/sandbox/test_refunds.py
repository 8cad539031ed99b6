"""Refunds and refund queries (spec 10, 11, 12, 16.2): amounts, caps, idempotency, pool, completion."""

from __future__ import annotations

from typing import Any

import pytest

from minipay.protocol import decode_xml, decrypt_req_info, verify
from minipay.sandbox import SandboxConfig
from tests.sandbox.conftest import HKD_SUB, JPY_APP, JPY_SUB, KEY, MakeSandbox, Sandbox

pytestmark = pytest.mark.anyio
REFUND_URL = "http://merchant.test/wxpay/refund-notify"


async def refund(sandbox: Sandbox, no: str = "R1", fee: int = 500, **extra: Any) -> dict[str, str]:
    fields: dict[str, str | int] = {
        "sub_mch_id": HKD_SUB,
        "out_trade_no": "ORDER0001",
        "out_refund_no": no,
        "total_fee": 1000,
        "refund_fee": fee,
        "refund_fee_type": "HKD",
        "notify_url": REFUND_URL,
    }
    fields.update(extra)
    return await sandbox.call("/secapi/pay/refund", {k: v for k, v in fields.items() if v is not None})


async def refund_query(sandbox: Sandbox, **ids: str) -> dict[str, str]:
    return await sandbox.call("/pay/refundquery", {"sub_mch_id": HKD_SUB, **ids})


async def test_refund_is_accepted_processing_then_succeeds_after_the_delay(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    answer = await refund(sandbox)
    verify(answer, KEY, "MD5")
    assert answer["result_code"] == "SUCCESS"
    assert answer["refund_fee"] == "500"
    assert answer["cash_refund_fee"] == "460"
    assert len(answer["refund_id"]) == 29
    status = await refund_query(sandbox, out_refund_no="R1")
    assert status["refund_status_0"] == "PROCESSING"
    await sandbox.advance(59)
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == "PROCESSING"
    await sandbox.advance(1)
    done = await refund_query(sandbox, out_refund_no="R1")
    verify(done, KEY, "MD5")
    assert done["refund_status_0"] == "SUCCESS"
    assert done["refund_success_time_0"] == "2024-01-01 12:01:00"
    assert done["refund_count"] == "1"
    assert done["cash_fee"] == "920"


async def test_refund_notification_is_encrypted_unsigned_and_decrypts_to_the_result(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await refund(sandbox)
    await sandbox.advance(60)
    notes = [n for n in await sandbox.notifications("ORDER0001") if n["kind"] == "refund"]
    assert len(notes) == 1
    assert notes[0]["state"] == "delivered"
    assert notes[0]["url"] == REFUND_URL
    outer = decode_xml(sandbox.receiver.received[-1])
    assert "sign" not in outer
    assert outer["sub_mch_id"] == HKD_SUB
    inner_xml = decrypt_req_info(outer["req_info"], KEY)
    assert inner_xml.startswith(b"<root>")
    inner = decode_xml(b"<xml>" + inner_xml[len(b"<root>") : -len(b"</root>")] + b"</xml>")
    assert inner["refund_status"] == "SUCCESS"
    assert inner["out_refund_no"] == "R1"
    assert inner["refund_fee"] == "500"
    assert inner["success_time"] == "2024-01-01 12:01:00"
    assert inner["refund_recv_accout"]


async def test_same_out_refund_no_is_idempotent(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    first = await refund(sandbox)
    second = await refund(sandbox)
    assert second["result_code"] == "SUCCESS"
    assert second["refund_id"] == first["refund_id"]
    assert len(sandbox.backend.refunds) == 1


async def test_same_out_refund_no_with_other_amount_is_param_error(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await refund(sandbox)
    assert (await refund(sandbox, fee=300))["err_code"] == "PARAM_ERROR"


async def test_refunds_cannot_exceed_the_paid_amount(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    assert (await refund(sandbox, "R1", 600))["result_code"] == "SUCCESS"
    over = await refund(sandbox, "R2", 401)
    assert over["err_code"] == "PARAM_ERROR"
    assert (await refund(sandbox, "R3", 400))["result_code"] == "SUCCESS"


async def test_partial_cash_refunds_add_up_to_the_cash_fee(sandbox: Sandbox) -> None:
    await sandbox.paid_order("ORDER0001", total_fee=1001)
    parts = [await refund(sandbox, f"R{i}", 333, total_fee=1001) for i in range(3)]
    last = await refund(sandbox, "R9", 2, total_fee=1001)
    cash = [int(p["cash_refund_fee"]) for p in [*parts, last]]
    assert sum(cash) == int(parts[0]["cash_fee"])


async def test_rounded_partial_cash_refunds_never_add_up_to_more_than_was_paid(sandbox: Sandbox) -> None:
    # Found by the ledger property test: each partial refund rounds half up on its own
    # (6 x 0.92 = 5.52 -> 6; 981 x 0.92 = 902.52 -> 903), which once summed to 921 of a 920 cash_fee
    # and left the closing refund with cash_refund_fee=-1.
    first = await sandbox.paid_order("ORDER0001")
    assert first["result_code"] == "SUCCESS"
    parts = [await refund(sandbox, f"R{i}", fee) for i, fee in enumerate([6, 6, 6, 981])]
    last = await refund(sandbox, "R9", 1)
    cash = [int(p["cash_refund_fee"]) for p in [*parts, last]]
    assert int(last["cash_fee"]) == 920
    assert cash == [6, 6, 6, 902, 0]
    assert sum(cash) == 920
    assert all(c >= 0 for c in cash)


async def test_refund_checks_currency_and_total(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    assert (await refund(sandbox, refund_fee_type="CNY"))["err_code"] == "PARAM_ERROR"
    assert (await refund(sandbox, total_fee=999))["err_code"] == "PARAM_ERROR"
    assert (await refund(sandbox, refund_fee_type=None))["result_code"] == "SUCCESS"


async def test_refund_of_an_unpaid_or_unknown_order_is_ordernotexist(sandbox: Sandbox) -> None:
    await sandbox.order()
    assert (await refund(sandbox))["err_code"] == "ORDERNOTEXIST"
    assert (await refund(sandbox, out_trade_no="NOPE"))["err_code"] == "ORDERNOTEXIST"
    assert (await refund(sandbox, out_trade_no=None, transaction_id="bad"))["err_code"] == "INVALID_TRANSACTIONID"
    assert (await refund(sandbox, out_trade_no=None))["err_code"] == "LACK_PARAMS"


async def test_refund_by_transaction_id(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    tx = sandbox.backend.orders[(HKD_SUB, "ORDER0001")].transaction_id
    answer = await refund(sandbox, out_trade_no=None, transaction_id=tx)
    assert answer["out_trade_no"] == "ORDER0001"


async def test_at_most_fifty_refunds_per_order(sandbox: Sandbox) -> None:
    await sandbox.paid_order("ORDER0001", total_fee=100)
    for i in range(50):
        assert (await refund(sandbox, f"R{i}", 1, total_fee=100))["result_code"] == "SUCCESS"
    answer = await refund(sandbox, "R50", 1, total_fee=100)
    assert answer["err_code"] == "ERROR"
    assert "50" in answer["err_code_des"]


async def test_refund_spacing_rule_is_optional(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"refund_spacing": 60}}))
    await sandbox.paid_order()
    await refund(sandbox, "R1", 100)
    assert (await refund(sandbox, "R2", 100))["err_code"] == "FREQUENCY_LIMITED"
    await sandbox.advance(60)
    assert (await refund(sandbox, "R2", 100))["result_code"] == "SUCCESS"


async def test_refund_beyond_todays_cny_pool_is_notenough(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"cny_pool": True}}))
    await sandbox.paid_order()
    assert (await refund(sandbox, "R1", 500))["result_code"] == "SUCCESS"
    await sandbox.advance(24 * 3600)  # the next China day: yesterday's takings were converted
    answer = await refund(sandbox, "R2", 100)
    assert answer["err_code"] == "NOTENOUGH"
    # New takings today refill the pool; the same out_refund_no then goes through.
    await sandbox.paid_order("ORDER0002")
    assert (await refund(sandbox, "R2", 100))["result_code"] == "SUCCESS"


async def test_a_closed_refund_gives_its_cny_back_to_the_pool(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"cny_pool": True}}))
    await sandbox.paid_order()  # 10.00 HKD -> 9.20 CNY in today's pool
    await sandbox.http.post("/sandbox/refunds/outcome", json={"out_trade_no": "ORDER0001", "status": "REFUNDCLOSE"})
    assert (await refund(sandbox, "R1", 1000))["result_code"] == "SUCCESS"  # draws all 920
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == "PROCESSING"
    await sandbox.advance(60)
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == "REFUNDCLOSE"
    # Nothing was refunded: the amount and its CNY are free again.
    assert (await refund(sandbox, "R2", 1000))["result_code"] == "SUCCESS"


async def test_refund_older_than_a_year_is_trade_overdue(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await sandbox.advance(366 * 24 * 3600)
    assert (await refund(sandbox))["err_code"] == "TRADE_OVERDUE"


@pytest.mark.parametrize("status", ["CHANGE", "REFUNDCLOSE"])
async def test_scripted_refund_outcome_is_reported_and_notified(sandbox: Sandbox, status: str) -> None:
    await sandbox.paid_order()
    response = await sandbox.http.post("/sandbox/refunds/outcome", json={"out_trade_no": "ORDER0001", "status": status})
    assert response.status_code == 200
    await refund(sandbox)
    await sandbox.advance(60)
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == status
    outer = decode_xml(sandbox.receiver.received[-1])
    assert f"<refund_status><![CDATA[{status}]]></refund_status>".encode() in decrypt_req_info(outer["req_info"], KEY)


async def test_a_processing_refund_can_be_scripted_and_completed_now(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await refund(sandbox)
    body = {"out_refund_no": "R1", "status": "REFUNDCLOSE", "after": 0}
    answer = (await sandbox.http.post("/sandbox/refunds/outcome", json=body)).json()
    assert answer["ok"] is True
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == "REFUNDCLOSE"
    # A closed refund frees its amount.
    assert (await refund(sandbox, "R2", 1000))["result_code"] == "SUCCESS"


async def test_scripting_a_refund_number_two_sub_merchants_share_needs_the_sub_merchant(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    assert (await refund(sandbox, "RSAME", 100))["result_code"] == "SUCCESS"
    jpy_openid = (await sandbox.login(JPY_APP))["openid"]
    jpy = await sandbox.order("ORDER0001", sub_mch_id=JPY_SUB, sub_appid=JPY_APP, fee_type="JPY", sub_openid=jpy_openid)
    assert (await sandbox.pay(jpy["prepay_id"], app_id=JPY_APP))["errMsg"] == "requestPayment:ok"
    jpy_refund = await refund(sandbox, "RSAME", 100, sub_mch_id=JPY_SUB, refund_fee_type="JPY")
    assert jpy_refund["result_code"] == "SUCCESS", jpy_refund
    script = {"out_refund_no": "RSAME", "status": "REFUNDCLOSE", "after": 0}
    assert (await sandbox.http.post("/sandbox/refunds/outcome", json=script)).status_code == 409
    scoped = await sandbox.http.post("/sandbox/refunds/outcome", json={**script, "sub_mch_id": JPY_SUB})
    assert scoped.status_code == 200
    assert sandbox.backend.refunds[(JPY_SUB, "RSAME")].status == "REFUNDCLOSE"
    assert sandbox.backend.refunds[(HKD_SUB, "RSAME")].status == "PROCESSING"


async def test_refund_delay_is_configurable(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"refund_delay": 1200}}))
    await sandbox.paid_order()
    await refund(sandbox)
    await sandbox.advance(1199)
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == "PROCESSING"
    await sandbox.advance(1)
    assert (await refund_query(sandbox, out_refund_no="R1"))["refund_status_0"] == "SUCCESS"


async def test_refund_query_by_every_identifier(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    r1 = await refund(sandbox, "R1", 100)
    await refund(sandbox, "R2", 200)
    by_order = await refund_query(sandbox, out_trade_no="ORDER0001")
    assert by_order["refund_count"] == "2"
    assert {by_order["out_refund_no_0"], by_order["out_refund_no_1"]} == {"R1", "R2"}
    by_tx = await refund_query(sandbox, transaction_id=r1["transaction_id"])
    assert by_tx["refund_count"] == "2"
    by_refund_id = await refund_query(sandbox, refund_id=r1["refund_id"])
    assert by_refund_id["refund_count"] == "1"
    assert by_refund_id["out_refund_no_0"] == "R1"
    assert (await refund_query(sandbox, out_refund_no="R2"))["refund_fee_0"] == "200"


async def test_refund_query_errors(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    assert (await refund_query(sandbox, out_trade_no="ORDER0001"))["err_code"] == "REFUNDNOTEXIST"
    assert (await refund_query(sandbox, out_refund_no="NOPE"))["err_code"] == "REFUNDNOTEXIST"
    assert (await refund_query(sandbox, refund_id="5" * 29))["err_code"] == "REFUNDNOTEXIST"
    assert (await refund_query(sandbox, out_trade_no="NOPE"))["err_code"] == "REFUNDNOTEXIST"
    assert (await refund_query(sandbox))["err_code"] == "LACK_PARAMS"
    await refund(sandbox)
    other_sub = await sandbox.call("/pay/refundquery", {"sub_mch_id": JPY_SUB, "out_refund_no": "R1"})
    assert other_sub["err_code"] == "REFUNDNOTEXIST"


async def test_refund_query_pages_by_ten_with_offset(sandbox: Sandbox) -> None:
    await sandbox.paid_order("ORDER0001", total_fee=100)
    for i in range(12):
        await refund(sandbox, f"R{i:02d}", 1, total_fee=100)
    first = await refund_query(sandbox, out_trade_no="ORDER0001")
    assert first["total_refund_count"] == "12"
    assert first["refund_count"] == "10"
    second = await refund_query(sandbox, out_trade_no="ORDER0001", offset="10")
    assert second["refund_count"] == "2"
    assert second["out_refund_no_0"] == "R10"
    assert (await refund_query(sandbox, out_trade_no="ORDER0001", offset="12"))["err_code"] == "PARAM_ERROR"
    for offset in ("²", "١", "-1"):  # isdigit() alone let "²" through to int() (a bare ValueError)
        assert (await refund_query(sandbox, out_trade_no="ORDER0001", offset=offset))["err_code"] == "PARAM_ERROR"
