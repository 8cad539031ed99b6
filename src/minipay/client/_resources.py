"""Resource namespaces: ``client.orders``, ``client.refunds``, ``client.bills``, ``client.rates``.

Each method builds the request with the pure base and hands it to its shell; the sync and async
classes have the same methods and signatures (a parity test pins it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from minipay.client._base import BillType
from minipay.client._models import (
    Bill,
    CloseOrderResponse,
    ExchangeRate,
    OrderQueryResponse,
    RefundQueryResponse,
    RefundResponse,
    UnifiedOrderResponse,
    parse_downloaded_bill,
)

if TYPE_CHECKING:
    from minipay.client._async import AsyncClient
    from minipay.client._sync import Client

__all__ = ["AsyncBills", "AsyncOrders", "AsyncRates", "AsyncRefunds", "Bills", "Orders", "Rates", "Refunds"]


class Orders:
    """``client.orders``: unified order, query and close (spec 5, 8, 9)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        out_trade_no: str,
        total_fee: int,
        fee_type: str,
        body: str,
        notify_url: str,
        spbill_create_ip: str,
        sub_openid: str | None = None,
        openid: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
        attach: str | None = None,
        detail: str | None = None,
        time_start: datetime | None = None,
        time_expire: datetime | None = None,
        goods_tag: str | None = None,
        device_info: str | None = None,
        limit_pay: str | None = None,
    ) -> UnifiedOrderResponse:
        """Create the order (``/pay/unifiedorder``, ``trade_type=JSAPI``); returns its ``prepay_id``.

        You choose ``out_trade_no``; on a :class:`ReadTimeoutError` (``outcome_unknown``) query it, or
        call ``create`` again with the *same* arguments: WeChat answers the same ``prepay_id``.
        """
        core = self._client._core
        prepared = core.build_unified_order(
            out_trade_no=out_trade_no,
            total_fee=total_fee,
            fee_type=fee_type,
            body=body,
            notify_url=notify_url,
            spbill_create_ip=spbill_create_ip,
            sub_openid=sub_openid,
            openid=openid,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
            attach=attach,
            detail=detail,
            time_start=time_start,
            time_expire=time_expire,
            goods_tag=goods_tag,
            device_info=device_info,
            limit_pay=limit_pay,
        )
        return core.parse(prepared, UnifiedOrderResponse, self._client._request(prepared, core.check))

    def query(
        self,
        *,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> OrderQueryResponse:
        """Query the order (``/pay/orderquery``) by exactly one of ``out_trade_no`` / ``transaction_id``."""
        core = self._client._core
        prepared = core.build_order_query(
            out_trade_no=out_trade_no, transaction_id=transaction_id, sub_mch_id=sub_mch_id, sub_appid=sub_appid
        )
        return core.parse(prepared, OrderQueryResponse, self._client._request(prepared, core.check))

    def close(
        self, *, out_trade_no: str, sub_mch_id: str | None = None, sub_appid: str | None = None
    ) -> CloseOrderResponse:
        """Close an unpaid order (``/pay/closeorder``); ``OrderPaidError`` means the payer won the race."""
        core = self._client._core
        prepared = core.build_close_order(out_trade_no=out_trade_no, sub_mch_id=sub_mch_id, sub_appid=sub_appid)
        return core.parse(prepared, CloseOrderResponse, self._client._request(prepared, core.check))


class Refunds:
    """``client.refunds``: submit (mutual TLS) and query (spec 10, 11)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        *,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        refund_fee_type: str,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        notify_url: str | None = None,
        refund_desc: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> RefundResponse:
        """Submit a refund (``/secapi/pay/refund``). Acceptance only: follow it with ``refunds.query``.

        Retry a failed or unknown refund with the **same** ``out_refund_no`` (a new number is a new refund).
        """
        core = self._client._core
        prepared = core.build_refund(
            out_refund_no=out_refund_no,
            total_fee=total_fee,
            refund_fee=refund_fee,
            refund_fee_type=refund_fee_type,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            notify_url=notify_url,
            refund_desc=refund_desc,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
        )
        return core.parse(prepared, RefundResponse, self._client._request(prepared, core.check))

    def query(
        self,
        *,
        out_refund_no: str | None = None,
        refund_id: str | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        offset: int | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> RefundQueryResponse:
        """Query refunds (``/pay/refundquery``) by exactly one identifier; ``offset`` pages past 10."""
        core = self._client._core
        prepared = core.build_refund_query(
            out_refund_no=out_refund_no,
            refund_id=refund_id,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            offset=offset,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
        )
        return core.parse(prepared, RefundQueryResponse, self._client._request(prepared, core.check))


class Bills:
    """``client.bills``: the daily statement (spec 13)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def download(
        self, *, bill_date: date, sub_mch_id: str | None = None, bill_type: BillType = "ALL", gzip: bool = False
    ) -> Bill:
        """Download and parse the bill of ``bill_date`` (a China-time day); "No Bill Exist" is an empty bill.

        ``bill.raw`` keeps the bytes as received (gzip when ``gzip=True``).
        """
        core = self._client._core
        prepared = core.build_bill(bill_date=bill_date, sub_mch_id=sub_mch_id, bill_type=bill_type, gzip=gzip)
        return parse_downloaded_bill(self._client._request(prepared, core.check_bill), prepared.ids)


class Rates:
    """``client.rates``: the exchange rate WeChat uses (spec 14; the path really is ``queryexchagerate``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def query(self, *, fee_type: str, date: date, sub_mch_id: str | None = None) -> ExchangeRate:
        """CNY per one major unit of ``fee_type`` on ``date``, as an int scaled by 10^8."""
        core = self._client._core
        prepared = core.build_rate_query(fee_type=fee_type, date=date, sub_mch_id=sub_mch_id)
        return core.parse(prepared, ExchangeRate, self._client._request(prepared, core.check))


class AsyncOrders:
    """``async_client.orders``: unified order, query and close (spec 5, 8, 9)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        out_trade_no: str,
        total_fee: int,
        fee_type: str,
        body: str,
        notify_url: str,
        spbill_create_ip: str,
        sub_openid: str | None = None,
        openid: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
        attach: str | None = None,
        detail: str | None = None,
        time_start: datetime | None = None,
        time_expire: datetime | None = None,
        goods_tag: str | None = None,
        device_info: str | None = None,
        limit_pay: str | None = None,
    ) -> UnifiedOrderResponse:
        """Create the order (``/pay/unifiedorder``, ``trade_type=JSAPI``); returns its ``prepay_id``.

        You choose ``out_trade_no``; on a :class:`ReadTimeoutError` (``outcome_unknown``) query it, or
        call ``create`` again with the *same* arguments: WeChat answers the same ``prepay_id``.
        """
        core = self._client._core
        prepared = core.build_unified_order(
            out_trade_no=out_trade_no,
            total_fee=total_fee,
            fee_type=fee_type,
            body=body,
            notify_url=notify_url,
            spbill_create_ip=spbill_create_ip,
            sub_openid=sub_openid,
            openid=openid,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
            attach=attach,
            detail=detail,
            time_start=time_start,
            time_expire=time_expire,
            goods_tag=goods_tag,
            device_info=device_info,
            limit_pay=limit_pay,
        )
        return core.parse(prepared, UnifiedOrderResponse, await self._client._request(prepared, core.check))

    async def query(
        self,
        *,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> OrderQueryResponse:
        """Query the order (``/pay/orderquery``) by exactly one of ``out_trade_no`` / ``transaction_id``."""
        core = self._client._core
        prepared = core.build_order_query(
            out_trade_no=out_trade_no, transaction_id=transaction_id, sub_mch_id=sub_mch_id, sub_appid=sub_appid
        )
        return core.parse(prepared, OrderQueryResponse, await self._client._request(prepared, core.check))

    async def close(
        self, *, out_trade_no: str, sub_mch_id: str | None = None, sub_appid: str | None = None
    ) -> CloseOrderResponse:
        """Close an unpaid order (``/pay/closeorder``); ``OrderPaidError`` means the payer won the race."""
        core = self._client._core
        prepared = core.build_close_order(out_trade_no=out_trade_no, sub_mch_id=sub_mch_id, sub_appid=sub_appid)
        return core.parse(prepared, CloseOrderResponse, await self._client._request(prepared, core.check))


class AsyncRefunds:
    """``async_client.refunds``: submit (mutual TLS) and query (spec 10, 11)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        refund_fee_type: str,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        notify_url: str | None = None,
        refund_desc: str | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> RefundResponse:
        """Submit a refund (``/secapi/pay/refund``). Acceptance only: follow it with ``refunds.query``.

        Retry a failed or unknown refund with the **same** ``out_refund_no`` (a new number is a new refund).
        """
        core = self._client._core
        prepared = core.build_refund(
            out_refund_no=out_refund_no,
            total_fee=total_fee,
            refund_fee=refund_fee,
            refund_fee_type=refund_fee_type,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            notify_url=notify_url,
            refund_desc=refund_desc,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
        )
        return core.parse(prepared, RefundResponse, await self._client._request(prepared, core.check))

    async def query(
        self,
        *,
        out_refund_no: str | None = None,
        refund_id: str | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        offset: int | None = None,
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
    ) -> RefundQueryResponse:
        """Query refunds (``/pay/refundquery``) by exactly one identifier; ``offset`` pages past 10."""
        core = self._client._core
        prepared = core.build_refund_query(
            out_refund_no=out_refund_no,
            refund_id=refund_id,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            offset=offset,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
        )
        return core.parse(prepared, RefundQueryResponse, await self._client._request(prepared, core.check))


class AsyncBills:
    """``async_client.bills``: the daily statement (spec 13)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def download(
        self, *, bill_date: date, sub_mch_id: str | None = None, bill_type: BillType = "ALL", gzip: bool = False
    ) -> Bill:
        """Download and parse the bill of ``bill_date`` (a China-time day); "No Bill Exist" is an empty bill.

        ``bill.raw`` keeps the bytes as received (gzip when ``gzip=True``).
        """
        core = self._client._core
        prepared = core.build_bill(bill_date=bill_date, sub_mch_id=sub_mch_id, bill_type=bill_type, gzip=gzip)
        return parse_downloaded_bill(await self._client._request(prepared, core.check_bill), prepared.ids)


class AsyncRates:
    """``async_client.rates``: the exchange rate WeChat uses (spec 14; the path really is ``queryexchagerate``)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def query(self, *, fee_type: str, date: date, sub_mch_id: str | None = None) -> ExchangeRate:
        """CNY per one major unit of ``fee_type`` on ``date``, as an int scaled by 10^8."""
        core = self._client._core
        prepared = core.build_rate_query(fee_type=fee_type, date=date, sub_mch_id=sub_mch_id)
        return core.parse(prepared, ExchangeRate, await self._client._request(prepared, core.check))
