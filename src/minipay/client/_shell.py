"""What the sync and async shells share: the attempt bookkeeping around :func:`decide`, the mapping
of ``httpx2`` failures onto the Minipay tree, and the pure public methods (pay params, notifications).
"""

from __future__ import annotations

import logging
import re
from typing import Final

import httpx2

from minipay._version import __version__
from minipay.client._base import BaseClient
from minipay.client._events import ClientEvent, emit
from minipay.client._operations import Operation
from minipay.client._retry import RetryDecision, decide
from minipay.protocol import (
    BusinessError,
    CommunicationError,
    ConnectError,
    LoginError,
    MinipayError,
    PaymentNotification,
    PayParams,
    ReadTimeoutError,
    RefundNotification,
    SignatureError,
    SignType,
    TransportError,
    UnexpectedResponseError,
    reply_fail,
    reply_success,
)

__all__ = ["XML_HEADERS", "Attempts", "PureMethods", "install_log_redaction", "transport_error"]

XML_HEADERS: Final = {"Content-Type": "text/xml; charset=utf-8", "User-Agent": f"minipay/{__version__}"}


def transport_error(
    exc: httpx2.RequestError, operation: Operation, ids: dict[str, str]
) -> TransportError | UnexpectedResponseError:
    """Map an ``httpx2`` failure: never sent -> :class:`ConnectError`; sent -> :class:`ReadTimeoutError`;
    an answer httpx2 could not read (bad content encoding...) -> :class:`UnexpectedResponseError`
    (``outcome_unknown`` for writes).

    The message names the kind of failure only (no URL: the login URL carries the app secret).
    """
    if not isinstance(exc, httpx2.TransportError):
        return UnexpectedResponseError(
            f"the answer could not be read ({type(exc).__name__})",
            operation=operation.wire,
            ids=ids,
            outcome_unknown=not operation.idempotent,
        )
    if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout | httpx2.ProxyError):
        return ConnectError(f"could not connect ({type(exc).__name__})", operation=operation.wire, ids=ids)
    if isinstance(exc, httpx2.TimeoutException):
        return ReadTimeoutError(
            f"no answer in time ({type(exc).__name__}): the outcome is unknown, query before acting",
            operation=operation.wire,
            ids=ids,
        )
    return ReadTimeoutError(
        f"the connection failed after the request was sent ({type(exc).__name__}): "
        "the outcome is unknown, query before acting",
        operation=operation.wire,
        ids=ids,
    )


def _outcome(error: MinipayError) -> tuple[str, str | None]:
    if isinstance(error, BusinessError):
        return error.err_code or "business_error", error.err_code
    if isinstance(error, CommunicationError):
        return "communication_error", None
    if isinstance(error, SignatureError):
        return "signature_error", None
    if isinstance(error, ConnectError):
        return "connect_error", None
    if isinstance(error, ReadTimeoutError):
        return "outcome_unknown", None
    if isinstance(error, UnexpectedResponseError):
        return "unexpected_response", None
    if isinstance(error, LoginError):
        return f"errcode_{error.errcode}", str(error.errcode)
    return type(error).__name__, None


class Attempts:
    """The bookkeeping of one call: attempt number, current host, retries spent, events and logs."""

    __slots__ = ("_core", "_started", "attempt", "host_index", "hosts", "ids", "operation", "retries")

    def __init__(self, core: BaseClient, operation: Operation, ids: dict[str, str], hosts: tuple[str, ...]) -> None:
        self._core = core
        self.operation = operation
        self.ids = ids
        self.hosts = hosts
        self.attempt = 0
        self.host_index = 0
        self.retries = 0
        self._started = 0.0

    def begin(self) -> str:
        """Start an attempt; returns the base URL to send it to."""
        self.attempt += 1
        host = self.hosts[self.host_index]
        self._emit(ClientEvent("request", self.operation.name, self.attempt, host, self.ids))
        self._started = self._core.clock()
        return host

    def succeeded(self) -> None:
        self._emit(self._response("ok", None))

    def failed(self, error: MinipayError) -> RetryDecision:
        """Record the failure and ask :func:`decide` what follows; on "retry", state moves on."""
        outcome, err_code = _outcome(error)
        self._emit(self._response(outcome, err_code))
        core = self._core
        decision = decide(
            error,
            idempotent=self.operation.idempotent,
            retries_used=self.retries,
            max_retries=core.max_retries,
            host_index=self.host_index,
            host_count=len(self.hosts),
            backoff=core.backoff,
            random=core.random,
        )
        if decision.action == "retry":
            self._emit(
                ClientEvent(
                    "retry",
                    self.operation.name,
                    self.attempt,
                    self.hosts[decision.host_index],
                    self.ids,
                    outcome=decision.reason,
                    err_code=err_code,
                    delay=decision.delay,
                )
            )
            self.host_index = decision.host_index
            self.retries = decision.retries_used
        return decision

    def _response(self, outcome: str, err_code: str | None) -> ClientEvent:
        latency = self._core.clock() - self._started
        host = self.hosts[self.host_index]
        return ClientEvent(
            "response", self.operation.name, self.attempt, host, self.ids, latency, outcome=outcome, err_code=err_code
        )

    def _emit(self, event: ClientEvent) -> None:
        emit(event, self._core.logger, self._core.on_event)


_SECRET_QUERY_RE: Final = re.compile(r"((?:^|[?&])(?:secret|js_code)=)[^&\s\"]*")


class _RedactSecrets(logging.Filter):
    """httpx2 logs every request URL at INFO; the jscode2session URL carries the app secret and the
    one-time ``js_code`` in its query (WeChat's design), so they are masked before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _SECRET_QUERY_RE.sub(r"\1**********", str(arg)) if isinstance(arg, httpx2.URL | str) else arg
                for arg in record.args
            )
        return True


_REDACTION: Final = _RedactSecrets()


def install_log_redaction() -> None:
    """Attach the secret-masking filter to the ``httpx2`` logger (idempotent)."""
    logger = logging.getLogger("httpx2")
    if _REDACTION not in logger.filters:
        logger.addFilter(_REDACTION)


class PureMethods:
    """Public methods that need no network, identical on ``Client`` and ``AsyncClient``."""

    _core: BaseClient

    @property
    def appid(self) -> str:
        """The institution's AppID."""
        return self._core.appid

    @property
    def mch_id(self) -> str:
        """The institution's merchant ID."""
        return self._core.mch_id

    @property
    def sign_type(self) -> SignType:
        """The client's signature algorithm (``HMAC-SHA256`` also refuses MD5 answers)."""
        return self._core.sign_type

    @property
    def hosts(self) -> tuple[str, ...]:
        """The ordered base URLs: the primary, then the fail-over list."""
        return self._core.hosts

    def pay_params(self, prepay_id: str, sub_appid: str | None = None, sign_type: SignType | None = None) -> PayParams:
        """The object ``wx.requestPayment`` takes (spec 6): ``timeStamp``, ``nonceStr``, ``package``,
        ``signType``, ``paySign``. ``appId`` (the Mini Program = ``sub_appid``) is signed, not returned.

        >>> params = client.pay_params(order.prepay_id, sub_appid="wx1234567890abcdef")  # doctest: +SKIP
        """
        return self._core.pay_params(prepay_id, sub_appid, sign_type)

    def parse_payment_notification(self, body: bytes) -> PaymentNotification:
        """Decode, verify and type the payment notification WeChat POSTed to ``notify_url`` (spec 7).

        The signature is checked over every received field before anything is believed (with
        ``sign_type="HMAC-SHA256"`` an MD5-signed notification is refused). Compare ``total_fee``,
        ``fee_type`` and ``sub_mch_id`` with your order, then answer :meth:`reply_success`.
        Raises :class:`XMLError`, :class:`SignatureError` or :class:`FieldError`.
        """
        return self._core.parse_payment_notification(body)

    def parse_refund_notification(self, body: bytes) -> RefundNotification:
        """Decode a refund notification and decrypt its ``req_info`` (spec 12).

        Raises :class:`XMLError`, :class:`DecryptionError` (forged, or another key) or :class:`FieldError`.
        """
        return self._core.parse_refund_notification(body)

    def reply_success(self) -> bytes:
        """The exact body that acknowledges a notification (spec 7.3)."""
        return reply_success()

    def reply_fail(self, msg: str) -> bytes:
        """A refusal (``return_code=FAIL``): WeChat will deliver the notification again later."""
        return reply_fail(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(appid={self.appid!r}, mch_id={self.mch_id!r}, hosts={list(self.hosts)!r})"
