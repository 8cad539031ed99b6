"""The pure domain: forward-only state machines and money rules (no database, no network)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minipay.protocol import PaymentNotification, RefundNotification
from minipay.server.domain import (
    PAYMENT_FIXED_FIELDS,
    ApplyOutcome,
    Payment,
    PaymentResult,
    PaymentStatus,
    Refund,
    RefundNotAllowed,
    RefundResult,
    RefundStatus,
)

NOW = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def payment(**changes: object) -> Payment:
    values: dict[str, object] = {
        "id": "pay_1",
        "institution": "i",
        "appid": "wx8888888888888888",
        "mch_id": "1900000109",
        "sub_mch_id": "1900000110",
        "sub_appid": "wx1234567890abcdef",
        "out_trade_no": "O1",
        "amount": 1000,
        "currency": "HKD",
        "description": "d",
        "openid": "o",
        "client_ip": "127.0.0.1",
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(changes)
    return Payment(**values)  # type: ignore[arg-type]


def success(**changes: str) -> PaymentResult:
    fields = {
        "out_trade_no": "O1",
        "appid": "wx8888888888888888",
        "mch_id": "1900000109",
        "sub_mch_id": "1900000110",
        "transaction_id": "42",
        "total_fee": "1000",
        "fee_type": "HKD",
        "time_end": "20260302120510",
        "result_code": "SUCCESS",
    }
    fields.update(changes)
    return PaymentResult.from_notification(PaymentNotification.from_fields({"return_code": "SUCCESS", **fields}))


def test_a_payment_is_paid_exactly_once() -> None:
    p = payment(status=PaymentStatus.PENDING)
    assert p.paid(success(), NOW) is ApplyOutcome.APPLIED
    assert p.status is PaymentStatus.SUCCEEDED
    assert p.paid_at == datetime(2026, 3, 2, 4, 5, 10, tzinfo=UTC)
    assert [e.webhook for e in p.events] == ["payment.succeeded"]
    assert p.paid(success(), NOW) is ApplyOutcome.DUPLICATE
    assert len(p.events) == 1


def test_close_never_undoes_a_payment_and_money_after_close_is_flagged() -> None:
    paid = payment(status=PaymentStatus.SUCCEEDED)
    assert paid.closed(NOW, "expired") is ApplyOutcome.NO_CHANGE
    assert paid.status is PaymentStatus.SUCCEEDED
    closed = payment(status=PaymentStatus.PENDING)
    assert closed.closed(NOW, "expired") is ApplyOutcome.APPLIED
    assert closed.paid(success(), NOW) is ApplyOutcome.APPLIED
    assert (closed.status, closed.paid_after_close) == (PaymentStatus.SUCCEEDED, True)
    assert [e.webhook for e in closed.events] == ["payment.closed", "payment.paid_after_close"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"total_fee": "999"}, "total_fee"),
        ({"fee_type": "CNY"}, "fee_type"),
        ({"sub_mch_id": "1900000111"}, "sub_mch_id"),
        ({"appid": "wx0000000000000000"}, "appid"),
        ({"mch_id": "1"}, "mch_id"),
        ({"transaction_id": ""}, "transaction_id"),
    ],
)
def test_mismatching_results_are_named(changes: dict[str, str], reason: str) -> None:
    assert payment().mismatch(success(**changes)) == reason


def test_a_result_without_fee_type_means_cny() -> None:
    assert payment().mismatch(success(fee_type="")) == "fee_type"
    assert payment(currency="CNY").mismatch(success(fee_type="")) is None


@pytest.mark.parametrize("value", ["１０００", "1000 ", "+1000", "1_000", "²"])
def test_amounts_must_be_plain_ascii_digits(value: str) -> None:
    with pytest.raises(ValueError, match="total_fee"):
        success(total_fee=value)


def test_refunds_respect_the_remainder() -> None:
    p = payment(status=PaymentStatus.SUCCEEDED)
    p.check_refundable(600, reserved=400)
    with pytest.raises(RefundNotAllowed):
        p.check_refundable(601, reserved=400)
    with pytest.raises(RefundNotAllowed):
        p.check_refundable(0, reserved=0)
    with pytest.raises(RefundNotAllowed):
        payment(status=PaymentStatus.PENDING).check_refundable(1, reserved=0)
    p.refund_succeeded(400, NOW)
    assert p.status is PaymentStatus.PARTIALLY_REFUNDED
    p.refund_succeeded(600, NOW)
    assert p.status is PaymentStatus.REFUNDED


def test_refund_states_move_forward_only() -> None:
    r = Refund(
        id="re_1",
        payment_id="pay_1",
        sub_mch_id="s",
        mch_id="m",
        out_refund_no="R1",
        amount=100,
        currency="HKD",
        created_at=NOW,
        updated_at=NOW,
    )
    assert r.accepted("wxr1", NOW) is ApplyOutcome.APPLIED
    assert r.status is RefundStatus.PROCESSING
    ok = RefundResult.from_notification(
        RefundNotification.from_fields(
            {
                "return_code": "SUCCESS",
                "out_refund_no": "R1",
                "refund_status": "SUCCESS",
                "success_time": "2026-03-02 12:01:00",
            }
        )
    )
    assert r.succeeded(ok, NOW) is ApplyOutcome.APPLIED
    assert r.failed("REFUNDCLOSE", NOW) is ApplyOutcome.NO_CHANGE
    assert r.status is RefundStatus.SUCCEEDED
    assert r.succeeded(ok, NOW) is ApplyOutcome.DUPLICATE


STATES = ["SUCCESS", "REFUND", "NOTPAY", "USERPAYING", "CLOSED", "REVOKED", "PAYERROR"]
ORDER = {
    PaymentStatus.CREATED: 0,
    PaymentStatus.PENDING: 1,
    PaymentStatus.CLOSED: 2,
    PaymentStatus.SUCCEEDED: 3,
    PaymentStatus.PARTIALLY_REFUNDED: 4,
    PaymentStatus.REFUNDED: 5,
}


@given(
    st.lists(st.tuples(st.sampled_from(["result", "close", "refund"]), st.sampled_from(STATES), st.integers(1, 400)))
)
def test_any_sequence_of_answers_pays_at_most_once_and_never_moves_back(
    steps: list[tuple[str, str, int]],
) -> None:
    p = payment(status=PaymentStatus.PENDING)
    fixed = {name: getattr(p, name) for name in PAYMENT_FIXED_FIELDS}
    refunded = 0
    for kind, state, amount in steps:
        before = p.status
        if kind == "result":
            if state in ("SUCCESS", "REFUND"):
                p.paid(success(), NOW)
            elif state in ("CLOSED", "REVOKED", "PAYERROR"):
                p.closed(NOW, state)
        elif kind == "close":
            p.closed(NOW, "merchant")
        else:
            try:
                p.check_refundable(amount, refunded)
            except RefundNotAllowed:
                pass
            else:
                refunded += amount
                p.refund_succeeded(amount, NOW)
        # Forward only (closed -> succeeded is the flagged pay-after-close).
        assert ORDER[p.status] >= ORDER[before]
        assert p.refunded_amount == refunded <= p.amount
        # What a save leaves as it is never changes (repositories write the other fields only).
        assert {name: getattr(p, name) for name in PAYMENT_FIXED_FIELDS} == fixed
    paid_events = [e for e in p.events if e.webhook in ("payment.succeeded", "payment.paid_after_close")]
    assert len(paid_events) <= 1
    assert (p.status in (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)) == (
        len(paid_events) == 1
    )
