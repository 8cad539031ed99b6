"""Routes for refunds of a payment."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from minipay.server._http import JSONBody
from minipay.server.auth import Caller
from minipay.server.bootstrap import Container
from minipay.server.routes.schemas import IdemKey, RefundIn, RefundListOut, RefundOut, error_responses, replay_response
from minipay.server.services import (
    InvalidRequest,
    refund_view,
)

__all__ = ["add_routes"]


def add_routes(app: FastAPI, container: Container) -> None:
    services = container.services

    # -- refunds ------------------------------------------------------------------------------------------

    @app.post(
        "/v1/payments/{payment_id}/refunds",
        status_code=201,
        tags=["refunds"],
        response_model=RefundOut,
        responses=replay_response(RefundOut) | error_responses(400, 404, 408, 409, 502),
    )
    async def create_refund(
        payment_id: str, body: RefundIn, caller: Caller, idempotency_key: IdemKey = None
    ) -> JSONBody:
        if not idempotency_key:
            raise InvalidRequest("refunds need an Idempotency-Key header", code="idempotency_key_required")
        refund, created = await services.create_refund(caller, payment_id, body.amount, body.reason, idempotency_key)
        return JSONBody(refund_view(refund), status_code=201 if created else 200)

    @app.get(
        "/v1/payments/{payment_id}/refunds",
        tags=["refunds"],
        response_model=RefundListOut,
        responses=error_responses(404),
    )
    async def list_refunds(payment_id: str, caller: Caller) -> dict[str, Any]:
        return {"data": [refund_view(r) for r in await services.list_refunds(caller, payment_id)]}

    @app.get("/v1/refunds/{refund_id}", tags=["refunds"], response_model=RefundOut, responses=error_responses(404))
    async def get_refund(refund_id: str, caller: Caller) -> dict[str, Any]:
        return refund_view(await services.get_refund(caller, refund_id))
