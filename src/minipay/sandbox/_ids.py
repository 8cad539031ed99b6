"""Identifiers of the shapes WeChat uses (spec 18.3), from a seeded generator so runs repeat."""

from __future__ import annotations

import base64
import hashlib
import random
import string
from datetime import datetime

from minipay.protocol import CHINA_TZ

__all__ = ["IdFactory", "openid_for"]

_ALNUM = string.ascii_letters + string.digits


def openid_for(appid: str, user: str) -> str:
    """A stable 28-character openid for ``user`` under ``appid`` (same inputs, same openid).

    >>> openid_for("wx1234567890abcdef", "alice") == openid_for("wx1234567890abcdef", "alice")
    True
    >>> len(openid_for("wx1234567890abcdef", "alice"))
    28
    """
    digest = hashlib.sha256(f"{appid}\x00{user}".encode()).digest()
    return "o" + base64.urlsafe_b64encode(digest).decode("ascii")[:27]


class IdFactory:
    """Seeded ids: ``prepay_id``, ``transaction_id``, ``refund_id``, nonces and login codes."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def _digits(self, n: int) -> str:
        return "".join(self._rng.choice(string.digits) for _ in range(n))

    def _hex(self, n: int) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(n))

    def nonce(self) -> str:
        return "".join(self._rng.choice(_ALNUM) for _ in range(32))

    def prepay_id(self, now: datetime) -> str:
        """``wx`` + yyyyMMddHHmmss (China time) + 20 hex characters (36 characters)."""
        return "wx" + now.astimezone(CHINA_TZ).strftime("%Y%m%d%H%M%S") + self._hex(20)

    def transaction_id(self, now: datetime) -> str:
        """28 digits starting ``4200``, with the China-time day inside."""
        return "420000" + now.astimezone(CHINA_TZ).strftime("%Y%m%d") + self._digits(14)

    def refund_id(self, now: datetime) -> str:
        """29 digits starting ``50``."""
        return "50000" + now.astimezone(CHINA_TZ).strftime("%Y%m%d") + self._digits(16)

    def js_code(self) -> str:
        return "".join(self._rng.choice(_ALNUM) for _ in range(32))

    def session_key(self) -> str:
        return base64.b64encode(self._rng.randbytes(16)).decode("ascii")
