"""``AsyncClient``: the asynchronous shell. It only sends; everything else is in :class:`BaseClient`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

import anyio
import httpx2

from minipay.client._base import BaseClient, Prepared
from minipay.client._certs import ClientCertificate, VerifyTypes, build_ssl_context
from minipay.client._events import EventHook
from minipay.client._models import Code2SessionResult
from minipay.client._operations import LOGIN, Operation, Region
from minipay.client._resources import AsyncBills, AsyncOrders, AsyncRates, AsyncRefunds
from minipay.client._retry import Backoff
from minipay.client._shell import XML_HEADERS, Attempts, PureMethods, install_log_redaction, transport_error
from minipay.protocol import ApiKey, ConfigurationError, MinipayError, Secret, SignType

__all__ = ["AsyncClient"]

_T = TypeVar("_T")


class AsyncClient(PureMethods):
    """WeChat Pay Global v2 for one institution, asynchronous. Safe to share across tasks.

    >>> async with AsyncClient(appid="wx8888888888888888", mch_id="1900000109", api_key=key,
    ...                        sub_mch_id="1900000110", sub_appid="wx1234567890abcdef") as client:  # doctest: +SKIP
    ...     order = await client.orders.create(out_trade_no="ORDER1", total_fee=1000, fee_type="HKD", ...)
    ...     params = client.pay_params(order.prepay_id)

    The same arguments and methods as :class:`Client`; network methods are coroutines.
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
        http_client: httpx2.AsyncClient | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_retries: int = 2,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
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
        self._sleep: Callable[[float], Awaitable[None]] = sleep if sleep is not None else anyio.sleep
        self._timeout = httpx2.Timeout(
            connect=self._core.connect_timeout,
            read=self._core.read_timeout,
            write=self._core.read_timeout,
            pool=self._core.connect_timeout,
        )
        self._owned: list[httpx2.AsyncClient] = []
        # Injected clients/transports bring their own TLS setup (or need none: the sandbox, tests).
        self._mtls_ready = cert is not None or http_client is not None or transport is not None
        if http_client is not None:
            self._http = http_client
        elif transport is not None:
            self._http = self._own(httpx2.AsyncClient(transport=transport, timeout=self._timeout))
        else:
            # One TLS context: with a certificate it is offered only to servers that ask for one
            # (WeChat's /secapi hosts), so every call can share the connection pool.
            context = build_ssl_context(verify, cert, mch_id=self._core.mch_id)
            self._http = self._own(httpx2.AsyncClient(verify=context, timeout=self._timeout))
        self.orders = AsyncOrders(self)
        self.refunds = AsyncRefunds(self)
        self.bills = AsyncBills(self)
        self.rates = AsyncRates(self)

    def _own(self, client: httpx2.AsyncClient) -> httpx2.AsyncClient:
        self._owned.append(client)
        return client

    async def aclose(self) -> None:
        """Close the HTTP connections this client opened (an injected ``http_client`` is left open)."""
        for client in self._owned:
            await client.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the only I/O ---------------------------------------------------------------------------

    async def _run(
        self,
        operation: Operation,
        ids: dict[str, str],
        hosts: tuple[str, ...],
        send: Callable[[str], Awaitable[httpx2.Response]],
        check: Callable[[int, bytes], _T],
        *,
        chain: bool = True,
    ) -> _T:
        attempts = Attempts(self._core, operation, ids, hosts)
        while True:
            host = attempts.begin()
            try:
                response = await send(host)
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
                    await self._sleep(decision.delay)
                continue
            attempts.succeeded()
            return result

    async def _request(self, prepared: Prepared, check: Callable[[Prepared, int, bytes], _T]) -> _T:
        operation = prepared.operation
        if operation.mtls:
            self._core.require_cert(self._mtls_ready)
        http = self._http

        async def send(host: str) -> httpx2.Response:
            body = self._core.encode(prepared)  # a fresh nonce and signature on every attempt
            return await http.post(host + operation.path, content=body, headers=XML_HEADERS)

        return await self._run(
            operation,
            dict(prepared.ids),
            self._core.hosts,
            send,
            lambda status, content: check(prepared, status, content),
        )

    async def code_to_session(self, appid: str, secret: str | Secret, js_code: str) -> Code2SessionResult:
        """Mini Program login (spec 4): exchange the ``wx.login()`` code for the payer's ``openid``.

        ``appid``/``secret`` are the Mini Program's (its AppID is the ``sub_appid``). Use
        ``result.openid`` as ``sub_openid``; ``result.session_key`` is a masked secret.
        Raises :class:`LoginError` (``retryable`` for -1 and 45011; -1 is retried automatically).
        """
        params = self._core.login_params(appid, secret, js_code)
        url = self._core.login_url()

        async def send(host: str) -> httpx2.Response:
            return await self._http.get(url, params=params)

        return await self._run(LOGIN, {}, (self._core.login_base_url,), send, self._core.check_login, chain=False)
