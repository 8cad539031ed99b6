"""The composition root: builds every dependency of the service from :class:`Settings`, once.

::

    container = build_container(settings)                 # engine, unit of work, gateway, clock, sender
    async with container.uow_factory() as uow: ...
    await container.services.create_payment(...)
    await container.aclose()

Tests and the demo inject ports: ``clock=OffsetClock(...)`` (the sandbox's virtual time),
``wechat_transport=httpx2.ASGITransport(sandbox_app)``, ``webhook_transport=...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx2
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.server.db import create_engine
from minipay.server.ports import Clock, PaymentGateway, WebhookSender
from minipay.server.services import Services
from minipay.server.settings import Settings
from minipay.server.uow import UnitOfWork, UnitOfWorkFactory

__all__ = ["Container", "build_container"]


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    uow_factory: UnitOfWorkFactory
    gateway: PaymentGateway
    clock: Clock
    webhook_sender: WebhookSender
    services: Services
    owned: list[Any] = field(default_factory=list)  # things we built and must close

    async def aclose(self) -> None:
        for item in reversed(self.owned):
            close = getattr(item, "aclose", None) or getattr(item, "dispose", None)
            if close is not None:
                await close()
        self.owned.clear()


def build_container(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    gateway: PaymentGateway | None = None,
    clock: Clock | None = None,
    webhook_sender: WebhookSender | None = None,
    wechat_transport: httpx2.AsyncBaseTransport | None = None,
    webhook_transport: httpx2.AsyncBaseTransport | None = None,
) -> Container:
    """Wire the service. Nothing connects yet: the engine and HTTP clients open lazily."""
    from minipay.server.adapters import ClientGateway, HttpWebhookSender, SystemClock

    owned: list[Any] = []
    if engine is None:
        engine = create_engine(settings.database_url, echo=settings.sql_echo)
        owned.append(engine)
    if gateway is None:
        gateway = ClientGateway(settings, transport=wechat_transport)
        owned.append(gateway)
    if webhook_sender is None:
        sender = HttpWebhookSender(
            timeout=settings.webhook_timeout,
            transport=webhook_transport,
            allow_private=settings.allow_private_webhook_urls,
        )
        owned.append(sender)
        webhook_sender = sender
    clock = clock or SystemClock()
    bound_engine = engine

    def uow_factory() -> UnitOfWork:
        return UnitOfWork(bound_engine)

    services = Services(settings=settings, uow_factory=uow_factory, gateway=gateway, clock=clock)
    return Container(
        settings=settings,
        engine=engine,
        uow_factory=uow_factory,
        gateway=gateway,
        clock=clock,
        webhook_sender=webhook_sender,
        services=services,
        owned=owned,
    )
