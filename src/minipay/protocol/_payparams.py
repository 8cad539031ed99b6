""" "Sign again": the object ``wx.requestPayment`` needs (spec 6).

``paySign`` covers ``appId, nonceStr, package, signType, timeStamp`` with the institution's API key;
``appId`` is the Mini Program's AppID (``sub_appid`` in institution mode). ``appId`` is signed but
not passed to ``wx.requestPayment``: the running Mini Program supplies it.
"""

from __future__ import annotations

import time
from typing import TypedDict

from minipay.protocol._errors import FieldError, SignatureError
from minipay.protocol._rules import check_nonce
from minipay.protocol._secrets import ApiKey
from minipay.protocol._signing import MD5, SignType, new_nonce, sign, verify

__all__ = ["PayParams", "build_pay_params", "verify_pay_params"]

_SECONDS_LIMIT = 10**10  # Unix seconds stay below this until the year 2286


class PayParams(TypedDict):
    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


PayParams.__doc__ = "Exactly the object passed to ``wx.requestPayment`` (``appId`` is signed, not passed)."


def build_pay_params(
    *,
    app_id: str,
    prepay_id: str,
    key: str | ApiKey,
    sign_type: SignType | str = MD5,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> PayParams:
    """Sign the five fields for ``wx.requestPayment``.

    ``sign_type`` must be the one used at unified order. ``timestamp`` (Unix seconds, not
    milliseconds) and ``nonce`` (1-32 letters or digits) default to now and a fresh random nonce;
    a bad one is a :class:`FieldError`.

    >>> p = build_pay_params(app_id="wxd678efh567hg6787", prepay_id="wx2017033010242291fcfe0db70013231072",
    ...     key="qazwsxedcrfvtgbyhnujmikolp111111", timestamp=1490840662,
    ...     nonce="5K8264ILTKCH16CQ2502SI8ZNMTM67VS")
    >>> p["paySign"]
    '22D9B4E54AB1950F51E0649E8810ACD6'
    """
    if not prepay_id:
        raise ValueError("prepay_id is required")
    if not app_id:
        raise ValueError("app_id (the Mini Program's AppID, sub_appid) is required")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 < timestamp < _SECONDS_LIMIT
    ):
        # WeChat wants Unix *seconds* (10 digits); milliseconds are the classic mistake (spec 16.3).
        raise FieldError("timeStamp", f"must be Unix seconds (an int below 10^10), got {timestamp!r}")
    if nonce is not None:
        check_nonce(nonce, "nonceStr")
    signed = {
        "appId": app_id,
        "timeStamp": str(int(time.time()) if timestamp is None else timestamp),
        "nonceStr": new_nonce() if nonce is None else nonce,
        "package": f"prepay_id={prepay_id}",
        "signType": sign_type,
    }
    pay_sign = sign(signed, key, sign_type)
    return {
        "timeStamp": signed["timeStamp"],
        "nonceStr": signed["nonceStr"],
        "package": signed["package"],
        "signType": signed["signType"],
        "paySign": pay_sign,
    }


def verify_pay_params(params: PayParams, *, app_id: str, key: str | ApiKey) -> str:
    """Check ``paySign`` as the WeChat client does (with ``appId`` = ``app_id``); returns the prepay_id.

    Raises :class:`SignatureError` if the signature does not match or a field is missing.
    """
    try:
        fields = {
            "appId": app_id,
            "timeStamp": params["timeStamp"],
            "nonceStr": params["nonceStr"],
            "package": params["package"],
            "signType": params["signType"],
            "sign": params["paySign"],
        }
    except KeyError as exc:
        raise SignatureError(f"pay params lack {exc.args[0]!r}") from None
    if not all(isinstance(v, str) for v in fields.values()):
        raise SignatureError("pay params must be strings")
    verify(fields, key, fields["signType"])
    package = fields["package"]
    if not package.startswith("prepay_id=") or len(package) == len("prepay_id="):
        raise SignatureError("package must be 'prepay_id=<prepay_id>'")
    return package.removeprefix("prepay_id=")
