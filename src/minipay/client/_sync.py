"""``Client`` and its resources (``orders``, ``refunds``, ``bills``, ``rates``): the synchronous shell.

It only sends; requests are built and answers checked by the pure :class:`BaseClient`. Each resource
method keeps its explicit keyword signature for editors and type checkers.
"""

# Generated from _async.py by scripts/unasync.py: edit that file, then run it.

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import TypeVar

import httpx2

from minipay.client._base import BaseClient, BillType, Prepared
from minipay.client._certs import ClientCertificate, VerifyTypes, build_ssl_context
from minipay.client._events import EventHook
from minipay.client._models import (
    Bill,
    CloseOrderResponse,
    Code2SessionResult,
    ExchangeRate,
    OrderQueryResponse,
    RefundQueryResponse,
    RefundResponse,
    UnifiedOrderResponse,
    parse_downloaded_bill,
)
from minipay.client._operations import LOGIN, Operation, Region
from minipay.client._retry import Backoff
from minipay.client._shell import XML_HEADERS, Attempts, PureMethods, install_log_redaction, transport_error
from minipay.protocol import ApiKey, ConfigurationError, MinipayError, Secret, SignType

__all__ = ["Bills", "Client", "Orders", "Rates", "Refunds"]

_T = TypeVar("_T")


class Client(PureMethods):
    """WeChat Pay Global v2 for one institution, synchronous. Safe to share across threads.

    >>> with Client(appid="wx8888888888888888", mch_id="1900000109", api_key=key,
    ...                        sub_mch_id="1900000110", sub_appid="wx1234567890abcdef") as client:  # doctest: +SKIP
    ...     order = client.orders.create(out_trade_no="ORDER1", total_fee=1000, fee_type="HKD", ...)
    ...     params = client.pay_params(order.prepay_id)

    ``sub_mch_id``/``sub_appid`` are defaults; every call may name another sub-merchant. See
    ``docs/client.md`` for every argument; both clients (sync and async) take the same ones.
    """

    def __init__(
        self,
        *,
        appid: str,
        mch_id: str,
        api_key: str | ApiKey,
        sign_type: SignType = "MD5",
        sub_mch_id: str | None = None,
        sub_appid: str | None = None,
        region: Region = "HK",
        base_url: str | None = None,
        failover: Sequence[str] = (),
        login_base_url: str = "https://api.weixin.qq.com",
        cert: ClientCertificate | None = None,
        verify: VerifyTypes = True,
        http_client: httpx2.Client | None = None,
        transport: httpx2.BaseTransport | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_retries: int = 2,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
        on_event: EventHook | None = None,
        logger: logging.Logger | None = None,
        allow_local_notify_url: bool = False,
    ) -> None:
        self._core = BaseClient(
            appid=appid,
            mch_id=mch_id,
            api_key=api_key,
            sign_type=sign_type,
            sub_mch_id=sub_mch_id,
            sub_appid=sub_appid,
            region=region,
            base_url=base_url,
            failover=failover,
            login_base_url=login_base_url,
            cert=cert,
            verify=verify,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_retries=max_retries,
            backoff=backoff,
            clock=clock,
            random=random,
            on_event=on_event,
            logger=logger,
            allow_local_notify_url=allow_local_notify_url,
        )
        if http_client is not None and transport is not None:
            raise ConfigurationError("pass http_client or transport, not both")
        install_log_redaction()
        self._sleep: Callable[[float], None] = sleep if sleep is not None else time.sleep
        self._timeout = httpx2.Timeout(
            connect=self._core.connect_timeout,
            read=self._core.read_timeout,
            write=self._core.read_timeout,
            pool=self._core.connect_timeout,
        )
        self._owned: list[httpx2.Client] = []
        # Injected clients/transports bring their own TLS setup (or need none: the sandbox, tests).
        self._mtls_ready = cert is not None or http_client is not None or transport is not None
        if http_client is not None:
            self._http = http_client
        elif transport is not None:
            self._http = self._own(httpx2.Client(transport=transport, timeout=self._timeout))
        else:
            # One TLS context: with a certificate it is offered only to servers that ask for one
            # (WeChat's /secapi hosts), so every call can share the connection pool.
            context = build_ssl_context(verify, cert, mch_id=self._core.mch_id)
            self._http = self._own(httpx2.Client(verify=context, timeout=self._timeout))
        self.orders = Orders(self)
        self.refunds = Refunds(self)
        self.bills = Bills(self)
        self.rates = Rates(self)

    def _own(self, client: httpx2.Client) -> httpx2.Client:
        self._owned.append(client)
        return client

    def close(self) -> None:
        """Close the HTTP connections this client opened (an injected ``http_client`` is left open)."""
        for client in self._owned:
            client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the only I/O ---------------------------------------------------------------------------

    def _run(
        self,
        operation: Operation,
        ids: dict[str, str],
        hosts: tuple[str, ...],
        send: Callable[[str], httpx2.Response],
        check: Callable[[int, bytes], _T],
        *,
        chain: bool = True,
    ) -> _T:
        attempts = Attempts(self._core, operation, ids, hosts)
        while True:
            host = attempts.begin()
            try:
                response = send(host)
            except httpx2.RequestError as exc:
                failure: MinipayError | None = transport_error(exc, operation, ids)
                cause = exc if chain else None
            else:
                failure = cause = None
            try:
                if failure is not None:
                    # Raised here, not in the handler above: with chain=False (the login URL holds the
                    # app secret) not even __context__ keeps the httpx2 exception and its request.
                    raise failure from cause
                result = check(response.status_code, response.content)
            except MinipayError as error:
                decision = attempts.failed(error)
                if decision.action == "raise":
                    raise
                if decision.delay > 0:
                    self._sleep(decision.delay)
                continue
            attempts.succeeded()
            return result

    def _request(self, prepared: Prepared, check: Callable[[Prepared, int, bytes], _T]) -> _T:
        operation = prepared.operation
        if operation.mtls:
            self._core.require_cert(self._mtls_ready)
        http = self._http

        def send(host: str) -> httpx2.Response:
            body = self._core.encode(prepared)  # a fresh nonce and signature on every attempt
            return http.post(self._core.url(host, operation), content=body, headers=XML_HEADERS)

        return self._run(
            operation,
            dict(prepared.ids),
            self._core.hosts,
            send,
            lambda status, content: check(prepared, status, content),
        )

    def code_to_session(self, appid: str, secret: str | Secret, js_code: str) -> Code2SessionResult:
        """Mini Program login (spec 4): exchange the ``wx.login()`` code for the payer's ``openid``.

        ``appid``/``secret`` are the Mini Program's (its AppID is the ``sub_appid``). Use
        ``result.openid`` as ``sub_openid``; ``result.session_key`` is a masked secret.
        Raises :class:`LoginError` (``retryable`` for -1 and 45011; -1 is retried automatically).
        """
        params = self._core.login_params(appid, secret, js_code)
        url = self._core.login_url()

        def send(host: str) -> httpx2.Response:
            return self._http.get(url, params=params)

        return self._run(LOGIN, {}, (self._core.login_base_url,), send, self._core.check_login, chain=False)


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
