"""Ports: what the service layer needs from the outside world, as Protocol classes.

Adapters live in ``minipay.server.adapters``; tests and the demo may pass their own (the worker and
the demo pass a clock that follows the sandbox's virtual clock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from minipay.protocol import PayParams
from minipay.server.domain import PaymentResult, RefundResult
from minipay.server.settings import InstitutionSettings, SubMerchantSettings

__all__ = ["Clock", "LoginResult", "OrderRequest", "PaymentGateway", "RefundRequest", "WebhookSender"]


class Clock(Protocol):
    """The time source: ``now()`` returns a timezone-aware datetime."""

    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class LoginResult:
    openid: str
    unionid: str | None = None  # the session_key is deliberately not carried


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """Everything unified order needs; stored with the payment so a retry sends identical parameters."""

    out_trade_no: str
    total_fee: int
    fee_type: str
    body: str
    notify_url: str
    sub_openid: str
    spbill_create_ip: str
    time_start: datetime
    time_expire: datetime | None
    attach: str | None = None


@dataclass(frozen=True, slots=True)
class RefundRequest:
    out_trade_no: str
    out_refund_no: str
    total_fee: int
    refund_fee: int
    refund_fee_type: str
    notify_url: str | None
    refund_desc: str | None = None


class PaymentGateway(Protocol):
    """The WeChat side. Errors are ``minipay.protocol`` errors (``BusinessError`` with ``err_code``,
    ``TransportError`` with ``retryable`` / ``outcome_unknown``), exactly as the SDK raises them."""

    async def code_to_session(self, sub: SubMerchantSettings, js_code: str) -> LoginResult: ...

    async def create_order(self, sub: SubMerchantSettings, order: OrderRequest) -> str:
        """Unified order; returns the ``prepay_id``."""
        ...

    async def query_order(self, sub: SubMerchantSettings, out_trade_no: str) -> PaymentResult | None:
        """Order query; None when WeChat does not know the order (ORDERNOTEXIST)."""
        ...

    async def close_order(self, sub: SubMerchantSettings, out_trade_no: str) -> None: ...

    async def create_refund(self, sub: SubMerchantSettings, refund: RefundRequest) -> str | None:
        """Submit a refund; returns WeChat's ``refund_id`` (the request was *accepted*, not done)."""
        ...

    async def query_refund(self, sub: SubMerchantSettings, out_refund_no: str) -> RefundResult | None: ...

    def pay_params(self, sub: SubMerchantSettings, prepay_id: str) -> PayParams: ...

    def institution(self, sub: SubMerchantSettings) -> InstitutionSettings: ...

    async def aclose(self) -> None: ...


class WebhookSender(Protocol):
    """POSTs one webhook body; returns the HTTP status code (raises on a transport failure)."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int: ...
