"""Wire-coded errors: each one renders as the answer WeChat would give (spec 2.3, 18.4).

``ReturnFail`` -> ``return_code=FAIL`` + ``return_msg``, no ``sign``.
``BizFail``    -> ``return_code=SUCCESS``, ``result_code=FAIL``, ``err_code``, ``err_code_des``, signed.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ERR_DES", "BizFail", "ControlError", "ReturnFail", "WireError"]

#: err_code -> err_code_des, as WeChat words them (domestic/legacy text, spec 5.3, 8.4, 9, 10.4, 11.2).
ERR_DES: Final[dict[str, str]] = {
    "SYSTEMERROR": "系统错误",
    "ORDERPAID": "该订单已支付",
    "ORDERCLOSED": "订单已关闭",
    "ORDERNOTEXIST": "订单不存在",
    "OUT_TRADE_NO_USED": "商户订单号重复",
    "INVALID_REQUEST": "201 商户订单号重复",
    "LACK_PARAMS": "缺少参数",
    "PARAM_ERROR": "参数错误",
    "NOAUTH": "商户无此接口权限",
    "APPID_MCHID_NOT_MATCH": "appid和mch_id不匹配",
    "TRADE_STATE_ERROR": "订单状态错误",
    "REFUNDNOTEXIST": "退款订单查询失败",
    "NOTENOUGH": "基本账户余额不足，请充值后重新发起",
    "TRADE_OVERDUE": "订单已经超过退款期限",
    "FREQUENCY_LIMITED": "频率限制",
    "ERROR": "业务错误",
    "INVALID_TRANSACTIONID": "无效transaction_id",
}


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
    """``result_code=FAIL`` with an ``err_code`` (signed like any answer)."""

    def __init__(self, err_code: str, err_code_des: str | None = None) -> None:
        des = err_code_des if err_code_des is not None else ERR_DES.get(err_code, err_code)
        super().__init__(f"{err_code}: {des}")
        self.err_code = err_code
        self.err_code_des = des


class ControlError(Exception):
    """A control-API request that cannot be served: answered as JSON ``{"error": ...}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
