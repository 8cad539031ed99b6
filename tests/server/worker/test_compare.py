"""Reconciliation's pure comparison: every difference, and nothing else, becomes a discrepancy."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipay.server.worker import DISCREPANCY_KINDS, Discrepancy, RefundRecord, TradeRecord, compare

SUB = "1900000110"
T1 = TradeRecord(SUB, "ORDER1", "4200000001", 1000, "HKD")
T2 = TradeRecord(SUB, "ORDER2", "4200000002", 2500, "HKD")
R1 = RefundRecord(SUB, "ORDER1", "REFUND1", "5000000001", 300, "HKD")


def test_identical_bill_and_ledger_give_no_discrepancy() -> None:
    assert compare([T1, T2], [T2, T1], [R1], [R1]) == []


def test_an_extra_trade_and_a_missing_trade_give_exactly_two_discrepancies() -> None:
    extra = TradeRecord(SUB, "NEVERSEEN", "4200000009", 700, "HKD")
    found = compare([T1, extra], [T1, T2])
    assert [(d.kind, d.out_trade_no) for d in found] == [
        ("missing_in_ledger", "NEVERSEEN"),
        ("missing_in_bill", "ORDER2"),
    ]
    assert found[0].bill == extra.as_json()
    assert found[0].ledger is None
    assert found[1].ledger == T2.as_json()


def test_amount_and_currency_differences_are_reported_with_both_sides() -> None:
    (amount,) = compare([T1], [replace(T1, total_fee=999)])
    assert amount.kind == "amount_mismatch"
    assert amount.bill is not None
    assert amount.bill["total_fee"] == 1000
    assert amount.ledger is not None
    assert amount.ledger["total_fee"] == 999
    (currency,) = compare([T1], [replace(T1, fee_type="CNY")])
    assert currency.kind == "currency_mismatch"


def test_a_different_transaction_id_is_reported() -> None:
    (found,) = compare([T1], [replace(T1, transaction_id="4299999999")])
    assert found.kind == "transaction_id_mismatch"


def test_refund_differences_are_reported() -> None:
    other = RefundRecord(SUB, "ORDER2", "REFUND2", None, 100, "HKD")
    kinds = {(d.kind, d.out_refund_no) for d in compare([], [], [R1], [other])}
    assert kinds == {("refund_missing_in_ledger", "REFUND1"), ("refund_missing_in_bill", "REFUND2")}
    (amount,) = compare([], [], [R1], [replace(R1, refund_fee=299)])
    assert amount.kind == "refund_amount_mismatch"
    (currency,) = compare([], [], [R1], [replace(R1, fee_type="CNY")])
    assert currency.kind == "refund_currency_mismatch"


def test_a_trade_listed_twice_in_the_bill_is_reported() -> None:
    (found,) = compare([T1, T1], [T1])
    assert found.kind == "duplicate_in_bill"


def test_a_refund_listed_twice_in_the_bill_is_reported() -> None:
    (found,) = compare([], [], [R1, R1], [R1])
    assert (found.kind, found.out_refund_no) == ("refund_duplicate_in_bill", R1.out_refund_no)


def test_an_unknown_discrepancy_kind_is_refused() -> None:
    assert "missing_in_bill" in DISCREPANCY_KINDS
    with pytest.raises(ValueError, match="unknown discrepancy kind"):
        Discrepancy(kind="oops", sub_mch_id=SUB, detail="")


_trades = st.lists(
    st.builds(
        TradeRecord,
        sub_mch_id=st.just(SUB),
        out_trade_no=st.text("ABC123", min_size=1, max_size=8),
        transaction_id=st.text("0123456789", min_size=10, max_size=10),
        total_fee=st.integers(1, 10**9),
        fee_type=st.sampled_from(["HKD", "CNY", "JPY"]),
    ),
    max_size=20,
    unique_by=lambda t: t.out_trade_no,
)


@given(trades=_trades, data=st.data())
def test_dropping_trades_from_either_side_reports_exactly_those(trades: list[TradeRecord], data: st.DataObject) -> None:
    assert compare(trades, list(reversed(trades))) == []
    dropped_from_bill = data.draw(st.sets(st.sampled_from(trades)) if trades else st.just(set()))
    rest = [t for t in trades if t not in dropped_from_bill]
    dropped_from_ledger = data.draw(st.sets(st.sampled_from(rest)) if rest else st.just(set()))
    bill = [t for t in trades if t not in dropped_from_bill]
    ledger = [t for t in trades if t not in dropped_from_ledger]
    found = {(d.kind, d.out_trade_no) for d in compare(bill, ledger)}
    expected = {("missing_in_bill", t.out_trade_no) for t in dropped_from_bill}
    expected |= {("missing_in_ledger", t.out_trade_no) for t in dropped_from_ledger}
    assert found == expected
