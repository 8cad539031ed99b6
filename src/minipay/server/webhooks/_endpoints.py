"""Webhook endpoints: register, list and delete them, each scoped to its API key."""

from __future__ import annotations

import secrets
from typing import Any

from minipay.server.domain import new_id
from minipay.server.ports import Clock, UnitOfWorkPortFactory
from minipay.server.webhooks._addresses import check_url


class EndpointLimitReached(Exception):
    """The key already has ``max_webhook_endpoints`` endpoints."""


def _endpoint_view(row: Any, *, with_secret: bool) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "url": row["url"],
        "sub_mch_id": row["sub_mch_id"],
        "created_at": row["created_at"].isoformat(),
    }
    if with_secret:
        view["secret"] = row["secret"]
    return view


async def create_endpoint(
    uow_factory: UnitOfWorkPortFactory,
    *,
    url: str,
    sub_mch_id: str | None,
    clock: Clock,
    allow_private: bool = False,
    max_endpoints: int | None = None,
) -> dict[str, Any]:
    """Register an endpoint; the answer is the only time the secret is shown.

    Raises ``ValueError`` for a URL that is refused and :class:`EndpointLimitReached` when the key
    (``sub_mch_id``, or the admin's None) already has ``max_endpoints`` endpoints; the count and the
    insert are one transaction, serialised per key, so concurrent requests cannot pass the cap.
    """
    values = {
        "id": new_id("we"),
        "sub_mch_id": sub_mch_id,
        "url": check_url(url, allow_private=allow_private),
        "secret": "whsec_" + secrets.token_hex(24),
        "created_at": clock.now(),
        "failure_streak": 0,
    }
    async with uow_factory() as uow:
        if max_endpoints is not None:
            count = await uow.webhooks.count_endpoints(sub_mch_id)
            if count >= max_endpoints:
                raise EndpointLimitReached(f"this key already has {count} webhook endpoints (at most {max_endpoints})")
        await uow.webhooks.add_endpoint(values)
        await uow.commit()
    values.pop("failure_streak")
    return _endpoint_view(values, with_secret=True)


async def list_endpoints(uow_factory: UnitOfWorkPortFactory, *, sub_mch_id: str | None) -> list[dict[str, Any]]:
    async with uow_factory() as uow:
        rows = await uow.webhooks.endpoints(sub_mch_id)
    return [_endpoint_view(r, with_secret=False) for r in rows]


async def delete_endpoint(
    uow_factory: UnitOfWorkPortFactory, endpoint_id: str, *, sub_mch_id: str | None, clock: Clock
) -> bool:
    async with uow_factory() as uow:
        deleted = await uow.webhooks.delete_endpoint(endpoint_id, sub_mch_id=sub_mch_id, now=clock.now())
        await uow.commit()
    return deleted
