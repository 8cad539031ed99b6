"""Wire-coded errors: each one renders as the answer WeChat would give (spec 2.3, 18.4).

``ReturnFail`` -> ``return_code=FAIL`` + ``return_msg``, no ``sign``.
``BizFail``    -> ``return_code=SUCCESS``, ``result_code=FAIL``, ``err_code``, ``err_code_des``, signed.
"""

from __future__ import annotations

from typing import Final

from minipay.protocol import ERROR_CODES, describe_code

__all__ = ["EMITTED_CODES", "BizFail", "ControlError", "ReturnFail", "WireError", "describe_err_code"]

#: Every err_code the sandbox's business rules emit with their default config (the configurable
#: codes under ``[rules]`` default to members of this set). Their ``err_code_des`` texts are not
#: kept here: :func:`describe_err_code` reads them from the protocol's error-code table.
EMITTED_CODES: Final[frozenset[str]] = frozenset(
    {
        "SYSTEMERROR", "ORDERPAID", "ORDERCLOSED", "ORDERNOTEXIST", "OUT_TRADE_NO_USED", "INVALID_REQUEST",
        "LACK_PARAMS", "PARAM_ERROR", "NOAUTH", "APPID_MCHID_NOT_MATCH", "TRADE_STATE_ERROR", "REFUNDNOTEXIST",
        "NOTENOUGH", "TRADE_OVERDUE", "FREQUENCY_LIMITED", "ERROR", "INVALID_TRANSACTIONID",
    }
)  # fmt: skip


def describe_err_code(operation: str, err_code: str) -> str:
    """``err_code_des`` as WeChat words it, from the protocol's table (the single source of truth).

    The table's text for ``(operation, err_code)``; for a code the table lists only under other
    operations (a configured ``[rules]`` code), its first listed text; for a code it does not list
    at all, the code itself.
    """
    info = describe_code(operation, err_code)
    if info.known:
        return info.err_code_des
    for (_, code), other in sorted(ERROR_CODES.items()):
        if code == err_code:
            return other.err_code_des
    return err_code


class WireError(Exception):
    """Base of the errors that render as a WeChat answer."""


class ReturnFail(WireError):
    """``return_code=FAIL``: the request failed WeChat's protocol checks."""

    def __init__(self, return_msg: str, *, error_code: str | None = None) -> None:
        super().__init__(return_msg)
        self.return_msg = return_msg
        self.error_code = error_code

    def fields(self) -> dict[str, str]:
        out = {"return_code": "FAIL", "return_msg": self.return_msg}
        if self.error_code is not None:
            out["error_code"] = self.error_code
        return out


class BizFail(WireError):
    """``result_code=FAIL`` with an ``err_code`` (signed like any answer).

    ``err_code_des``: an explicit text (naming the field or the rule); without it the answer
    carries the protocol table's text for the endpoint (:meth:`describe`).
    """

    def __init__(self, err_code: str, err_code_des: str | None = None) -> None:
        super().__init__(err_code if err_code_des is None else f"{err_code}: {err_code_des}")
        self.err_code = err_code
        self.err_code_des = err_code_des

    def describe(self, operation: str) -> str:
        """The ``err_code_des`` to send for ``operation`` (e.g. ``orderquery``)."""
        if self.err_code_des is not None:
            return self.err_code_des
        return describe_err_code(operation, self.err_code)


class ControlError(Exception):
    """A control-API request that cannot be served: answered as JSON ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
