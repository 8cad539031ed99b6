"""Faults (scripted and per request) and bills (spec 13)."""

from __future__ import annotations

import gzip
from decimal import Decimal

import httpx2
import pytest

from minipay.protocol import BILL_COLUMNS, SUMMARY_COLUMNS, SignatureError, decode_xml, parse_bill, verify
from minipay.sandbox import SandboxConfig
from tests.sandbox.conftest import APPID, HKD_SUB, JPY_APP, JPY_SUB, KEY, MCH_ID, START, MakeSandbox, Sandbox

pytestmark = pytest.mark.anyio


async def fault(sandbox: Sandbox, **body: object) -> dict[str, object]:
    response = await sandbox.http.post("/sandbox/faults", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()["fault"]
    return data


async def query(sandbox: Sandbox, out_trade_no: str = "ORDER0001") -> dict[str, str]:
    return await sandbox.call("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": out_trade_no})


async def test_systemerror_fault_answers_signed_systemerror_and_does_nothing(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="unifiedorder", fault="SYSTEMERROR")
    answer = await sandbox.order()
    verify(answer, KEY, "MD5")
    assert answer["err_code"] == "SYSTEMERROR"
    assert (await query(sandbox))["err_code"] == "ORDERNOTEXIST"
    assert (await sandbox.order())["result_code"] == "SUCCESS"


async def test_fault_applies_to_the_next_n_calls_only(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="/pay/orderquery", fault="SYSTEMERROR", times=2)
    codes = [(await query(sandbox)).get("err_code") for _ in range(3)]
    assert codes == ["SYSTEMERROR", "SYSTEMERROR", "ORDERNOTEXIST"]
    assert (await sandbox.http.get("/sandbox/faults")).json()["faults"] == []


async def test_fault_scoped_to_an_out_trade_no_spares_other_orders(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="orderquery", fault="SYSTEMERROR", out_trade_no="B")
    assert (await query(sandbox, "A"))["err_code"] == "ORDERNOTEXIST"
    assert (await query(sandbox, "B"))["err_code"] == "SYSTEMERROR"


async def test_a_fault_scoped_to_an_out_trade_no_also_hits_calls_naming_its_transaction_id(sandbox: Sandbox) -> None:
    await sandbox.paid_order("T1")
    await sandbox.paid_order("T2")
    t1 = sandbox.backend.orders[(HKD_SUB, "T1")].transaction_id
    t2 = sandbox.backend.orders[(HKD_SUB, "T2")].transaction_id
    await fault(sandbox, endpoint="refund", fault="SYSTEMERROR", out_trade_no="T1")
    refund = {"sub_mch_id": HKD_SUB, "out_refund_no": "RT", "total_fee": 1000, "refund_fee": 100}
    assert (await sandbox.call("/secapi/pay/refund", {**refund, "transaction_id": t2}))["result_code"] == "SUCCESS"
    answer = await sandbox.call("/secapi/pay/refund", {**refund, "out_refund_no": "RT1", "transaction_id": t1})
    assert answer["err_code"] == "SYSTEMERROR"
    journal = (await sandbox.http.get("/sandbox/requests", params={"endpoint": "refund", "out_trade_no": "T1"})).json()
    assert [r["fault"] for r in journal["requests"]] == ["SYSTEMERROR"]


async def test_http_500_fault(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="orderquery", fault="http_500")
    response = await sandbox.post_signed("/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "A"})
    assert response.status_code == 500


async def test_drop_fault_disconnects_without_processing(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="unifiedorder", fault="drop")
    with pytest.raises(httpx2.RemoteProtocolError):
        await sandbox.order()
    assert (await query(sandbox))["err_code"] == "ORDERNOTEXIST"


async def test_lost_response_fault_processes_then_disconnects(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="unifiedorder", fault="lost_response")
    with pytest.raises(httpx2.RemoteProtocolError):
        await sandbox.order()
    assert (await query(sandbox))["trade_state"] == "NOTPAY"
    # The retry with the same parameters gets the same live prepay_id.
    retry = await sandbox.order()
    assert retry["prepay_id"] == sandbox.backend.orders[(HKD_SUB, "ORDER0001")].prepay_id


async def test_lost_refund_response_still_created_the_refund(sandbox: Sandbox) -> None:
    await sandbox.paid_order()
    await fault(sandbox, endpoint="refund", fault="lost_response")
    fields = {"sub_mch_id": HKD_SUB, "out_trade_no": "ORDER0001", "out_refund_no": "R1", "total_fee": 1000,
              "refund_fee": 100}  # fmt: skip
    with pytest.raises(httpx2.RemoteProtocolError):
        await sandbox.call("/secapi/pay/refund", fields)
    assert len(sandbox.backend.refunds) == 1
    assert (await sandbox.call("/secapi/pay/refund", fields))["result_code"] == "SUCCESS"
    assert len(sandbox.backend.refunds) == 1


async def test_bad_signature_fault_processes_but_signs_wrong(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="unifiedorder", fault="bad_signature")
    answer = await sandbox.order()
    with pytest.raises(SignatureError):
        verify(answer, KEY, "MD5")
    assert (await query(sandbox))["trade_state"] == "NOTPAY"


async def test_delay_fault_answers_normally_after_the_delay(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="orderquery", fault="delay", delay=0.01)
    assert (await query(sandbox))["err_code"] == "ORDERNOTEXIST"
    journal = (await sandbox.http.get("/sandbox/requests", params={"endpoint": "orderquery"})).json()["requests"]
    assert journal[-1]["fault"] == "delay"


async def test_per_request_fault_header(sandbox: Sandbox) -> None:
    answer = await sandbox.call(
        "/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "A"}, headers={"X-Sandbox-Fault": "SYSTEMERROR"}
    )
    assert answer["err_code"] == "SYSTEMERROR"
    response = await sandbox.post_signed(
        "/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "A"}, headers={"X-Sandbox-Fault": "http_500"}
    )
    assert response.status_code == 500
    delayed = await sandbox.call(
        "/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "A"}, headers={"X-Sandbox-Fault": "delay=0.01"}
    )
    assert delayed["err_code"] == "ORDERNOTEXIST"


@pytest.mark.parametrize(("kind", "errcode"), [("-1", -1), ("45011", 45011), ("40226", 40226)])
async def test_login_faults(sandbox: Sandbox, kind: str, errcode: int) -> None:
    await fault(sandbox, endpoint="jscode2session", fault=kind)
    code = (await sandbox.login())["code"]
    params = {"appid": "wx1234567890abcdef", "secret": "x", "js_code": code, "grant_type": "authorization_code"}
    assert (await sandbox.http.get("/sns/jscode2session", params=params)).json()["errcode"] == errcode


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "nope", "fault": "SYSTEMERROR"},
        {"endpoint": "orderquery", "fault": "nope"},
        {"endpoint": "orderquery", "fault": "SYSTEMERROR", "times": 0},
        {"endpoint": "orderquery", "fault": "delay", "delay": 600},
    ],
)
async def test_bad_fault_scripts_are_refused(sandbox: Sandbox, body: dict[str, object]) -> None:
    assert (await sandbox.http.post("/sandbox/faults", json=body)).status_code == 400


async def test_faults_can_be_listed_and_cleared(sandbox: Sandbox) -> None:
    await fault(sandbox, endpoint="orderquery", fault="SYSTEMERROR", times=3)
    assert len((await sandbox.http.get("/sandbox/faults")).json()["faults"]) == 1
    assert (await sandbox.http.delete("/sandbox/faults")).json()["faults"] == []


# ------------------------------------------------------------------ bills


LAYOUT_HEADER = {"english": "Transaction time", "documented": "交易时间"}


@pytest.fixture(params=["documented", "english"])
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def billing(make_sandbox: MakeSandbox, layout: str) -> Sandbox:
    """A sandbox rendering bills in ``layout`` (every bill test runs on both layouts)."""
    return make_sandbox(SandboxConfig.from_dict({"rules": {"bill_layout": layout}}))


async def bill(sandbox: Sandbox, day: str = "20240101", **extra: str) -> httpx2.Response:
    return await sandbox.post_signed("/pay/downloadbill", {"bill_date": day, **extra})


async def day_of_trades(sandbox: Sandbox) -> None:
    await sandbox.paid_order("A1", attach="store=1")
    await sandbox.advance(60)
    await sandbox.paid_order("A2", total_fee=2000)
    await sandbox.advance(60)
    fields = {"sub_mch_id": HKD_SUB, "out_trade_no": "A1", "out_refund_no": "R1", "total_fee": 1000,
              "refund_fee": 250}  # fmt: skip
    await sandbox.call("/secapi/pay/refund", fields)


def rows(text: str) -> list[list[str]]:
    return [[cell.lstrip("`") for cell in line.split(",")] for line in text.strip().splitlines()]


def test_a_mixed_currency_bill_leaves_the_summary_amounts_empty() -> None:
    from datetime import datetime

    from minipay.protocol import BillRow
    from minipay.sandbox._bills import bill_bytes

    when = datetime(2024, 1, 1, 12, tzinfo=START.tzinfo)
    hkd = BillRow(transaction_time=when, out_trade_no="H", fee_type="HKD", total_fee=100, trade_state="SUCCESS")
    jpy = BillRow(transaction_time=when, out_trade_no="J", fee_type="JPY", total_fee=100, trade_state="SUCCESS")
    parsed = parse_bill(bill_bytes([hkd, jpy]))
    assert parsed.summary is not None
    assert parsed.summary.transaction_count == 2
    assert parsed.summary.total_fee is None


async def test_bill_is_not_available_before_nine_the_next_morning(billing: Sandbox, layout: str) -> None:
    await day_of_trades(billing)
    early = decode_xml((await bill(billing)).content)
    assert early["return_code"] == "FAIL"
    assert early["return_msg"] == "No Bill Exist"
    await billing.http.post("/sandbox/clock", json={"set": "2024-01-02T08:59:59+08:00"})
    assert decode_xml((await bill(billing)).content)["return_msg"] == "No Bill Exist"
    await billing.advance(1)
    assert (await bill(billing)).text.startswith(LAYOUT_HEADER[layout])


async def test_bill_lists_the_days_payments_and_refunds_with_a_summary(billing: Sandbox) -> None:
    await day_of_trades(billing)
    await billing.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    text = (await bill(billing)).text
    assert text.splitlines()[1].startswith("`2024-01-01 12:00:00,`")
    parsed = parse_bill(text)  # the SDK's parser reads the sandbox's bill
    assert [(r.out_trade_no, r.trade_state) for r in parsed.rows] == [
        ("A1", "SUCCESS"),
        ("A2", "SUCCESS"),
        ("A1", "REFUND"),
    ]
    paid, _, refunded = parsed.rows
    assert paid.total_fee == 1000
    assert paid.fee_type == "HKD"
    assert paid.sub_mch_id == HKD_SUB
    assert paid.attach == "store=1"
    assert paid.cash_fee == 920
    assert paid.rate == 92000000
    assert paid.transaction_id == billing.backend.orders[(HKD_SUB, "A1")].transaction_id
    assert refunded.refund_fee == 250
    assert refunded.out_refund_no == "R1"
    assert refunded.refund_status == "SUCCESS"  # completed 60 s after the request
    assert refunded.cash_fee == 230
    assert parsed.summary is not None
    assert parsed.summary.transaction_count == 3
    assert parsed.summary.total_fee == 3000
    assert parsed.summary.refund_fee == 250


async def test_the_documented_layout_has_chinese_headers_per_bill_type_and_fees_to_five_decimals(
    make_sandbox: MakeSandbox,
) -> None:
    from minipay.sandbox._bills import documented_columns

    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"bill_layout": "documented"}}))
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    documented = (
        "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
        "总金额,代金券金额,微信退款单号,商户退款单号,退款金额,代金券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率"
    )
    everything = rows((await bill(sandbox)).text)
    assert ",".join(everything[0]) == documented + ",用户支付币种,用户支付金额,结算币种,汇率"
    header, a1, a2, refund, summary_header, summary = everything
    cell = dict(zip(header, a1, strict=True))
    assert (cell["商户订单号"], cell["总金额"], cell["手续费"], cell["费率"], cell["微信退款单号"]) == (
        "A1", "10.00", "0.06000", "0.60%", "0",
    )  # fmt: skip
    assert (cell["用户支付币种"], cell["用户支付金额"], cell["结算币种"], cell["汇率"]) == (
        "CNY",
        "9.20",
        "HKD",
        "0.92000000",
    )
    assert dict(zip(header, a2, strict=True))["手续费"] == "0.12000"
    cell = dict(zip(header, refund, strict=True))
    assert (cell["交易状态"], cell["退款金额"], cell["退款状态"], cell["手续费"]) == (
        "REFUND",
        "2.50",
        "SUCCESS",
        "-0.01500",
    )
    assert summary_header == ["总交易单数", "总交易额", "总退款金额", "总代金券退款金额", "手续费总金额"]
    assert summary == ["3", "30.00", "2.50", "0.00", "0.16500"]
    # every value back-quoted, in records and summary
    for line in (await bill(sandbox)).text.strip().splitlines()[1:]:
        if not line.startswith("总"):
            assert all(value.startswith("`") for value in line.split(","))
    # a column set per bill_type
    success = rows((await bill(sandbox, bill_type="SUCCESS")).text)
    assert tuple(success[0]) == documented_columns("SUCCESS")
    assert "退款金额" not in success[0]
    assert "手续费" in success[0]
    refunds = rows((await bill(sandbox, bill_type="REFUND")).text)
    assert tuple(refunds[0]) == documented_columns("REFUND")
    cell = dict(zip(refunds[0], refunds[1], strict=True))
    assert (cell["退款申请时间"], cell["退款成功时间"]) == ("2024-01-01 12:02:00", "2024-01-01 12:03:00")
    # the SDK's parser reads it: exact fee beside the rounded one, summary by its Chinese names
    parsed = parse_bill((await bill(sandbox, bill_type="REFUND")).content)
    assert parsed.rows[0].refund_request_time is not None
    assert parsed.rows[0].service_fee_major == Decimal("-0.01500")
    assert parsed.summary is not None
    assert (parsed.summary.refund_fee, parsed.summary.service_fee_major) == (250, Decimal("-0.01500"))


async def test_the_english_layout_is_unchanged(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": {"bill_layout": "english"}}))
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    header, a1, _a2, refund, summary_header, _summary = rows((await bill(sandbox, bill_type="ALL")).text)
    assert tuple(header) == BILL_COLUMNS
    assert tuple(summary_header) == SUMMARY_COLUMNS
    assert dict(zip(header, a1, strict=True))["Fee"] == "0.06"
    assert dict(zip(header, refund, strict=True))["Fee"] == "0.00"
    assert len(rows((await bill(sandbox, bill_type="REFUND")).text)[0]) == len(BILL_COLUMNS)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"profile": "strict"}, "交易时间"),
        ({"profile": "lenient"}, "Transaction time"),
        ({}, "Transaction time"),  # the Python API without a profile is lenient
        ({"profile": "strict", "bill_layout": "english"}, "Transaction time"),  # an explicit switch wins
        ({"profile": "lenient", "bill_layout": "documented"}, "交易时间"),
    ],
)
async def test_the_profile_picks_the_bill_layout_unless_set(
    make_sandbox: MakeSandbox, rules: dict[str, str], expected: str
) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rules": rules}))
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-01T12:00:00+08:00"})
    await sandbox.paid_order("A1")
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    assert (await bill(sandbox)).text.startswith(expected)


async def test_bill_types_gzip_and_sub_merchant_filter(billing: Sandbox, layout: str) -> None:
    await day_of_trades(billing)
    await billing.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    assert len(rows((await bill(billing, bill_type="SUCCESS")).text)) == 1 + 2 + 2
    assert len(rows((await bill(billing, bill_type="REFUND")).text)) == 1 + 1 + 2
    assert decode_xml((await bill(billing, bill_type="RECHARGE_REFUND")).content)["return_msg"] == "No Bill Exist"
    assert decode_xml((await bill(billing, bill_type="BOGUS")).content)["return_msg"] == "invalid bill_type"
    zipped = (await bill(billing, tar_type="GZIP")).content
    assert gzip.decompress(zipped).decode().startswith(LAYOUT_HEADER[layout])
    assert len(parse_bill(zipped).rows) == 3
    assert decode_xml((await bill(billing, sub_mch_id=JPY_SUB)).content)["return_msg"] == "No Bill Exist"
    assert len(rows((await bill(billing, sub_mch_id=HKD_SUB)).text)) == 1 + 3 + 2


async def test_bill_of_a_day_without_trades_is_no_bill_exist(sandbox: Sandbox) -> None:
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-02-01T10:00:00+08:00"})
    answer = decode_xml((await bill(sandbox, "20240115")).content)
    assert answer == {"return_code": "FAIL", "return_msg": "No Bill Exist", "error_code": "20002"}


async def test_bill_uses_the_china_day(billing: Sandbox) -> None:
    # 23:30 China time on Jan 1 is 15:30 UTC: the trade belongs to the Jan 1 bill.
    await billing.http.post("/sandbox/clock", json={"set": "2024-01-01T23:30:00+08:00"})
    await billing.paid_order("LATE1")
    await billing.http.post("/sandbox/clock", json={"set": "2024-01-03T10:00:00+08:00"})
    assert "LATE1" in (await bill(billing, "20240101")).text
    assert decode_xml((await bill(billing, "20240102")).content)["return_msg"] == "No Bill Exist"


@pytest.mark.parametrize(("kind", "delta"), [("bill_extra_trade", 1), ("bill_missing_trade", -1)])
async def test_bill_faults_add_or_drop_a_trade(billing: Sandbox, kind: str, delta: int) -> None:
    await day_of_trades(billing)
    await billing.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    normal = len(rows((await bill(billing)).text))
    await fault(billing, endpoint="downloadbill", fault=kind)
    assert len(rows((await bill(billing)).text)) == normal + delta


async def test_an_extra_and_a_missing_trade_scripted_together_both_apply_to_the_next_bill(sandbox: Sandbox) -> None:
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    normal = parse_bill((await bill(sandbox)).content).rows
    assert [r.out_trade_no for r in normal] == ["A1", "A2", "A1"]  # the refund of A1 is the day's last row
    await fault(sandbox, endpoint="downloadbill", fault="SYSTEMERROR")  # scripted first: applies first, alone
    await fault(sandbox, endpoint="downloadbill", fault="bill_extra_trade")
    await fault(sandbox, endpoint="downloadbill", fault="bill_missing_trade", times=2)
    assert decode_xml((await bill(sandbox)).content)["return_msg"].startswith("SYSTEMERROR")

    both = parse_bill((await bill(sandbox)).content).rows
    assert [(r.out_trade_no, r.trade_state) for r in both[:2]] == [("A1", "SUCCESS"), ("A2", "SUCCESS")]
    assert len(both) == 3
    assert (both[2].out_trade_no or "").startswith("PHANTOM")
    assert (both[2].trade_state, both[2].total_fee) == ("SUCCESS", 100)
    journal = (await sandbox.http.get("/sandbox/requests", params={"endpoint": "downloadbill"})).json()["requests"]
    assert [e["fault"] for e in journal] == [None, "SYSTEMERROR", "bill_extra_trade+bill_missing_trade"]

    # The extra trade is used up; the missing trade had times=2: the next bill only misses a trade.
    (left,) = (await sandbox.http.get("/sandbox/faults")).json()["faults"]
    assert (left["fault"], left["times"]) == ("bill_missing_trade", 1)
    assert [r.out_trade_no for r in parse_bill((await bill(sandbox)).content).rows] == ["A1", "A2"]
    assert parse_bill((await bill(sandbox)).content).rows == normal


async def test_two_faults_of_one_bill_kind_do_not_stack_in_one_bill(sandbox: Sandbox) -> None:
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    await fault(sandbox, endpoint="downloadbill", fault="bill_missing_trade")
    await fault(sandbox, endpoint="downloadbill", fault="bill_missing_trade")
    assert len(parse_bill((await bill(sandbox)).content).rows) == 2
    assert len(parse_bill((await bill(sandbox)).content).rows) == 2
    assert len(parse_bill((await bill(sandbox)).content).rows) == 3


async def test_a_bill_fault_for_one_sub_merchant_waits_for_that_sub_merchants_bill(sandbox: Sandbox) -> None:
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    scripted = await fault(sandbox, endpoint="downloadbill", fault="bill_extra_trade", sub_mch_id=HKD_SUB)
    assert scripted["sub_mch_id"] == HKD_SUB
    no_trades = decode_xml((await bill(sandbox, sub_mch_id=JPY_SUB)).content)
    assert no_trades["return_msg"] == "No Bill Exist"  # the JPY bill is not touched
    assert len(parse_bill((await bill(sandbox)).content).rows) == 3  # nor the institution-wide bill
    hkd = parse_bill((await bill(sandbox, sub_mch_id=HKD_SUB)).content).rows
    assert len(hkd) == 4
    assert (hkd[-1].out_trade_no or "").startswith("PHANTOM")
    assert hkd[-1].sub_mch_id == HKD_SUB
    bad = await sandbox.http.post(
        "/sandbox/faults", json={"endpoint": "downloadbill", "fault": "drop", "sub_mch_id": 1}
    )
    assert bad.status_code == 400


async def test_bill_faults_combine_in_one_fault_header(sandbox: Sandbox) -> None:
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    combined = {"X-Sandbox-Fault": "bill_extra_trade, bill_missing_trade"}
    response = await sandbox.post_signed("/pay/downloadbill", {"bill_date": "20240101"}, headers=combined)
    found = [r.out_trade_no or "" for r in parse_bill(response.content).rows]
    assert found[:2] == ["A1", "A2"]
    assert len(found) == 3
    assert found[2].startswith("PHANTOM")
    mixed = {"X-Sandbox-Fault": "bill_extra_trade,drop"}
    refused = decode_xml(
        (await sandbox.post_signed("/pay/downloadbill", {"bill_date": "20240101"}, headers=mixed)).content
    )
    assert refused["return_code"] == "FAIL"
    assert "combine only bill faults" in refused["return_msg"]


async def test_bill_errors_are_return_code_fail(sandbox: Sandbox) -> None:
    unknown_sub = decode_xml((await bill(sandbox, sub_mch_id="42")).content)
    assert unknown_sub["return_code"] == "FAIL"
    assert "sign" not in unknown_sub
    broken = decode_xml((await bill(sandbox, bill_date="2024-01-01")).content)
    assert broken["return_msg"] == "invalid bill_date"
    await fault(sandbox, endpoint="downloadbill", fault="SYSTEMERROR")
    assert decode_xml((await bill(sandbox)).content)["return_msg"].startswith("SYSTEMERROR")


async def test_bill_signature_is_checked(sandbox: Sandbox) -> None:
    response = await sandbox.post_signed("/pay/downloadbill", {"bill_date": "20240101"}, key="Q" * 32)
    assert decode_xml(response.content) == {"return_code": "FAIL", "return_msg": "签名错误"}


async def test_jpy_bill_amounts_have_no_decimals(sandbox: Sandbox) -> None:
    answer = await sandbox.order("J1", sub_mch_id=JPY_SUB, sub_appid=JPY_APP, fee_type="JPY", total_fee=1500)
    await sandbox.pay(answer["prepay_id"], app_id=JPY_APP)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    text = (await bill(sandbox, sub_mch_id=JPY_SUB)).text
    assert "`1500," in text
    assert parse_bill(text).rows[0].total_fee == 1500


# ------------------------------------------------------------------ exchange rate and report


async def test_exchange_rate_query(sandbox: Sandbox) -> None:
    answer = await sandbox.call("/pay/queryexchagerate", {"sub_mch_id": HKD_SUB, "fee_type": "HKD", "date": "20240101"})
    verify(answer, KEY, "MD5")
    assert answer["rate"] == "92000000"
    assert answer["rate_time"] == "20240101"
    assert answer["sub_mch_id"] == HKD_SUB
    assert "result_code" not in answer


async def test_exchange_rate_errors_are_return_code_fail(sandbox: Sandbox) -> None:
    unknown = await sandbox.call("/pay/queryexchagerate", {"fee_type": "THB", "date": "20240101"})
    assert unknown["return_code"] == "FAIL"
    future = await sandbox.call("/pay/queryexchagerate", {"fee_type": "HKD", "date": "20240301"})
    assert future["return_code"] == "FAIL"
    bad = await sandbox.call("/pay/queryexchagerate", {"fee_type": "HKD", "date": "2024-01-01"})
    assert bad["return_code"] == "FAIL"


async def test_exchange_rate_of_the_spec_vector_request(sandbox: Sandbox) -> None:
    # Spec 3.4: this exact request signs to B230F1DFA690567B5772144050EF1E93 with the default key.
    body = (
        f"<xml><appid>{APPID}</appid><mch_id>{MCH_ID}</mch_id><sub_mch_id>{HKD_SUB}</sub_mch_id>"
        "<fee_type>HKD</fee_type><date>20240101</date><sign>B230F1DFA690567B5772144050EF1E93</sign></xml>"
    )
    answer = decode_xml((await sandbox.http.post("/pay/queryexchagerate", content=body.encode())).content)
    assert answer["rate"] == "92000000"


async def test_report_is_accepted(sandbox: Sandbox) -> None:
    fields: dict[str, str | int] = {
        "interface_url": "https://apihk.mch.weixin.qq.com/pay/unifiedorder",
        "execute_time_": 120,
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "user_ip": "203.0.113.10",
        "time": "20240101120000",
    }
    answer = await sandbox.call("/payitil/report", fields)
    assert answer == {"return_code": "SUCCESS", "return_msg": "OK", "result_code": "SUCCESS"}


async def test_config_rates_reach_the_rate_query(make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox(SandboxConfig.from_dict({"rates": {"HKD": 91234567}}))
    answer = await sandbox.call("/pay/queryexchagerate", {"fee_type": "HKD", "date": "20240101"})
    assert answer["rate"] == "91234567"


async def test_unknown_fault_header_is_refused_loudly(sandbox: Sandbox) -> None:
    answer = await sandbox.call(
        "/pay/orderquery", {"sub_mch_id": HKD_SUB, "out_trade_no": "A"}, headers={"X-Sandbox-Fault": "SYSTEMEROR"}
    )
    assert answer["return_code"] == "FAIL"
    assert "x-sandbox-fault" in answer["return_msg"]
    login = await sandbox.http.get("/sns/jscode2session", headers={"X-Sandbox-Fault": "nope"})
    assert login.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "orderquery", "fault": "45011"},
        {"endpoint": "jscode2session", "fault": "SYSTEMERROR"},
        {"endpoint": "orderquery", "fault": "bill_extra_trade"},
    ],
)
async def test_faults_that_do_not_fit_the_endpoint_are_refused(sandbox: Sandbox, body: dict[str, object]) -> None:
    assert (await sandbox.http.post("/sandbox/faults", json=body)).status_code == 400


async def test_lost_bill_response_disconnects(sandbox: Sandbox) -> None:
    await day_of_trades(sandbox)
    await sandbox.http.post("/sandbox/clock", json={"set": "2024-01-02T10:00:00+08:00"})
    await fault(sandbox, endpoint="downloadbill", fault="lost_response")
    with pytest.raises(httpx2.RemoteProtocolError):
        await bill(sandbox)
    assert len(parse_bill((await bill(sandbox)).content).rows) == 3
