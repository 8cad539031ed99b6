"""The Mini Program login answer (``jscode2session``, spec 4), a JSON object rather than XML."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from minipay.protocol._codes import login_error
from minipay.protocol._errors import FieldError
from minipay.protocol._fields import field_error
from minipay.protocol._secrets import Secret

__all__ = [
    "Code2SessionResult",
]


# --- Mini Program login ---------------------------------------------------------------------------


class Code2SessionResult(BaseModel):
    """A successful ``jscode2session`` answer (spec 4); ``openid`` is the ``sub_openid``.

    ``session_key`` is a :class:`~minipay.protocol.Secret` (masked in every repr).

    >>> r = Code2SessionResult.from_json({"openid": "oUpF8u", "session_key": "tiihtNczf5v6AKRyjwEUhQ=="})
    >>> r
    Code2SessionResult(openid='oUpF8u', session_key=Secret('**********'), unionid=None)
    """

    model_config = ConfigDict(frozen=True, extra="allow", arbitrary_types_allowed=True)

    openid: str
    session_key: Secret
    unionid: str | None = None

    @field_validator("session_key", mode="before")
    @classmethod
    def _secret(cls, value: object) -> Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise FieldError("session_key", "must be a string")
        return Secret(value)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Code2SessionResult:
        """Judge the decoded JSON: a non-zero ``errcode`` raises :class:`~minipay.protocol.LoginError`
        (``retryable`` from ``LOGIN_ERRCODES``); a success without ``openid`` is a :class:`FieldError`."""
        errcode = data.get("errcode", 0)
        if errcode not in (0, None, "0"):
            try:
                code = int(str(errcode))
            except ValueError:
                code = -1
            raise login_error(code, str(data.get("errmsg", "")))
        payload = {k: v for k, v in data.items() if k not in ("errcode", "errmsg")}
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise field_error(exc) from None
