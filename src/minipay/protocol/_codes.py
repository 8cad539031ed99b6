"""The WeChat error-code table shared by the SDK and the sandbox.

One table (spec 4, 5.3, 8.4, 9, 10.4, 11, 13, 14) maps ``(operation, err_code)`` to what the code
means, whether the *same* request may be sent again (``retryable``), whether the SDK may do so on
its own right away (``auto_retry``), whether the outcome is unknown so the caller must query
(``outcome_unknown``), and what the caller should do. The sandbox answers with these codes and
descriptions; the SDK turns them into :class:`~minipay.protocol.BusinessError` subclasses.

Operations are named by their wire name, the last segment of their path (``OPERATION_TABLE``):
``unifiedorder``, ``orderquery``, ``closeorder``, ``refund``, ``refundquery``, ``downloadbill``,
``queryexchagerate`` (sic), ``report``; ``jscode2session`` for Mini Program login.
:func:`~minipay.protocol.check_response` (``_check``) applies the table to an answer.

>>> info = describe_code("refund", "NOTENOUGH")
>>> info.retryable, info.auto_retry, info.error.__name__
(True, False, 'NotEnoughError')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

from minipay.protocol._errors import BusinessError, LoginError
from minipay.protocol._operations import OPERATIONS, is_mutating

__all__ = [
    "ERROR_CODES",
    "LOGIN_ERRCODES",
    "AppIdMchIdNotMatchError",
    "AppIdNotExistError",
    "BizerrNeedRetryError",
    "CodeInfo",
    "FrequencyLimitedError",
    "InvalidReqTooMuchError",
    "InvalidRequestError",
    "InvalidTransactionIdError",
    "LackParamsError",
    "LoginCodeInfo",
    "MchIdNotExistError",
    "NoAuthError",
    "NotEnoughError",
    "NotUtf8Error",
    "OrderClosedError",
    "OrderNotFoundError",
    "OrderPaidError",
    "OutTradeNoUsedError",
    "ParamError",
    "PostDataEmptyError",
    "RefundNotFoundError",
    "RequirePostMethodError",
    "TradeOverdueError",
    "TradeStateError",
    "UserAccountAbnormalError",
    "WeChatSignError",
    "WeChatSystemError",
    "XmlFormatError",
    "business_error",
    "describe_code",
    "describe_login_errcode",
    "login_error",
]

# --- the BusinessError subclasses, one per err_code (the tree is drawn in _errors.py) -------------


class WeChatSystemError(BusinessError):
    """``SYSTEMERROR``: WeChat failed internally; resend the identical request (query first when mutating)."""

    retryable = True


class OrderPaidError(BusinessError):
    """``ORDERPAID``: the order is already paid; treat it as paid (also the answer of a too-late close)."""


class OrderClosedError(BusinessError):
    """``ORDERCLOSED``: the order is closed; a new payment needs a new ``out_trade_no``."""


class OrderNotFoundError(BusinessError):
    """``ORDERNOTEXIST``: WeChat has no such order (or, for a refund, it is not paid)."""


class RefundNotFoundError(BusinessError):
    """``REFUNDNOTEXIST``: no refund matches the given identifiers."""


class OutTradeNoUsedError(BusinessError):
    """``OUT_TRADE_NO_USED``: the ``out_trade_no`` was used with different parameters."""


class InvalidRequestError(BusinessError):
    """``INVALID_REQUEST``: malformed parameters, or re-entry with parameters that differ from the original."""


class ParamError(BusinessError):
    """``PARAM_ERROR``: a parameter is wrong (amount over the refundable rest, currency mismatch, ...)."""


class LackParamsError(BusinessError):
    """``LACK_PARAMS``: a mandatory parameter is missing."""


class NotEnoughError(BusinessError):
    """``NOTENOUGH`` / ``NOT_ENOUGH``: for a refund, today's CNY pool is short; retry later, same number."""


class WeChatSignError(BusinessError):
    """``SIGNERROR``: WeChat says the request signature is wrong (check the key and ``sign_type``)."""


class AppIdNotExistError(BusinessError):
    """``APPID_NOT_EXIST``: the ``appid`` is unknown."""


class MchIdNotExistError(BusinessError):
    """``MCHID_NOT_EXIST``: the ``mch_id`` is unknown."""


class AppIdMchIdNotMatchError(BusinessError):
    """``APPID_MCHID_NOT_MATCH``: ``appid``/``mch_id`` (or ``sub_appid``/``sub_mch_id``) are not bound."""


class NoAuthError(BusinessError):
    """``NOAUTH``: the merchant or sub-merchant lacks the permission for this API or product."""


class TradeStateError(BusinessError):
    """``TRADE_STATE_ERROR``: the order's state does not allow this (e.g. a close too soon); query it."""


class BizerrNeedRetryError(BusinessError):
    """``BIZERR_NEED_RETRY``: a concurrency rejection; resend the identical request."""

    retryable = True


class FrequencyLimitedError(BusinessError):
    """``FREQUENCY_LIMITED``: rate limited; slow down and resend later."""

    retryable = True


class InvalidReqTooMuchError(BusinessError):
    """``INVALID_REQ_TOO_MUCH``: too many invalid requests; blocked for at least a minute."""

    retryable = True


class TradeOverdueError(BusinessError):
    """``TRADE_OVERDUE``: the order is older than the refund window (1 year); refund offline."""


class UserAccountAbnormalError(BusinessError):
    """``USER_ACCOUNT_ABNORMAL``: the payer's account is closed or frozen; refund offline."""


class InvalidTransactionIdError(BusinessError):
    """``INVALID_TRANSACTIONID``: the ``transaction_id`` is not a valid WeChat transaction."""


class XmlFormatError(BusinessError):
    """``XML_FORMAT_ERROR``: WeChat could not read the request XML."""


class RequirePostMethodError(BusinessError):
    """``REQUIRE_POST_METHOD``: the request was not a POST."""


class PostDataEmptyError(BusinessError):
    """``POST_DATA_EMPTY``: the request body was empty."""


class NotUtf8Error(BusinessError):
    """``NOT_UTF8``: the request was not UTF-8."""


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What one ``err_code`` means for one operation.

    ``retryable``: the identical request (same ``out_trade_no`` / ``out_refund_no``, same amounts)
    may be sent again. ``auto_retry``: the SDK may resend it right away inside its retry loop
    (``retryable`` codes that are not ``auto_retry`` mean "later": minutes, not milliseconds).
    ``outcome_unknown``: the operation may have happened anyway; query before concluding.
    ``known`` is False for a code the table does not list (the conservative default).
    """

    operation: str
    err_code: str
    meaning: str
    action: str
    error: type[BusinessError]
    retryable: bool = False
    auto_retry: bool = False
    outcome_unknown: bool = False
    known: bool = True

    @property
    def err_code_des(self) -> str:
        """The description as WeChat words it (the Chinese text of ``meaning``), for the sandbox."""
        return self.meaning.split(" (", 1)[0]


_ALL: Final = "*"

# (operations or "*", err_code, class, meaning, action, retryable, auto_retry, outcome_unknown)
_Row: TypeAlias = tuple[str, str, type[BusinessError], str, str, bool, bool, bool]
_ROWS: Final[tuple[_Row, ...]] = (
    # Common protocol errors (spec 5.3, 8.4 [DOM]): the request itself is wrong; fix it, never resend as is.
    (_ALL, "SIGNERROR", WeChatSignError, "签名错误 (signature wrong)",
     "Check the API key and sign_type; `minipay sign` shows the string-to-sign.", False, False, False),
    (_ALL, "XML_FORMAT_ERROR", XmlFormatError, "XML格式错误 (XML malformed)", "Fix the request body.",
     False, False, False),
    (_ALL, "REQUIRE_POST_METHOD", RequirePostMethodError, "请使用post方法 (POST required)", "Send a POST.",
     False, False, False),
    (_ALL, "POST_DATA_EMPTY", PostDataEmptyError, "post数据为空 (empty body)", "Send the XML body.",
     False, False, False),
    (_ALL, "NOT_UTF8", NotUtf8Error, "编码格式错误 (not UTF-8)", "Encode the body as UTF-8.", False, False, False),
    (_ALL, "APPID_NOT_EXIST", AppIdNotExistError, "APPID不存在 (unknown appid)", "Fix the appid configuration.",
     False, False, False),
    (_ALL, "MCHID_NOT_EXIST", MchIdNotExistError, "MCHID不存在 (unknown mch_id)", "Fix the mch_id configuration.",
     False, False, False),
    (_ALL, "APPID_MCHID_NOT_MATCH", AppIdMchIdNotMatchError, "appid和mch_id不匹配 (appid and mch_id not bound)",
     "Bind the AppID to the merchant ID (sub_appid to sub_mch_id) in the merchant platform.", False, False, False),
    (_ALL, "LACK_PARAMS", LackParamsError, "缺少参数 (mandatory parameter missing)",
     "Add the missing parameter named in err_code_des.", False, False, False),
    (_ALL, "PARAM_ERROR", ParamError, "参数错误 (parameter error)", "Fix the parameter named in err_code_des.",
     False, False, False),
    (_ALL, "NOAUTH", NoAuthError, "商户无此接口权限 (no permission for this API/product)",
     "Ask the institution to enable the product for the sub-merchant; do not retry.", False, False, False),
    (_ALL, "FREQUENCY_LIMITED", FrequencyLimitedError, "频率限制 (rate limited)",
     "Slow down; resend the same request later.", True, False, False),
    (_ALL, "INVALID_REQ_TOO_MUCH", InvalidReqTooMuchError, "无效请求过多 (too many invalid requests)",
     "Stop sending invalid requests; wait at least one minute.", True, False, False),
    # System errors: for reads a plain resend; for writes the outcome is unknown until queried.
    (_ALL, "SYSTEMERROR", WeChatSystemError, "系统错误 (system error)",
     "Resend the identical request after a short pause.", True, True, False),
    ("unifiedorder closeorder refund", "SYSTEMERROR", WeChatSystemError, "系统超时 (system error or timeout)",
     "Resend the identical request (same out_trade_no/out_refund_no, same amounts); query if it keeps failing.",
     True, True, True),
    # Unified order (spec 5.3, 5.4).
    ("unifiedorder", "ORDERPAID", OrderPaidError, "该订单已支付 (order already paid)",
     "Treat the order as paid and stop; confirm with a query.", False, False, False),
    ("unifiedorder", "ORDERCLOSED", OrderClosedError, "该订单已关 (order already closed)",
     "Create a new out_trade_no for a new payment.", False, False, False),
    ("unifiedorder", "OUT_TRADE_NO_USED", OutTradeNoUsedError,
     "商户订单号重复 (out_trade_no used with other parameters)",
     "Resend the exact original parameters, or use a new out_trade_no.", False, False, False),
    ("unifiedorder", "INVALID_REQUEST", InvalidRequestError,
     "参数错误 (bad parameter format, or re-entry with parameters that differ from the original)",
     "Resend the original parameters, or use a new out_trade_no.", False, False, False),
    ("unifiedorder", "NOTENOUGH", NotEnoughError, "余额不足 (user balance insufficient)",
     "The user should pay with another card.", False, False, False),
    # Query order (spec 8.4).
    ("orderquery", "ORDERNOTEXIST", OrderNotFoundError, "此交易订单号不存在 (no such order)",
     "Check the number; if a create timed out, re-run unified order with the same parameters.", False, False, False),
    # Close order (spec 9).
    ("closeorder", "ORDERPAID", OrderPaidError, "订单已支付，不能发起关单 (already paid, cannot close)",
     "The user won the race: treat the order as paid; do not retry.", False, False, False),
    ("closeorder", "ORDERCLOSED", OrderClosedError, "订单已关闭 (already closed)",
     "Nothing to do: closing is idempotent.", False, False, False),
    ("closeorder", "ORDERNOTEXIST", OrderNotFoundError, "订单不存在 (no such order)",
     "Nothing to close: WeChat never saw the order.", False, False, False),
    ("closeorder", "TRADE_STATE_ERROR", TradeStateError,
     "订单状态错误 (state does not allow closing, e.g. less than 5 minutes old)",
     "Query the order; close again later if it is still NOTPAY.", True, False, False),
    # Refund (spec 10.4).
    ("refund", "BIZERR_NEED_RETRY", BizerrNeedRetryError, "退款业务流程错误，需要商户触发重试 (concurrency rejection)",
     "Resend the identical request (same out_refund_no).", True, True, False),
    ("refund", "TRADE_OVERDUE", TradeOverdueError, "订单已经超过退款期限 (older than the refund window)",
     "Refund offline.", False, False, False),
    ("refund", "ERROR", BusinessError, "业务错误 (business error, see err_code_des)",
     "Act on err_code_des; query the refund before creating a new one.", False, False, True),
    ("refund", "USER_ACCOUNT_ABNORMAL", UserAccountAbnormalError, "退款请求失败 (payer account abnormal)",
     "Refund offline.", False, False, False),
    ("refund", "NOTENOUGH", NotEnoughError, "余额不足 (today's CNY pool is too small for this refund)",
     "Retry later with the same out_refund_no.", True, False, False),
    ("refund", "NOT_ENOUGH", NotEnoughError, "余额不足 (today's CNY pool is too small for this refund)",
     "Retry later with the same out_refund_no.", True, False, False),
    ("refund", "INVALID_TRANSACTIONID", InvalidTransactionIdError, "无效transaction_id (bad transaction_id)",
     "Fix the transaction_id.", False, False, False),
    ("refund", "ORDERNOTEXIST", OrderNotFoundError, "此交易订单号不存在 (order not found or not paid)",
     "Check the order number and that the order is paid.", False, False, False),
    # Refund query (spec 11).
    ("refundquery", "REFUNDNOTEXIST", RefundNotFoundError, "退款订单查询失败 (no refund for these identifiers)",
     "Check the number; the order may be unpaid or never refunded.", False, False, False),
    ("refundquery", "INVALID_TRANSACTIONID", InvalidTransactionIdError, "无效transaction_id (bad transaction_id)",
     "Fix the transaction_id.", False, False, False),
    ("refundquery", "ORDERNOTEXIST", OrderNotFoundError, "此交易订单号不存在 (no such order)",
     "Check the order number.", False, False, False),
)  # fmt: skip


def _build_table() -> Mapping[tuple[str, str], CodeInfo]:
    table: dict[tuple[str, str], CodeInfo] = {}
    for operations, code, error, meaning, action, retryable, auto_retry, unknown in _ROWS:
        names = sorted(OPERATIONS) if operations == _ALL else operations.split()
        for operation in names:
            table[(operation, code)] = CodeInfo(
                operation=operation,
                err_code=code,
                meaning=meaning,
                action=action,
                error=error,
                retryable=retryable,
                auto_retry=auto_retry,
                outcome_unknown=unknown,
            )
    return MappingProxyType(table)


#: ``(operation, err_code) -> CodeInfo`` for every code the spec lists.
ERROR_CODES: Final[Mapping[tuple[str, str], CodeInfo]] = _build_table()


def describe_code(operation: str, err_code: str) -> CodeInfo:
    """What ``err_code`` means for ``operation``; a conservative entry for a code the table lacks.

    Unknown codes (spec 19 #20) are "failed, read ``err_code_des``", not retryable; on a mutating
    operation their outcome is unknown, because a business FAIL may hide a success (spec 2.3).

    >>> describe_code("closeorder", "ORDERPAID").action
    'The user won the race: treat the order as paid; do not retry.'
    >>> describe_code("unifiedorder", "SOMETHING_NEW").outcome_unknown
    True
    """
    info = ERROR_CODES.get((operation, err_code))
    if info is not None:
        return info
    return CodeInfo(
        operation=operation,
        err_code=err_code,
        meaning="unlisted error code (see err_code_des)",
        action="Read err_code_des; query before acting again." if is_mutating(operation) else "Read err_code_des.",
        error=BusinessError,
        outcome_unknown=is_mutating(operation),
        known=False,
    )


def business_error(
    operation: str,
    err_code: str,
    err_code_des: str = "",
    *,
    ids: Mapping[str, str] | None = None,
    fields: Mapping[str, str] | None = None,
) -> BusinessError:
    """The :class:`BusinessError` subclass for ``err_code``, carrying the table's flags."""
    info = describe_code(operation, err_code)
    detail = f"{err_code}: {err_code_des}" if err_code_des else err_code
    return info.error(
        f"{detail} -- {info.action}",
        operation=operation,
        ids=ids,
        err_code=err_code,
        err_code_des=err_code_des,
        retryable=info.retryable,
        outcome_unknown=info.outcome_unknown,
        fields=fields,
    )


# --- Mini Program login (spec 4) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginCodeInfo:
    """What a ``jscode2session`` ``errcode`` means; ``retryable``: the same call may be repeated."""

    errcode: int
    meaning: str
    action: str
    retryable: bool
    errmsg: str


#: ``errcode -> LoginCodeInfo`` (spec 4). ``errmsg`` is what the sandbox answers.
LOGIN_ERRCODES: Final[Mapping[int, LoginCodeInfo]] = MappingProxyType(
    {
        -1: LoginCodeInfo(-1, "system busy", "Retry later with back-off.", True, "system error"),
        40029: LoginCodeInfo(40029, "invalid js_code (wrong or expired)",
                             "Ask the Mini Program to call wx.login again.", False, "invalid code"),
        40163: LoginCodeInfo(40163, "js_code already used", "Get a fresh code from wx.login.", False,
                             "code been used"),
        45011: LoginCodeInfo(45011, "frequency limit (about 100 calls per user per minute)",
                             "Slow down; retry in the next minute.", True, "api minute-quota reach limit"),
        40226: LoginCodeInfo(40226, "high-risk user, login blocked", "Do not retry; show an error.", False,
                             "invalid user: high risk"),
    }
)  # fmt: skip


def describe_login_errcode(errcode: int) -> LoginCodeInfo:
    """The table entry for a login ``errcode``; a non-retryable default for unlisted codes."""
    info = LOGIN_ERRCODES.get(errcode)
    if info is not None:
        return info
    return LoginCodeInfo(errcode, "unlisted errcode (see errmsg)", "Read errmsg.", False, "")


def login_error(errcode: int, errmsg: str) -> LoginError:
    """The :class:`LoginError` for a ``jscode2session`` error answer, with ``retryable`` from the table."""
    return LoginError(errcode, errmsg, retryable=describe_login_errcode(errcode).retryable)
