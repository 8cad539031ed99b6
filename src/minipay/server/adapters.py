"""Adapters for the ports: clocks, the WeChat gateway over the SDK, the webhook sender."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import httpx2

from minipay.client import AsyncClient, ClientCertificate
from minipay.protocol import MinipayError, PayParams
from minipay.server.domain import PaymentResult, RefundResult
from minipay.server.ports import LoginResult, OrderRequest, RefundRequest
from minipay.server.settings import InstitutionSettings, Settings, SubMerchantSettings

__all__ = ["ClientGateway", "HttpWebhookSender", "OffsetClock", "SystemClock"]


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
                transport=transport,
                allow_local_notify_url=settings.allow_local_notify_url,
                connect_timeout=inst.connect_timeout,
                read_timeout=inst.read_timeout,
                max_retries=inst.max_retries,
            )

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
        return PaymentResult.from_fields(response.to_fields())

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
                return RefundResult(
                    out_refund_no=record.out_refund_no,
                    refund_status=record.refund_status or "",
                    out_trade_no=response.out_trade_no,
                    sub_mch_id=response.sub_mch_id,
                    refund_id=record.refund_id,
                    refund_fee=record.refund_fee,
                    success_time=record.refund_success_time,
                    fields=response.to_fields(),
                )
        return None

    def pay_params(self, sub: SubMerchantSettings, prepay_id: str) -> PayParams:
        return self._client(sub).pay_params(prepay_id, sub_appid=sub.sub_appid)

    def client_for(self, sub_mch_id: str) -> AsyncClient:
        """The SDK client of that sub-merchant's institution (for the worker: bills, queries)."""
        sub = self._settings.sub_merchant(sub_mch_id)
        if sub is None:
            raise KeyError(sub_mch_id)
        return self._client(sub)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


class HttpWebhookSender:
    """POSTs webhooks with httpx2; ``transport`` lets tests deliver to an in-process ASGI receiver."""

    def __init__(self, *, timeout: float = 10.0, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self._client = httpx2.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        response = await self._client.post(url, content=body, headers=dict(headers))
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()
