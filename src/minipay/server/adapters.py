"""Adapters for the ports: clocks, the WeChat gateway over the SDK, the webhook sender."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import httpx2

from minipay.client import AsyncClient, ClientCertificate, ClientEvent
from minipay.protocol import MinipayError, PayParams
from minipay.server.domain import PaymentResult, RefundResult
from minipay.server.ports import LoginResult, OrderRequest, RefundRequest
from minipay.server.settings import InstitutionSettings, Settings, SubMerchantSettings
from minipay.server.webhooks import Resolver, pin_address

__all__ = ["ClientGateway", "HttpWebhookSender", "OffsetClock", "SystemClock", "system_resolver"]


#: Seconds (of the monotonic clock) the gateway answers the same signed ``pay_params`` for a
#: prepay_id: ``wx.requestPayment`` takes them as often as the mini program calls it while the
#: prepay_id lives, and a result page polling its payment would otherwise have them signed anew at
#: each read (~7 % of a read's CPU). Their ``timeStamp`` is then at most this old.
PAY_PARAMS_REUSE = 60.0
#: The most signed ``pay_params`` the gateway keeps (the oldest go first).
PAY_PARAMS_KEPT = 4096


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The real time shifted by a settable offset; ``set(now)`` makes ``now()`` continue from ``now``.

    The worker and the demo keep it in step with the sandbox's virtual clock
    (``clock.set(datetime.fromisoformat((await http.get("/sandbox/clock")).json()["now"]))``).
    With ``frozen=True`` time does not move at all between ``set`` calls.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._frozen = frozen
        self._offset = timedelta(0)
        self._pinned: datetime | None = None
        if start is not None:
            self.set(start)

    def set(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")
        with self._lock:
            if self._frozen:
                self._pinned = now.astimezone(UTC)
            else:
                self._offset = now - datetime.now(UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen:
                self._pinned = (self._pinned or datetime.now(UTC)) + timedelta(seconds=seconds)
            else:
                self._offset += timedelta(seconds=seconds)

    def now(self) -> datetime:
        with self._lock:
            if self._frozen:
                return self._pinned or datetime.now(UTC)
            return datetime.now(UTC) + self._offset


class ClientGateway:
    """The :class:`~minipay.server.ports.PaymentGateway` over :class:`minipay.AsyncClient`: one client per
    institution, the sub-merchant given per call."""

    def __init__(self, settings: Settings, *, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._clients: dict[str, AsyncClient] = {}
        # (sub_mch_id, prepay_id) -> (when signed, time.monotonic(); the pay_params)
        self._signed: dict[tuple[str, str], tuple[float, PayParams]] = {}
        #: Hooks that see every WeChat call attempt (:class:`minipay.client.ClientEvent`): metrics, traces.
        self.observers: list[Callable[[ClientEvent], None]] = []
        for inst in settings.institutions:
            cert = None
            if inst.p12 is not None:
                password = inst.p12_password.get_secret_value() if inst.p12_password else None
                cert = ClientCertificate.from_p12(inst.p12, password)
            elif inst.cert_pem is not None and inst.key_pem is not None:
                cert = ClientCertificate.from_pem(inst.cert_pem, inst.key_pem)
            self._clients[inst.name] = AsyncClient(
                appid=inst.appid,
                mch_id=inst.mch_id,
                api_key=inst.key(),
                sign_type=inst.sign_type,
                region=inst.region,
                base_url=inst.base_url,
                failover=tuple(inst.failover),
                login_base_url=inst.login_base_url,
                cert=cert,
                verify=str(inst.ca_cert) if inst.ca_cert is not None else True,
                transport=transport,
                allow_local_notify_url=settings.allow_local_notify_url,
                connect_timeout=inst.connect_timeout,
                read_timeout=inst.read_timeout,
                max_retries=inst.max_retries,
                on_event=self._observe,
            )

    def _observe(self, event: ClientEvent) -> None:
        for observer in self.observers:
            observer(event)

    def institution(self, sub: SubMerchantSettings) -> InstitutionSettings:
        return self._settings.institution(sub.institution)

    def _client(self, sub: SubMerchantSettings) -> AsyncClient:
        return self._clients[sub.institution]

    async def code_to_session(self, sub: SubMerchantSettings, js_code: str) -> LoginResult:
        session = await self._client(sub).code_to_session(sub.sub_appid, sub.app_secret.get_secret_value(), js_code)
        return LoginResult(openid=session.openid, unionid=session.unionid)

    async def create_order(self, sub: SubMerchantSettings, order: OrderRequest) -> str:
        response = await self._client(sub).orders.create(
            out_trade_no=order.out_trade_no,
            total_fee=order.total_fee,
            fee_type=order.fee_type,
            body=order.body,
            notify_url=order.notify_url,
            spbill_create_ip=order.spbill_create_ip,
            sub_openid=order.sub_openid,
            sub_mch_id=sub.sub_mch_id,
            sub_appid=sub.sub_appid,
            attach=order.attach,
            time_start=order.time_start,
            time_expire=order.time_expire,
        )
        return str(response.prepay_id)

    async def query_order(self, sub: SubMerchantSettings, out_trade_no: str) -> PaymentResult | None:
        try:
            response = await self._client(sub).orders.query(
                out_trade_no=out_trade_no, sub_mch_id=sub.sub_mch_id, sub_appid=sub.sub_appid
            )
        except MinipayError as exc:
            if getattr(exc, "err_code", "") == "ORDERNOTEXIST":
                return None
            raise
        return PaymentResult.from_query(response)

    async def close_order(self, sub: SubMerchantSettings, out_trade_no: str) -> None:
        await self._client(sub).orders.close(
            out_trade_no=out_trade_no, sub_mch_id=sub.sub_mch_id, sub_appid=sub.sub_appid
        )

    async def create_refund(self, sub: SubMerchantSettings, refund: RefundRequest) -> str | None:
        response = await self._client(sub).refunds.create(
            out_refund_no=refund.out_refund_no,
            out_trade_no=refund.out_trade_no,
            total_fee=refund.total_fee,
            refund_fee=refund.refund_fee,
            refund_fee_type=refund.refund_fee_type,
            notify_url=refund.notify_url,
            refund_desc=refund.refund_desc,
            sub_mch_id=sub.sub_mch_id,
            sub_appid=sub.sub_appid,
        )
        return response.refund_id or None

    async def query_refund(self, sub: SubMerchantSettings, out_refund_no: str) -> RefundResult | None:
        try:
            response = await self._client(sub).refunds.query(
                out_refund_no=out_refund_no, sub_mch_id=sub.sub_mch_id, sub_appid=sub.sub_appid
            )
        except MinipayError as exc:
            if getattr(exc, "err_code", "") == "REFUNDNOTEXIST":
                return None
            raise
        for record in response.refunds:
            if record.out_refund_no == out_refund_no:
                return RefundResult.from_query(response, record)
        return None

    def pay_params(self, sub: SubMerchantSettings, prepay_id: str, *, fresh: bool = False) -> PayParams:
        """The signed ``pay_params`` of a prepay_id: the same for :data:`PAY_PARAMS_REUSE` seconds,
        unless ``fresh`` (then signed anew, and those kept)."""
        key = (sub.sub_mch_id, prepay_id)
        now = time.monotonic()
        kept = self._signed.get(key)
        if kept is not None and not fresh and now - kept[0] < PAY_PARAMS_REUSE:
            return PayParams(**kept[1])  # a copy: the caller may change its own
        params = self._client(sub).pay_params(prepay_id, sub_appid=sub.sub_appid)
        self._signed.pop(key, None)  # (re-inserted last: the oldest stay first)
        self._signed[key] = (now, PayParams(**params))
        if len(self._signed) > PAY_PARAMS_KEPT:
            del self._signed[next(iter(self._signed))]
        return params

    def client_for(self, sub_mch_id: str) -> AsyncClient:
        """The SDK client of that sub-merchant's institution (for the worker: bills, queries)."""
        sub = self._settings.sub_merchant(sub_mch_id)
        if sub is None:
            raise KeyError(sub_mch_id)
        return self._client(sub)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Every address the system resolver gives for ``host`` (``getaddrinfo``, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class HttpWebhookSender:
    """POSTs webhooks with httpx2; ``transport`` lets tests deliver to an in-process ASGI receiver.

    Unless ``allow_private``, every attempt resolves the endpoint's host (``resolver``, the system's by
    default) and connects to the checked address itself (:func:`~minipay.server.webhooks.pin_address`):
    the name is resolved once, so it cannot answer a public address to the check and a private one to
    the connection. The ``Host`` header and the TLS server name (SNI, certificate check) stay the name.
    Redirects are never followed (a 3xx is a failed attempt).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        allow_private: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        self._client = httpx2.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
        self._allow_private = allow_private
        self._resolver: Resolver = resolver or system_resolver

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        target = httpx2.URL(url)
        all_headers = dict(headers)
        extensions: dict[str, str] = {}
        if not self._allow_private:
            port = target.port or (443 if target.scheme == "https" else 80)
            ip = await pin_address(target.host, port, self._resolver)
            if target.host != str(ip):
                all_headers["Host"] = target.netloc.decode("ascii")
                if target.scheme == "https":
                    extensions["sni_hostname"] = target.host
                target = target.copy_with(host=str(ip))
        response = await self._client.post(target, content=body, headers=all_headers, extensions=extensions)
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()
