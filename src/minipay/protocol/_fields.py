"""Single wire values: the one bounded integer parser, text rendering, pydantic errors as FieldError.

Every received integer -- an amount in a response, a notification, a request the sandbox reads, a
field the service re-reads -- goes through :func:`parse_wire_int`: plain ASCII digits only
(``"１０００".isdigit()`` and ``"²".isdigit()`` are true in Python), and at most
:data:`MAX_WIRE_DIGITS` of them, which also keeps ``int()`` far from its 4300-digit limit.

>>> parse_wire_int("1000", "total_fee")
1000
>>> parse_wire_int("１０００", "total_fee")
Traceback (most recent call last):
...
minipay.protocol._errors.FieldError: total_fee: expected an integer, got '１０００'
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

from pydantic import ValidationError

from minipay.protocol._errors import FieldError
from minipay.protocol._secrets import Secret
from minipay.protocol._time import format_wx_date, format_wx_time

__all__ = ["MAX_WIRE_DIGITS", "field_error", "optional_wire_int", "parse_wire_int", "wire_text"]

#: WeChat's Int fields are 64-bit: 18 digits always fit.
MAX_WIRE_DIGITS: Final = 18


def parse_wire_int(value: str, name: str, *, negative: bool = True, max_digits: int = MAX_WIRE_DIGITS) -> int:
    """A received integer field: an optional ``-`` (when ``negative``), then 1 to ``max_digits`` ASCII digits.

    Raises :class:`FieldError` naming ``name`` otherwise (the value is quoted, cut to 40 characters).
    """
    if value.isdigit() and value.isascii() and len(value) <= max_digits:
        return int(value)  # the common case, first
    digits = value[1:] if negative and value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()):
        kind = "an integer" if negative else "a non-negative integer"
        raise FieldError(name, f"expected {kind}, got {value[:40]!r}")
    if len(digits) > max_digits:
        raise FieldError(name, f"expected an integer of at most {max_digits} digits, got {len(digits)}")
    return int(value)


def optional_wire_int(name: str, value: str) -> int | None:
    """:func:`parse_wire_int` for a field of a received message, where empty means absent."""
    if value == "":
        return None
    return parse_wire_int(value, name)


def wire_text(value: object) -> str:
    """A model attribute as its wire string (times in China time; a :class:`Secret` is refused)."""
    if isinstance(value, bool):
        raise TypeError("bool is not a wire value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return format_wx_time(value)
    if isinstance(value, date):
        return format_wx_date(value)
    if isinstance(value, Secret):
        raise TypeError("a Secret is never put on the wire by to_fields()")
    return str(value)


def field_error(exc: ValidationError) -> FieldError:
    """The first problem of a pydantic ``ValidationError`` as our :class:`FieldError`."""
    first = exc.errors(include_url=False)[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, FieldError):
        return original
    loc = first.get("loc") or ("?",)
    field = str(loc[0]) if loc else "?"
    message = str(original) if isinstance(original, Exception) else first.get("msg", "invalid value")
    return FieldError(field, message)
