"""A small, framework-neutral handler for the ``notify_url`` endpoints (spec 7, 12).

It turns a raw request body into the reply WeChat expects: it verifies (payment: signature over all
fields; refund: ``req_info`` decryption), calls your function with the typed event, and answers
``SUCCESS`` (HTTP 200) when your function returns, a ``FAIL`` reply when the body is not an
authentic notification (HTTP 400) or when your function raised (HTTP 500) -- WeChat then delivers
again later, so your function must be idempotent (spec 7.5). Nothing from the body is echoed back.

FastAPI / Starlette::

    handler = NotificationHandler(client)

    @app.post("/wxpay/notify")
    async def notify(request: Request) -> Response:
        reply = await handler.apayment(await request.body(), on_payment)
        return Response(reply.content, status_code=reply.status_code, media_type=reply.media_type)

Django: ``HttpResponse(reply.content, status=reply.status_code, content_type=reply.media_type)``
from ``handler.payment(request.body, on_payment)``. Flask: ``(reply.content, reply.status_code,
{"Content-Type": reply.media_type})`` from ``handler.payment(request.get_data(), on_payment)``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from minipay.client._events import LOGGER_NAME
from minipay.client._shell import PureMethods
from minipay.protocol import (
    DecryptionError,
    FieldError,
    PaymentNotification,
    RefundNotification,
    SignatureError,
    XMLError,
)

__all__ = ["NotificationHandler", "NotificationReply"]

_E = TypeVar("_E", PaymentNotification, RefundNotification)
_REFUSED: Final = (XMLError, SignatureError, DecryptionError, FieldError)


@dataclass(frozen=True, slots=True)
class NotificationReply:
    """What to answer WeChat: return these three from any web framework."""

    status_code: int
    content: bytes
    media_type: str = "text/xml; charset=utf-8"

    @property
    def acknowledged(self) -> bool:
        """True when the reply tells WeChat to stop delivering this notification."""
        return self.status_code == 200


class NotificationHandler:
    """Verify a notification, run your function, and build WeChat's reply.

    ``client`` is a :class:`Client` or :class:`AsyncClient` (only its pure parsers are used, so one
    handler serves both). ``payment``/``refund`` take a plain function; ``apayment``/``arefund``
    also accept a coroutine function.
    """

    def __init__(self, client: PureMethods, *, logger: logging.Logger | None = None) -> None:
        self._client = client
        self._logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)

    # --- sync ---

    def payment(self, body: bytes, on_payment: Callable[[PaymentNotification], object]) -> NotificationReply:
        """Handle a payment notification body with a synchronous ``on_payment(event)``."""
        event = self._parse("payment", body, self._client.parse_payment_notification)
        if isinstance(event, NotificationReply):
            return event
        return self._run_sync("payment", event, on_payment)

    def refund(self, body: bytes, on_refund: Callable[[RefundNotification], object]) -> NotificationReply:
        """Handle a refund notification body with a synchronous ``on_refund(event)``."""
        event = self._parse("refund", body, self._client.parse_refund_notification)
        if isinstance(event, NotificationReply):
            return event
        return self._run_sync("refund", event, on_refund)

    # --- async ---

    async def apayment(
        self, body: bytes, on_payment: Callable[[PaymentNotification], object | Awaitable[object]]
    ) -> NotificationReply:
        """Handle a payment notification body; ``on_payment`` may be a coroutine function."""
        event = self._parse("payment", body, self._client.parse_payment_notification)
        if isinstance(event, NotificationReply):
            return event
        return await self._run_async("payment", event, on_payment)

    async def arefund(
        self, body: bytes, on_refund: Callable[[RefundNotification], object | Awaitable[object]]
    ) -> NotificationReply:
        """Handle a refund notification body; ``on_refund`` may be a coroutine function."""
        event = self._parse("refund", body, self._client.parse_refund_notification)
        if isinstance(event, NotificationReply):
            return event
        return await self._run_async("refund", event, on_refund)

    # --- shared ---

    def _parse(self, kind: str, body: bytes, parse: Callable[[bytes], _E]) -> _E | NotificationReply:
        try:
            return parse(body)
        except _REFUSED as exc:
            self._logger.warning(
                "refused a %s notification: %s", kind, type(exc).__name__, extra={"operation": f"notify.{kind}"}
            )
            return NotificationReply(400, self._client.reply_fail("invalid notification"))

    def _ids(self, event: PaymentNotification | RefundNotification) -> dict[str, str]:
        names = ("sub_mch_id", "out_trade_no", "transaction_id", "out_refund_no", "refund_id")
        return {name: str(value) for name in names if (value := getattr(event, name, None))}

    def _done(self, kind: str, event: PaymentNotification | RefundNotification) -> NotificationReply:
        self._logger.info(
            "%s notification handled", kind, extra={"operation": f"notify.{kind}", "ids": self._ids(event)}
        )
        return NotificationReply(200, self._client.reply_success())

    def _failed(self, kind: str, event: PaymentNotification | RefundNotification) -> NotificationReply:
        self._logger.exception(
            "%s notification callback failed; WeChat will deliver it again",
            kind,
            extra={"operation": f"notify.{kind}", "ids": self._ids(event)},
        )
        return NotificationReply(500, self._client.reply_fail("processing failed"))

    def _run_sync(self, kind: str, event: _E, callback: Callable[[_E], object]) -> NotificationReply:
        try:
            result = callback(event)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError("a coroutine function was passed to the sync handler: use apayment()/arefund()")
        except Exception:
            return self._failed(kind, event)
        return self._done(kind, event)

    async def _run_async(
        self, kind: str, event: _E, callback: Callable[[_E], object | Awaitable[object]]
    ) -> NotificationReply:
        try:
            result = callback(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            return self._failed(kind, event)
        return self._done(kind, event)
