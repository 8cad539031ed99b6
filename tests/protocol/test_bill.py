"""The bill CSV: render -> parse round trips, WeChat's shapes, tolerance, failures."""

from __future__ import annotations

import gzip
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipay.protocol import (
    BILL_COLUMNS,
    CHINA_TZ,
    SUMMARY_COLUMNS,
    Bill,
    BillRow,
    BillSummary,
    CommunicationError,
    FieldError,
    parse_bill,
    render_bill,
)


def _row(n: int = 1, **changes: object) -> BillRow:
    data: dict[str, object] = {
        "transaction_time": datetime(2024, 1, 1, 12, 5, 10, tzinfo=CHINA_TZ),
        "appid": "wx8888888888888888",
        "mch_id": "1900000109",
        "sub_mch_id": "1900000110",
        "transaction_id": f"420000000120240101000000000{n}",
        "out_trade_no": f"ORDER2024010100000{n}",
        "openid": "oPq0Ot5Vn3Dxn0J5uEXAMPLEopenid",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "bank_type": "OTHERS",
        "fee_type": "HKD",
        "total_fee": 1000,
        "coupon_fee": 0,
        "refund_fee": 0,
        "coupon_refund_fee": 0,
        "body": "Demo Shop-Coffee",
        "attach": "store=42",
        "service_fee": 6,
        "fee_rate": "0.60%",
        "sub_appid": "wx1234567890abcdef",
        "cash_fee_type": "CNY",
        "cash_fee": 920,
        "rate": 92_000_000,
    }
    data.update(changes)
    return BillRow.model_validate(data)


def test_render_then_parse_round_trips_rows_and_summary() -> None:
    rows = [_row(1), _row(2, trade_state="REFUND", refund_id="50001", out_refund_no="R1", refund_fee=500)]
    bill = parse_bill(render_bill(rows))
    assert bill.rows == rows
    assert bill.summary == BillSummary(
        transaction_count=2,
        total_fee=2000,
        refund_fee=500,
        coupon_refund_fee=0,
        service_fee=12,
        currency="HKD",
        raw=bill.summary.raw if bill.summary else {},
    )
    assert bill.headers == list(BILL_COLUMNS)


def test_rendered_bill_has_wechat_shape() -> None:
    text = render_bill([_row()]).decode()
    lines = text.split("\r\n")
    assert lines[0] == ",".join(BILL_COLUMNS)
    assert lines[1].startswith("`2024-01-01 12:05:10,`wx8888888888888888,")
    assert ",`10.00," in lines[1]
    assert ",`0.92000000" in lines[1]
    assert lines[2] == ",".join(SUMMARY_COLUMNS)
    assert lines[3] == "`1,`10.00,`0.00,`0.00,`0.06"


def test_gzip_bill_is_accepted() -> None:
    assert parse_bill(gzip.compress(render_bill([_row()]))).rows == [_row()]


def test_every_member_of_a_gzip_stream_is_read() -> None:
    text = render_bill([_row(1), _row(2)])
    cut = text.index(b"\r\n", text.index(b"\r\n") + 2) + 2  # after the header and the first row
    bill = parse_bill(gzip.compress(text[:cut]) + gzip.compress(text[cut:]) + b"\x00" * 8)
    assert bill.rows == [_row(1), _row(2)]


@pytest.mark.parametrize(
    "tail", [b"junk", gzip.compress(b"more")[:-4], b"\x1f\x8b"], ids=["junk", "cut-member", "magic-only"]
)
def test_anything_after_the_first_gzip_member_must_be_a_whole_member(tail: bytes) -> None:
    with pytest.raises(FieldError) as info:
        parse_bill(gzip.compress(render_bill([_row()])) + tail)
    assert info.value.field == "bill"


def test_the_size_cap_holds_across_gzip_members() -> None:
    part = gzip.compress(b"`" * (3 * 1024 * 1024))
    with pytest.raises(FieldError, match="exceeds"):
        parse_bill(part + part, max_bytes=5 * 1024 * 1024)


def test_gzip_bomb_is_capped() -> None:
    bomb = gzip.compress(b"`" * (5 * 1024 * 1024))
    with pytest.raises(FieldError, match="exceeds"):
        parse_bill(bomb, max_bytes=1024 * 1024)


def test_no_bill_exist_is_an_empty_bill() -> None:
    body = (
        b"<xml><return_code>FAIL</return_code><return_msg>No Bill Exist</return_msg>"
        b"<error_code>20002</error_code></xml>"
    )
    bill = parse_bill(body)
    assert bill == Bill()
    assert bill.empty


def test_other_bill_failures_raise_communication_error() -> None:
    body = (
        b"<xml><return_code>FAIL</return_code><return_msg>Bill Creating</return_msg>"
        b"<error_code>20003</error_code></xml>"
    )
    with pytest.raises(CommunicationError) as info:
        parse_bill(body)
    assert info.value.operation == "downloadbill"
    assert info.value.err_code == "20003"
    assert info.value.return_msg == "Bill Creating"


def test_columns_are_found_by_name_in_any_order_with_unknown_columns_kept() -> None:
    text = (
        "Vendor order number,Mystery column,Currency type,Total amount,Transaction time\r\n"
        "`A1,`?,`JPY,`1000,`2024-01-01 00:00:01\r\n"
        "Total transactions,Total amount\r\n"
        "`1,`1000\r\n"
    )
    bill = parse_bill(text)
    assert bill.rows[0].out_trade_no == "A1"
    assert bill.rows[0].total_fee == 1000  # JPY has no minor unit
    assert bill.rows[0].extra == {"Mystery column": "?"}
    assert bill.summary is not None
    assert bill.summary.total_fee == 1000


def test_domestic_chinese_headers_are_understood() -> None:
    text = (
        "\ufeff交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
        "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\n"
        "`2024-01-01 12:05:10,`wx8888888888888888,`1900000109,`1900000110,`,`4200,`A1,`oX,`JSAPI,`SUCCESS,"
        "`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡,`,`0.00000,`0.60%\n"
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n"
        "`1,`0.01,`0.00,`0.00,`0.00000,`0.01,`0.00\n"
    )
    bill = parse_bill(text.encode())
    row = bill.rows[0]
    assert row.total_fee == 1
    assert row.body == "咖啡"
    assert row.service_fee == 0
    assert bill.summary is not None
    assert bill.summary.transaction_count == 1
    assert bill.summary.raw["订单总金额"] == "0.01"


def test_bad_amount_in_a_bill_names_the_column() -> None:
    text = "Currency type,Total amount\r\n`HKD,`10.505\r\n"
    with pytest.raises(FieldError) as info:
        parse_bill(text)
    assert info.value.field == "total_fee"


@pytest.mark.parametrize(
    ("header", "cell", "field"),
    [
        ("Total amount", "1e999999999", "total_fee"),
        ("Total amount", "1_000.00", "total_fee"),
        ("Exchange rate", "1e999999999", "rate"),
        ("Exchange rate", "-0.92", "rate"),
        ("Exchange rate", "0.92e1", "rate"),
    ],
)
def test_bill_numbers_must_be_plain_decimals(header: str, cell: str, field: str) -> None:
    text = f"Currency type,{header}\r\n`HKD,`{cell}\r\n"
    with pytest.raises(FieldError) as info:
        parse_bill(text)
    assert info.value.field == field


@pytest.mark.parametrize(
    "text",
    [
        # An unterminated quote: without strict CSV the second row and the summary vanish into one cell.
        'Currency type,Total amount,Product name\r\n`HKD,`10.00,"Coffee\r\n`HKD,`20.00,`Tea\r\n',
        'Currency type,Total amount,Product name\r\n`HKD,`10.00,"Coffee"x\r\n',
        "Currency type,Product name\r\n`HKD,`" + "x" * 200_000 + "\r\n",  # over csv's field size limit
    ],
    ids=["unterminated-quote", "text-after-quote", "huge-cell"],
)
def test_malformed_csv_is_a_field_error_never_a_shorter_bill(text: str) -> None:
    with pytest.raises(FieldError) as info:
        parse_bill(text)
    assert info.value.field == "bill"


def test_an_absurd_transaction_count_is_a_field_error() -> None:
    text = render_bill([_row()]).decode().replace("`1,`10.00", "`" + "9" * 5000 + ",`10.00")
    with pytest.raises(FieldError) as info:
        parse_bill(text)
    assert info.value.field == "transaction_count"


def test_mixed_currency_summary_keeps_raw_text() -> None:
    rows = [_row(1), _row(2, fee_type="USD")]
    summary = BillSummary(transaction_count=2, currency=None)
    bill = parse_bill(render_bill(rows, summary=summary))
    assert bill.summary is not None
    assert bill.summary.currency is None
    assert bill.summary.total_fee is None


def test_mixed_currencies_need_an_explicit_summary() -> None:
    with pytest.raises(ValueError, match="currencies"):
        render_bill([_row(1), _row(2, fee_type="USD")])


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(_TEXT, min_size=1, max_size=5),
    amounts=st.lists(st.integers(min_value=1, max_value=10**10), min_size=5, max_size=5),
)
def test_round_trip_survives_commas_quotes_and_back_ticks_in_text(bodies: list[str], amounts: list[int]) -> None:
    rows = [
        _row(n, body=body.strip() or None, attach=f'a,"b"`{n}', total_fee=amounts[n]) for n, body in enumerate(bodies)
    ]
    assert parse_bill(render_bill(rows)).rows == rows


DOMESTIC_BILL = Path(__file__).parent.parent / "fixtures" / "domestic_partner_bill.csv"


def test_the_documented_domestic_partner_layout_parses_by_header_name() -> None:
    bill = parse_bill(DOMESTIC_BILL.read_bytes())
    first, second, refund = bill.rows
    assert (first.out_trade_no, first.sub_mch_id, first.total_fee, first.fee_type) == (
        "ORDER1",
        "1900000110",
        1000,
        "HKD",
    )
    assert (first.service_fee, first.service_fee_major, first.fee_rate) == (6, None, "0.60%")
    assert (first.order_fee, first.requested_refund_fee, first.fee_rate_remark) == (1000, 0, None)
    assert (second.body, second.attach, second.bank_type) == ("咖啡", "table=7", "CMB_DEBIT")
    assert (refund.trade_state, refund.refund_id, refund.out_refund_no, refund.refund_fee) == (
        "REFUND",
        "5000000001",
        "REFUND1",
        300,
    )
    assert (refund.refund_channel, refund.refund_status, refund.requested_refund_fee) == ("ORIGINAL", "SUCCESS", 300)
    # -0.018 HKD: finer than a cent, kept exactly beside the rounded minor units
    assert (refund.service_fee, refund.service_fee_major) == (-2, Decimal("-0.01800"))
    assert bill.summary == BillSummary(
        transaction_count=3,
        total_fee=3500,
        refund_fee=300,
        coupon_refund_fee=0,
        service_fee=19,
        service_fee_major=Decimal("0.19200"),
        currency="HKD",
        raw={
            "总交易单数": "3",
            "总交易额": "35.00",
            "总退款金额": "3.00",
            "总代金券退款金额": "0.00",
            "手续费总金额": "0.19200",
        },
    )


def _shuffle_columns(text: str, order: list[int], extra: tuple[str, str] | None = None) -> str:
    """The bill with its record columns reordered (``order``: old positions) and one column added."""
    lines = text.strip().split("\r\n")
    body = []
    for n, line in enumerate(lines[:-2]):
        cells = line.split(",")
        cells = [cells[i] for i in order]
        if extra is not None:
            cells.insert(3, extra[0] if n == 0 else "`" + extra[1])
        body.append(",".join(cells))
    return "\r\n".join([*body, *lines[-2:]]) + "\r\n"


def test_shuffled_chinese_columns_and_unknown_columns_give_the_same_rows() -> None:
    text = DOMESTIC_BILL.read_bytes().decode("utf-8")
    width = len(text.split("\r\n")[0].split(","))
    order = list(reversed(range(width)))
    shuffled = parse_bill(_shuffle_columns(text, order, extra=("结算金额", "9.99")))
    plain = parse_bill(text)
    assert [row.model_copy(update={"extra": {}}) for row in shuffled.rows] == plain.rows
    assert all(row.extra == {"结算金额": "9.99"} for row in shuffled.rows)
    assert shuffled.summary == plain.summary


def test_a_fee_to_five_decimals_keeps_its_exact_value() -> None:
    text = (
        "交易时间,商户订单号,货币种类,总金额,手续费\n`2024-01-01 00:00:01,`A1,`CNY,`0.01,`0.00006\n"
        "总交易单数,总交易额,总退款金额,总代金券退款金额,手续费总金额\n`1,`0.01,`0.00,`0.00,`0.00006\n"
    )
    bill = parse_bill(text)
    assert (bill.rows[0].service_fee, bill.rows[0].service_fee_major) == (0, Decimal("0.00006"))
    assert bill.summary is not None
    assert (bill.summary.service_fee, bill.summary.service_fee_major) == (0, Decimal("0.00006"))
    # rendered back (English layout) with the exact fee, and parsed to the same row
    assert parse_bill(render_bill(bill.rows)).rows == bill.rows


@pytest.mark.parametrize("fee", ["0.000000001", "abc", "1e-5"])
def test_a_fee_with_absurd_precision_or_no_number_is_a_field_error(fee: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse_bill(f"商户订单号,货币种类,手续费\n`A1,`CNY,`{fee}\n")
    assert caught.value.field == "service_fee"


def test_refund_bill_times_and_global_columns_are_typed() -> None:
    text = (
        "交易时间,商户订单号,货币种类,总金额,退款申请时间,退款成功时间,退款金额,用户支付币种,用户支付金额,结算币种,汇率\n"
        "`2024-01-01 10:00:00,`A1,`HKD,`10.00,`2024-01-02 09:00:00,`2024-01-02 09:01:00,`3.00,`CNY,`2.76,`HKD,"
        "`0.92000000\n"
    )
    row = parse_bill(text).rows[0]
    assert row.refund_request_time == datetime(2024, 1, 2, 9, 0, tzinfo=CHINA_TZ)
    assert row.refund_success_time == datetime(2024, 1, 2, 9, 1, tzinfo=CHINA_TZ)
    assert (row.refund_fee, row.cash_fee_type, row.cash_fee, row.settlement_fee_type, row.rate) == (
        300,
        "CNY",
        276,
        "HKD",
        92_000_000,
    )
