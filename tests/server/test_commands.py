"""The payment a ``CreatePayment`` makes, and the unified order made of a stored payment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from minipay.server.commands import CreatePayment, new_payment
from minipay.server.domain import PaymentStatus
from minipay.server.ports import OrderRequest
from minipay.server.settings import InstitutionSettings, SubMerchantSettings

NOW = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
INST = InstitutionSettings(name="hk", appid="wx8888888888888888", mch_id="1900000109", api_key=SecretStr("k" * 32))
SUB = SubMerchantSettings(
    institution="hk", sub_mch_id="1900000110", sub_appid="wx1234567890abcdef", app_secret=SecretStr("s"), currency="HKD"
)


def test_new_payment_takes_the_command_the_checked_values_and_the_merchants() -> None:
    cmd = CreatePayment(
        amount=1000,
        currency="hkd",
        description="Coffee",
        openid="o1",
        attach="table 4",
        metadata={"order": 7},  # type: ignore[dict-item]
    )
    payment = new_payment(
        cmd, INST, SUB, out_trade_no="O1", currency="HKD", client_ip="10.0.0.1", expires_in=900, now=NOW
    )
    assert payment.id.startswith("pay_")
    assert (payment.institution, payment.appid, payment.mch_id) == ("hk", "wx8888888888888888", "1900000109")
    assert (payment.sub_mch_id, payment.sub_appid) == ("1900000110", "wx1234567890abcdef")
    assert (payment.out_trade_no, payment.amount, payment.currency) == ("O1", 1000, "HKD")
    assert (payment.description, payment.openid, payment.client_ip, payment.attach) == (
        "Coffee",
        "o1",
        "10.0.0.1",
        "table 4",
    )
    assert payment.metadata == {"order": "7"}
    assert payment.created_at == payment.updated_at == NOW
    assert payment.expires_at == NOW + timedelta(seconds=900)
    assert payment.status is PaymentStatus.CREATED
    assert payment.prepay_id is None
    assert payment.version == 0
    other = new_payment(
        cmd, INST, SUB, out_trade_no="O2", currency="HKD", client_ip="10.0.0.1", expires_in=900, now=NOW
    )
    assert other.id != payment.id


def test_the_unified_order_of_a_payment_is_made_of_its_stored_fields() -> None:
    cmd = CreatePayment(amount=1000, currency="HKD", description="Coffee", openid="o1", attach="table 4")
    payment = new_payment(
        cmd, INST, SUB, out_trade_no="O1", currency="HKD", client_ip="10.0.0.1", expires_in=900, now=NOW
    )
    assert OrderRequest.for_payment(payment, "https://shop.example/wechatpay/notify/payment") == OrderRequest(
        out_trade_no="O1",
        total_fee=1000,
        fee_type="HKD",
        body="Coffee",
        notify_url="https://shop.example/wechatpay/notify/payment",
        sub_openid="o1",
        spbill_create_ip="10.0.0.1",
        time_start=NOW,
        time_expire=NOW + timedelta(seconds=900),
        attach="table 4",
    )
