"""The console's payment pages' reads, through the console read model (``uow.console``), always scoped
to the caller (``scope`` None = the admin key, every sub-merchant)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from minipay.server.domain import Payment, Refund
from minipay.server.repositories import PaymentFilter
from minipay.server.uow import UnitOfWorkFactory
from minipay.server.webhooks import delivery_log

__all__ = ["PaymentFilter", "payment_events", "payment_refunds", "payment_webhooks", "search_payments"]


async def search_payments(
    uow_factory: UnitOfWorkFactory,
    *,
    scope: str | None,
    filters: PaymentFilter,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Payment]:
    """Newest first, ``limit`` rows after the (created_at, id) anchor of the previous page.

    The payments repository's search, with the page's filters: an empty filter filters nothing, and a
    sub-merchant filter outside the caller's scope finds nothing."""
    if scope is not None and filters.sub_mch_id and filters.sub_mch_id != scope:
        return []
    async with uow_factory().reading() as uow:
        return await uow.payments.search(
            sub_mch_id=scope if scope is not None else (filters.sub_mch_id or None),
            status=filters.status or None,
            out_trade_no=filters.out_trade_no or None,
            transaction_id=filters.transaction_id or None,
            created_gte=filters.created_gte,
            created_lt=filters.created_lt,
            after=after,
            limit=limit,
        )


async def payment_events(uow_factory: UnitOfWorkFactory, payment_id: str) -> list[dict[str, Any]]:
    """The payment's ``payment_events`` (its own and its refunds'), oldest first."""
    async with uow_factory().reading() as uow:
        return await uow.console.payment_events(payment_id)


async def payment_refunds(uow_factory: UnitOfWorkFactory, payment_id: str) -> list[Refund]:
    """The payment's refunds, oldest first."""
    async with uow_factory().reading() as uow:
        return await uow.refunds.for_payment(payment_id)


async def payment_webhooks(
    uow_factory: UnitOfWorkFactory, payment_id: str, *, scope: str | None
) -> list[dict[str, Any]]:
    """The webhook events emitted for the payment, each with its deliveries and their attempts."""
    async with uow_factory().reading() as uow:
        rows = await uow.console.payment_outbox_events(payment_id)
    return [
        {
            "id": row["id"],
            "type": row["type"],
            "created_at": row["created_at"],
            "deliveries": await delivery_log(uow_factory, row["id"], sub_mch_id=scope),
        }
        for row in rows
    ]
