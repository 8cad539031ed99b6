"""Ports: what the service layer needs from the outside world, as Protocol classes.

Adapters live in ``minipay.server.adapters``; tests and the demo may pass their own (the worker and
the demo pass a clock that follows the sandbox's virtual clock). The storage port is
:class:`UnitOfWorkPort`: the use cases (``services``, ``outcomes``, ``notifications``, ``webhooks``)
work through it; :class:`minipay.server.uow.UnitOfWork` is its SQL adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from minipay.protocol import PayParams
from minipay.server.domain import DomainEvent, Payment, PaymentResult, Refund, RefundResult
from minipay.server.settings import InstitutionSettings, SubMerchantSettings

__all__ = [
    "Clock",
    "EventStore",
    "IdempotencyStore",
    "LoginResult",
    "OrderRequest",
    "OutboxStore",
    "PaymentGateway",
    "PaymentStore",
    "RefundRequest",
    "RefundStore",
    "StoredRow",
    "UnitOfWorkPort",
    "UnitOfWorkPortFactory",
    "WebhookSender",
    "WebhookStore",
]


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

    @classmethod
    def for_payment(cls, payment: Payment, notify_url: str) -> OrderRequest:
        """The unified order of ``payment``, built from its stored fields alone: every call for the same
        payment sends identical parameters."""
        return cls(
            out_trade_no=payment.out_trade_no,
            total_fee=payment.amount,
            fee_type=payment.currency,
            body=payment.description,
            notify_url=notify_url,
            sub_openid=payment.openid,
            spbill_create_ip=payment.client_ip,
            time_start=payment.created_at,
            time_expire=payment.expires_at,
            attach=payment.attach,
        )


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

    def pay_params(self, sub: SubMerchantSettings, prepay_id: str, *, fresh: bool = False) -> PayParams:
        """The signed object for ``wx.requestPayment``; the gateway may answer one it signed a moment
        ago for the same prepay_id, unless ``fresh``."""
        ...

    def institution(self, sub: SubMerchantSettings) -> InstitutionSettings: ...

    async def aclose(self) -> None: ...


class WebhookSender(Protocol):
    """POSTs one webhook body; returns the HTTP status code (raises on a transport failure)."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> int: ...


# -- storage: the unit of work and its repositories ------------------------------------------------

#: A stored row as the repositories hand it out (column name -> value).
StoredRow = Mapping[Any, Any]


class PaymentStore(Protocol):
    async def add(self, payment: Payment) -> None: ...

    async def get(
        self, payment_id: str, *, sub_mch_id: str | None = None, for_update: bool = False
    ) -> Payment | None: ...

    async def get_by_out_trade_no(
        self, mch_id: str, out_trade_no: str, *, sub_mch_id: str, for_update: bool = False
    ) -> Payment | None: ...

    async def save(self, payment: Payment) -> None:
        """Write the payment if its stored version is still ``payment.version`` (then bump both); else
        raise ``ConcurrentUpdate``."""
        ...

    async def search(
        self,
        *,
        sub_mch_id: str | None,
        status: str | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 20,
    ) -> list[Payment]: ...


class RefundStore(Protocol):
    async def add(self, refund: Refund) -> None: ...

    async def get(
        self, refund_id: str, *, sub_mch_id: str | None = None, for_update: bool = False
    ) -> Refund | None: ...

    async def get_by_out_refund_no(
        self, mch_id: str, out_refund_no: str, *, for_update: bool = False
    ) -> Refund | None: ...

    async def for_payment(self, payment_id: str) -> list[Refund]: ...

    async def reserved_amount(self, payment_id: str) -> int: ...

    async def save(self, refund: Refund) -> None: ...


class EventStore(Protocol):
    async def append(
        self,
        *,
        type: str,
        source: str,
        data: dict[str, Any],
        now: datetime,
        payment_id: str | None = None,
        refund_id: str | None = None,
        sub_mch_id: str | None = None,
    ) -> None: ...


class OutboxStore(Protocol):
    async def publish(
        self,
        *,
        key: str,
        type: str,
        sub_mch_id: str,
        data: dict[str, Any],
        now: datetime,
        payment_id: str | None = None,
        refund_id: str | None = None,
    ) -> str | None: ...


class IdempotencyStore(Protocol):
    async def get(self, scope: str, key: str) -> StoredRow | None: ...

    async def add(self, scope: str, key: str, request_hash: str, resource_id: str, now: datetime) -> None: ...


class WebhookStore(Protocol):
    async def count_endpoints(self, sub_mch_id: str | None) -> int: ...

    async def add_endpoint(self, values: dict[str, Any]) -> None: ...

    async def endpoints(self, sub_mch_id: str | None) -> Sequence[StoredRow]: ...

    async def delete_endpoint(self, endpoint_id: str, *, sub_mch_id: str | None, now: datetime) -> bool: ...

    async def event(self, event_id: str, *, sub_mch_id: str | None) -> StoredRow | None: ...

    async def events(self, *, sub_mch_id: str | None, payment_id: str | None, limit: int) -> Sequence[StoredRow]: ...

    async def deliveries(
        self, event_id: str, *, sub_mch_id: str | None
    ) -> Sequence[tuple[StoredRow, Sequence[StoredRow]]]: ...

    async def claim(
        self,
        now: datetime,
        limit: int,
        until: datetime,
        *,
        per_endpoint: int | None = None,
        room: Mapping[str, int] | None = None,
    ) -> Sequence[StoredRow]: ...

    async def finish_attempt(self, delivery_id: int, lease: datetime, values: dict[str, Any]) -> bool: ...

    async def log_attempt(
        self, delivery_id: int, *, at: datetime, status_code: int | None, error: str | None, duration_ms: int
    ) -> None: ...

    async def close_breaker(self, endpoint_id: str) -> None: ...

    async def count_failure(self, endpoint_id: str) -> int: ...

    async def open_breaker(self, endpoint_id: str, until: datetime) -> None: ...


class UnitOfWorkPort(Protocol):
    """One transaction over the repositories: ``async with`` it; ``commit()`` keeps the work, leaving
    the block without it rolls back. ``reading()`` (before ``async with``) makes it read-only,
    ``looking_up()`` read-only by key lookups alone; ``writing_at_commit()`` makes it a unit of work
    that reads nothing (its writes may be sent at commit).

    Writes are conditional on the version read (``ConcurrentUpdate``) and unique keys are enforced
    (``IntegrityError``): ``uow.retrying`` runs the work again in a fresh unit of work for both.
    """

    @property
    def payments(self) -> PaymentStore: ...

    @property
    def refunds(self) -> RefundStore: ...

    @property
    def events(self) -> EventStore: ...

    @property
    def outbox(self) -> OutboxStore: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    @property
    def webhooks(self) -> WebhookStore: ...

    def reading(self) -> Self: ...

    def looking_up(self) -> Self:
        """Before ``async with``: read-only work that only looks rows up by key (``payments.get``,
        ``payments.get_by_out_trade_no``, ``refunds.get``, ``refunds.get_by_out_refund_no``); it may
        hold no connection between them."""
        ...

    def writing_at_commit(self) -> Self:
        """Before ``async with``: the work reads nothing, its writes may wait for ``commit()``
        (``ConcurrentUpdate`` may then come from the commit)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def record(
        self,
        events: list[DomainEvent],
        *,
        source: str,
        sub_mch_id: str,
        now: datetime,
        payment_id: str | None,
        refund_id: str | None = None,
        webhook_data: dict[str, Any] | None = None,
    ) -> None:
        """Log the entity's new events; publish the webhook ones to the outbox (same transaction)."""
        ...


UnitOfWorkPortFactory = Callable[[], UnitOfWorkPort]
