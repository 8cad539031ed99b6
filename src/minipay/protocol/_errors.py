"""The one exception tree of Minipay.

Every error Minipay raises derives from :class:`MinipayError`::

    MinipayError
    ├── ConfigurationError        bad settings: unknown region, bad certificate, malformed API key
    ├── FieldError                a request field breaks a WeChat rule (also a ValueError)
    ├── SignatureError            missing, malformed, wrong or refused (downgraded) signature
    │   └── ResponseSignatureError  ...of an answer: with the operation, the ids and outcome_unknown
    ├── XMLError                  a body the hardened codec refuses (DOCTYPE, entities, nesting, size...)
    ├── DecryptionError           a refund notification ``req_info`` that does not decrypt
    ├── LoginError                jscode2session answered an ``errcode``
    ├── TransportError            the request did not get an answer
    │   ├── ConnectError          never reached WeChat: safe to retry
    │   └── ReadTimeoutError      sent, no answer: the outcome is unknown, query before acting
    └── WeChatError               WeChat answered, and it was not a success
        ├── CommunicationError    ``return_code=FAIL`` (bad signature, bad format...)
        ├── UnexpectedResponseError  an answer that does not follow the protocol
        └── BusinessError         ``result_code=FAIL``: one subclass per ``err_code``
            ├── WeChatSystemError SYSTEMERROR: retry with the same parameters
            ├── OrderPaidError, OrderClosedError, OrderNotFoundError, RefundNotFoundError,
            ├── OutTradeNoUsedError, InvalidRequestError, ParamError, LackParamsError,
            ├── NotEnoughError, WeChatSignError, AppIdMchIdNotMatchError, TradeStateError, ...
            └── (one class per err_code: ``minipay.protocol._codes``, with the error-code table)

Every error that concerns an operation carries ``operation``, the merchant's ids, and two flags:
``retryable`` (the same request may be sent again, with the same ``out_trade_no``) and
``outcome_unknown`` (the caller must query before concluding anything).
No error text ever contains an API key, an app secret or a string-to-sign with the key.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BusinessError",
    "CommunicationError",
    "ConfigurationError",
    "ConnectError",
    "DecryptionError",
    "FieldError",
    "LoginError",
    "MinipayError",
    "ReadTimeoutError",
    "ResponseSignatureError",
    "SignatureError",
    "TransportError",
    "UnexpectedResponseError",
    "WeChatError",
    "XMLError",
]


class MinipayError(Exception):
    """The root of every error Minipay raises."""

    retryable: bool = False
    outcome_unknown: bool = False


class ConfigurationError(MinipayError, ValueError):
    """A setting is invalid (malformed API key, unknown region, unreadable certificate)."""


class FieldError(MinipayError, ValueError):
    """A field breaks a WeChat field rule (spec 16.5); ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class SignatureError(MinipayError):
    """A signature is missing, empty, malformed, wrong, or uses a refused algorithm."""


class XMLError(MinipayError, ValueError):
    """An XML body was refused by the hardened codec; the message says what was wrong."""


class DecryptionError(MinipayError, ValueError):
    """A refund notification ``req_info`` could not be decrypted (Base64, block size, padding, key)."""


class LoginError(MinipayError):
    """``jscode2session`` answered with a non-zero ``errcode`` (spec 4)."""

    def __init__(self, errcode: int, errmsg: str, *, retryable: bool = False) -> None:
        super().__init__(f"jscode2session failed: errcode={errcode} errmsg={errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.retryable = retryable
        # The same attributes as every operation error, so one handler reads them all.
        self.operation = "jscode2session"
        self.ids: dict[str, str] = {}
        self.err_code = str(errcode)
        self.err_code_des = errmsg


class _OperationError(MinipayError):
    """An error about one operation, carrying the operation and the merchant's ids."""

    #: WeChat's code and description; empty when WeChat did not answer (transport errors).
    err_code: str = ""
    err_code_des: str = ""

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        ids: Mapping[str, str] | None = None,
        retryable: bool | None = None,
        outcome_unknown: bool | None = None,
    ) -> None:
        self.operation = operation
        self.ids: dict[str, str] = dict(ids or {})
        if retryable is not None:
            self.retryable = retryable
        if outcome_unknown is not None:
            self.outcome_unknown = outcome_unknown
        context = " ".join(f"{k}={v}" for k, v in sorted(self.ids.items()))
        prefix = f"[{operation}] " if operation else ""
        super().__init__(f"{prefix}{message}" + (f" ({context})" if context else ""))

    @property
    def mch_id(self) -> str | None:
        return self.ids.get("mch_id")

    @property
    def sub_mch_id(self) -> str | None:
        return self.ids.get("sub_mch_id")

    @property
    def out_trade_no(self) -> str | None:
        return self.ids.get("out_trade_no")

    @property
    def out_refund_no(self) -> str | None:
        return self.ids.get("out_refund_no")


class TransportError(_OperationError):
    """The request did not get a usable answer from WeChat."""


class ConnectError(TransportError):
    """WeChat was never reached: nothing was processed, so the request may be sent again."""

    retryable = True


class ReadTimeoutError(TransportError):
    """The request was sent but no answer came: the outcome is unknown; query before acting."""

    outcome_unknown = True


class ResponseSignatureError(SignatureError, _OperationError):
    """A WeChat answer whose signature is missing, wrong or refused by the pinned policy.

    Still a :class:`SignatureError` (never a business error), carrying what every operation error
    carries: ``operation``, the merchant's ``ids``, ``err_code``/``err_code_des`` (empty: an
    unverified answer is not believed) and the two flags. ``outcome_unknown`` is true for the calls
    that change state (``orders.create``, ``orders.close``, ``refunds.create``): the request reached
    *something* that answered, and a damaged or tampered copy of a real success looks exactly like
    this, so the caller must query before concluding the call failed (a refund recorded as "failed"
    while WeChat paid it out invites a second refund).
    """

    retryable = False


class WeChatError(_OperationError):
    """WeChat answered, and the answer was not a success."""

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        ids: Mapping[str, str] | None = None,
        err_code: str = "",
        err_code_des: str = "",
        retryable: bool | None = None,
        outcome_unknown: bool | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        self.err_code = err_code
        self.err_code_des = err_code_des
        self.fields: dict[str, str] = dict(fields or {})
        super().__init__(
            message,
            operation=operation,
            ids=ids,
            retryable=retryable,
            outcome_unknown=outcome_unknown,
        )


class CommunicationError(WeChatError):
    """``return_code=FAIL``: the request did not pass WeChat's protocol checks (``return_msg`` says why)."""

    @property
    def return_msg(self) -> str:
        return self.err_code_des


class UnexpectedResponseError(WeChatError):
    """An answer that does not follow the protocol (not XML, no ``return_code``, HTTP 5xx...)."""

    outcome_unknown = True


class BusinessError(WeChatError):
    """``result_code=FAIL``; ``err_code`` and ``err_code_des`` say why."""
