"""Opaque secrets: an API key whose ``repr``/``str`` never shows it (style habit 5)."""

from __future__ import annotations

import hmac
import re
from typing import Final

from minipay.protocol._errors import ConfigurationError

__all__ = ["ApiKey", "Secret", "as_api_key"]

_API_KEY_RE: Final = re.compile(r"[A-Za-z0-9]{32}")


class Secret:
    """A string that must never reach a log line, an exception text or a repr.

    >>> s = Secret("hunter2")
    >>> s
    Secret('**********')
    >>> s.reveal()
    'hunter2'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise ConfigurationError(f"{type(self).__name__} must be a string, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call this only where the value is used, never to print it."""
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:  # pickling would leak through copies of state dumps
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class ApiKey(Secret):
    """The institution's v2 API key: exactly 32 letters or digits (spec 3.1, 16.5).

    >>> ApiKey("a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6")
    ApiKey('**********')
    >>> ApiKey("short")
    Traceback (most recent call last):
    ...
    minipay.protocol._errors.ConfigurationError: an API key must be exactly 32 letters or digits (got 5 characters)
    """

    __slots__ = ()

    def __init__(self, value: str) -> None:
        super().__init__(value)
        if not _API_KEY_RE.fullmatch(self._value):
            # Say what is wrong without echoing the value.
            raise ConfigurationError(
                f"an API key must be exactly 32 letters or digits (got {len(self._value)} characters)"
            )


def as_api_key(key: str | ApiKey) -> ApiKey:
    """Accept a plain string or an :class:`ApiKey` wherever a key is taken."""
    return key if isinstance(key, ApiKey) else ApiKey(key)
