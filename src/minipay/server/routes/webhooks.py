"""Routes for webhook endpoints and the events (outbox) with their delivery logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query

from minipay.server.auth import Caller
from minipay.server.bootstrap import Container
from minipay.server.routes.schemas import (
    DeletedOut,
    EndpointIn,
    EndpointListOut,
    EndpointOut,
    EventDetailOut,
    EventListOut,
    error_responses,
)
from minipay.server.services import (
    Conflict,
    InvalidRequest,
    NotFound,
)
from minipay.server.webhooks import (
    EndpointLimitReached,
    create_endpoint,
    delete_endpoint,
    get_event,
    list_endpoints,
    list_events,
)

__all__ = ["add_routes"]


def add_routes(app: FastAPI, container: Container) -> None:
    services = container.services

    # -- webhook endpoints --------------------------------------------------------------------------------

    @app.post(
        "/v1/webhook-endpoints",
        status_code=201,
        tags=["webhooks"],
        response_model=EndpointOut,
        responses=error_responses(400, 404, 408, 409),
    )
    async def add_endpoint(body: EndpointIn, caller: Caller) -> dict[str, Any]:
        scope = caller.sub_mch_id
        if body.sub_mch_id is not None:
            scope = services.sub_merchant(caller, body.sub_mch_id).sub_mch_id
        try:
            return await create_endpoint(
                container.uow_factory,
                url=body.url,
                sub_mch_id=scope,
                clock=container.clock,
                allow_private=container.settings.allow_private_webhook_urls,
                max_endpoints=container.settings.max_webhook_endpoints,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), code="invalid_field") from None
        except EndpointLimitReached as exc:
            raise Conflict(str(exc), code="endpoint_limit_reached") from None

    @app.get("/v1/webhook-endpoints", tags=["webhooks"], response_model=EndpointListOut, responses=error_responses())
    async def get_endpoints(caller: Caller) -> dict[str, Any]:
        return {"data": await list_endpoints(container.uow_factory, sub_mch_id=caller.sub_mch_id)}

    @app.delete(
        "/v1/webhook-endpoints/{endpoint_id}",
        tags=["webhooks"],
        response_model=DeletedOut,
        responses=error_responses(404),
    )
    async def remove_endpoint(endpoint_id: str, caller: Caller) -> dict[str, Any]:
        if not await delete_endpoint(
            container.uow_factory, endpoint_id, sub_mch_id=caller.sub_mch_id, clock=container.clock
        ):
            raise NotFound("no such webhook endpoint")
        return {"id": endpoint_id, "deleted": True}

    @app.get("/v1/events", tags=["webhooks"], response_model=EventListOut, responses=error_responses(400))
    async def events(
        caller: Caller, payment_id: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 50
    ) -> dict[str, Any]:
        """Webhook events (the outbox), newest first."""
        rows = await list_events(
            container.uow_factory, sub_mch_id=caller.sub_mch_id, payment_id=payment_id, limit=limit
        )
        return {"data": rows}

    @app.get("/v1/events/{event_id}", tags=["webhooks"], response_model=EventDetailOut, responses=error_responses(404))
    async def event(event_id: str, caller: Caller) -> dict[str, Any]:
        """One event with its delivery log (every attempt, status code, error, duration)."""
        found = await get_event(container.uow_factory, event_id, sub_mch_id=caller.sub_mch_id)
        if found is None:
            raise NotFound("no such event")
        return found
