"""Webhook events (the outbox) as the API shows them, with each one's delivery log."""

from __future__ import annotations

import logging
from typing import Any

from minipay.server.ports import UnitOfWorkPortFactory

log = logging.getLogger("minipay.server.webhooks")


async def get_event(
    uow_factory: UnitOfWorkPortFactory, event_id: str, *, sub_mch_id: str | None
) -> dict[str, Any] | None:
    """One outbox event as delivered (``{"id", "type", "created", "data"}``) plus its ``deliveries`` log."""
    async with uow_factory() as uow:
        row = await uow.webhooks.event(event_id, sub_mch_id=sub_mch_id)
    if row is None:
        return None
    return {
        "id": row["id"],
        "type": row["type"],
        "created": int(row["created_at"].timestamp()),
        "data": row["data"],
        # A sub-merchant's key sees the deliveries to its own endpoints, never the admin's.
        "deliveries": await delivery_log(uow_factory, event_id, sub_mch_id=sub_mch_id),
    }


async def list_events(
    uow_factory: UnitOfWorkPortFactory, *, sub_mch_id: str | None, payment_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest outbox events first (without delivery logs)."""
    async with uow_factory() as uow:
        rows = await uow.webhooks.events(sub_mch_id=sub_mch_id, payment_id=payment_id, limit=limit)
    return [
        {"id": r["id"], "type": r["type"], "created": int(r["created_at"].timestamp()), "data": r["data"]} for r in rows
    ]


async def delivery_log(
    uow_factory: UnitOfWorkPortFactory, event_id: str, *, sub_mch_id: str | None = None
) -> list[dict[str, Any]]:
    """Every delivery of an event with its attempts (for the API and for support); with ``sub_mch_id``
    only the deliveries to that sub-merchant's own endpoints."""
    async with uow_factory() as uow:
        deliveries = await uow.webhooks.deliveries(event_id, sub_mch_id=sub_mch_id)
    return [
        {
            "endpoint_id": row["endpoint_id"],
            "status": row["status"],
            "attempts": [
                {
                    "at": t["attempted_at"].isoformat(),
                    "status_code": t["status_code"],
                    "error": t["error"],
                    "duration_ms": t["duration_ms"],
                }
                for t in tries
            ],
            "next_attempt_at": row["next_attempt_at"].isoformat() if row["next_attempt_at"] else None,
        }
        for row, tries in deliveries
    ]
