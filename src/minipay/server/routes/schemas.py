"""The JSON shapes of the HTTP API: request bodies (validated) and answers (documented in OpenAPI)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from minipay.server.commands import MAX_AMOUNT
from minipay.server.domain import PaymentStatus, RefundStatus

# -- request bodies ----------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionIn(_Body):
    code: str = Field(min_length=1, max_length=128)
    sub_appid: str | None = None


# Constraints the service checks itself (answering 400 invalid_field) are published in the schema
# with json_schema_extra, so generated clients know them and the error codes stay the service's.
def _schema(**constraints: Any) -> Any:
    return Field(json_schema_extra=constraints)


DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class PaymentIn(_Body):
    amount: StrictInt = Field(
        description="minor units of currency (e.g. 1050 = 10.50 HKD)",
        json_schema_extra={"minimum": 1, "maximum": MAX_AMOUNT},
    )
    currency: str = Field(
        description="ISO 4217: the sub-merchant's settlement currency or CNY",
        json_schema_extra={"pattern": "^[A-Z]{3}$"},
    )
    description: str = _schema(minLength=1, maxLength=127)
    openid: str = _schema(minLength=1, maxLength=128)
    out_trade_no: str | None = None
    attach: str | None = None
    client_ip: str | None = None
    expires_in: StrictInt | None = Field(
        default=None,
        description="seconds until the payment expires",
        json_schema_extra={"minimum": 60, "maximum": 7 * 24 * 3600},
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    sub_mch_id: str | None = Field(default=None, description="admin key only: which sub-merchant")


class RefundIn(_Body):
    amount: StrictInt = Field(
        description="minor units, at most what is left to refund", json_schema_extra={"minimum": 1}
    )
    reason: str | None = None


class EndpointIn(_Body):
    url: str
    sub_mch_id: str | None = Field(default=None, description="admin key only: limit to one sub-merchant")


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


# -- response shapes (OpenAPI documentation; the views in services.py produce them) ------------------


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = Field(description="the request's id, as in its response header and the logs")


class ErrorOut(BaseModel):
    error: ErrorDetail


class PayParamsOut(BaseModel):
    timeStamp: str  # the names wx.requestPayment takes
    nonceStr: str
    package: str
    signType: str
    paySign: str


class PaymentOut(BaseModel):
    id: str
    object: str = "payment"
    status: str = Field(json_schema_extra={"enum": [s.value for s in PaymentStatus]})
    paid_after_close: bool
    out_trade_no: str
    amount: int
    currency: str = _schema(pattern="^[A-Z]{3}$")
    amount_refunded: int
    description: str
    openid: str
    attach: str | None
    metadata: dict[str, str]
    sub_mch_id: str
    sub_appid: str
    transaction_id: str | None
    cash_fee: int | None
    cash_fee_type: str | None
    pay_params: PayParamsOut | None
    expires_at: DateTime | None
    paid_at: DateTime | None
    closed_at: DateTime | None
    created_at: DateTime
    updated_at: DateTime
    last_error: str | None


class PaymentListOut(BaseModel):
    data: list[PaymentOut]
    has_more: bool
    next_cursor: str | None


class RefundOut(BaseModel):
    id: str
    object: str = "refund"
    payment_id: str
    status: str = Field(json_schema_extra={"enum": [s.value for s in RefundStatus]})
    amount: int
    currency: str
    out_refund_no: str
    refund_id: str | None
    reason: str | None
    failure_code: str | None
    sub_mch_id: str
    succeeded_at: DateTime | None
    created_at: DateTime
    updated_at: DateTime


class RefundListOut(BaseModel):
    data: list[RefundOut]


class SessionOut(BaseModel):
    openid: str
    unionid: str | None = None


class EndpointItem(BaseModel):
    id: str
    url: str
    sub_mch_id: str | None
    created_at: DateTime


class EndpointOut(EndpointItem):
    secret: str = Field(description="the signing secret: shown only now, when the endpoint is created")


class EndpointListOut(BaseModel):
    data: list[EndpointItem]


class DeletedOut(BaseModel):
    id: str
    deleted: bool


class EventOut(BaseModel):
    id: str
    type: str
    created: int = Field(description="Unix seconds")
    data: dict[str, Any]


class EventListOut(BaseModel):
    data: list[EventOut]


class AttemptOut(BaseModel):
    at: DateTime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    endpoint_id: str
    status: str = _schema(enum=["pending", "succeeded", "failed"])
    attempts: list[AttemptOut]
    next_attempt_at: DateTime | None


class EventDetailOut(EventOut):
    deliveries: list[DeliveryOut] = Field(description="to this key's endpoints only (all, for the admin key)")


ERROR_MEANING = {
    400: "invalid request: a field, parameter or header fails its constraints (never 422)",
    401: "missing or invalid API key",
    404: "no such object for this key (another sub-merchant's object is not found either)",
    408: "the request body did not arrive within request_read_timeout",
    409: "conflict: state, a reused Idempotency-Key or out_trade_no, a limit",
    502: "WeChat refused the request for good",
    503: "database or WeChat unavailable, or the object is busy: retry (Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, each with the error model; 401 and 503 come with every /v1 route."""
    every = {401, 503, *codes}
    return {code: {"model": ErrorOut, "description": ERROR_MEANING[code]} for code in sorted(every)}


def replay_response(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"model": model, "description": "a repeat with a seen Idempotency-Key and the same body: the original"}
    }
