"""Static checks of the public API, run by mypy (``test_typing.py``); never executed.

Every public call's return type is pinned with ``typing.assert_type``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import assert_type

import httpx2

from minipay import AsyncClient, Client
from minipay.client import (
    Bill,
    ClientCertificate,
    CloseOrderResponse,
    Code2SessionResult,
    ExchangeRate,
    NotificationHandler,
    NotificationReply,
    OrderPaidError,
    OrderQueryResponse,
    PaymentNotification,
    PayParams,
    RefundNotification,
    RefundQueryResponse,
    RefundRecord,
    RefundResponse,
    ResponseSignatureError,
    UnifiedOrderResponse,
    WeChatError,
)
from minipay.protocol import Secret

KEY = "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"


def sync_api(cert: ClientCertificate, transport: httpx2.BaseTransport) -> None:
    with Client(appid="wx8888888888888888", mch_id="1900000109", api_key=KEY, cert=cert, transport=transport) as c:
        assert_type(c, Client)
        order = c.orders.create(
            out_trade_no="O1",
            total_fee=1000,
            fee_type="HKD",
            body="Coffee",
            notify_url="https://merchant.example.com/notify",
            spbill_create_ip="203.0.113.10",
            sub_openid="o1",
            time_expire=datetime.now().astimezone(),
        )
        assert_type(order, UnifiedOrderResponse)
        assert_type(order.prepay_id, str)
        query = c.orders.query(out_trade_no="O1")
        assert_type(query, OrderQueryResponse)
        assert_type(query.trade_state, str)
        assert_type(query.total_fee, int | None)
        assert_type(query.time_end, datetime | None)
        assert_type(c.orders.close(out_trade_no="O1"), CloseOrderResponse)
        refund = c.refunds.create(
            out_refund_no="R1", out_trade_no="O1", total_fee=1000, refund_fee=10, refund_fee_type="HKD"
        )
        assert_type(refund, RefundResponse)
        assert_type(refund.refund_fee, int)
        refunds = c.refunds.query(out_refund_no="R1")
        assert_type(refunds, RefundQueryResponse)
        assert_type(refunds.refunds, list[RefundRecord])
        assert_type(refunds.find("R1"), RefundRecord | None)
        bill = c.bills.download(bill_date=date(2024, 1, 1))
        assert_type(bill, Bill)
        assert_type(bill.raw, bytes)
        rate = c.rates.query(fee_type="HKD", date=date(2024, 1, 1))
        assert_type(rate, ExchangeRate)
        assert_type(rate.rate, int)
        session = c.code_to_session("wx1234567890abcdef", "secret", "code")
        assert_type(session, Code2SessionResult)
        assert_type(session.openid, str)
        assert_type(session.session_key, Secret)
        params = c.pay_params(order.prepay_id, "wx1234567890abcdef")
        assert_type(params, PayParams)
        assert_type(params["paySign"], str)
        assert_type(c.parse_payment_notification(b"<xml/>"), PaymentNotification)
        assert_type(c.parse_refund_notification(b"<xml/>"), RefundNotification)
        assert_type(c.reply_success(), bytes)
        assert_type(c.reply_fail("no"), bytes)
        handler = NotificationHandler(c)
        assert_type(handler.payment(b"", lambda event: None), NotificationReply)
        assert_type(handler.refund(b"", lambda event: None), NotificationReply)
        assert_type(c.hosts, tuple[str, ...])
        try:
            c.orders.close(out_trade_no="O1")
        except OrderPaidError as paid:
            assert_type(paid.operation, str)
            assert_type(paid.ids, dict[str, str])
            assert_type(paid.err_code, str)
            assert_type(paid.err_code_des, str)
            assert_type(paid.retryable, bool)
            assert_type(paid.outcome_unknown, bool)
            assert_type(paid.out_trade_no, str | None)
        except ResponseSignatureError as forged:
            assert_type(forged.operation, str)
            assert_type(forged.ids, dict[str, str])
            assert_type(forged.err_code, str)
            assert_type(forged.outcome_unknown, bool)
            assert_type(forged.out_refund_no, str | None)
        except WeChatError as other:
            assert_type(other.fields, dict[str, str])
    assert_type(ClientCertificate.from_pem(b"cert", b"key"), ClientCertificate)
    assert_type(ClientCertificate.from_p12("apiclient_cert.p12"), ClientCertificate)


async def async_api(transport: httpx2.AsyncBaseTransport) -> None:
    async with AsyncClient(appid="wx8888888888888888", mch_id="1900000109", api_key=KEY, transport=transport) as c:
        assert_type(c, AsyncClient)
        order = await c.orders.create(
            out_trade_no="O1",
            total_fee=1000,
            fee_type="HKD",
            body="Coffee",
            notify_url="https://merchant.example.com/notify",
            spbill_create_ip="203.0.113.10",
            sub_openid="o1",
        )
        assert_type(order, UnifiedOrderResponse)
        assert_type(await c.orders.query(transaction_id="4200000001"), OrderQueryResponse)
        assert_type(await c.orders.close(out_trade_no="O1"), CloseOrderResponse)
        assert_type(
            await c.refunds.create(
                out_refund_no="R1", transaction_id="42", total_fee=1000, refund_fee=10, refund_fee_type="HKD"
            ),
            RefundResponse,
        )
        assert_type(await c.refunds.query(out_trade_no="O1"), RefundQueryResponse)
        assert_type(await c.bills.download(bill_date=date(2024, 1, 1), gzip=True), Bill)
        assert_type(await c.rates.query(fee_type="JPY", date=date(2024, 1, 1)), ExchangeRate)
        assert_type(await c.code_to_session("wx1", "secret", "code"), Code2SessionResult)
        assert_type(c.pay_params(order.prepay_id), PayParams)
        handler = NotificationHandler(c)

        async def on_payment(event: PaymentNotification) -> None:
            assert_type(event.out_trade_no, str | None)

        assert_type(await handler.apayment(b"", on_payment), NotificationReply)

        async def on_refund(event: RefundNotification) -> None:
            assert_type(event.refund_fee, int | None)

        assert_type(await handler.arefund(b"", on_refund), NotificationReply)
