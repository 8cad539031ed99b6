"""The service's JSON on its hot paths, with :mod:`orjson`: :func:`dumps`, :func:`loads`,
:func:`dumps_text` (the JSON columns' serializer).

A payment's view (about 900 bytes) costs the standard library's encoder about ten times what it
costs orjson (responses: :class:`minipay.server._http.JSONBody`), and reading a JSON column (a
payment's ``metadata``, at every read) twenty times: on ``GET /v1/payments/{id}`` the two were a
tenth of the service's CPU. The bytes are the same as Starlette's ``JSONResponse`` gives for
everything the views hold (strings, integers, booleans, null, objects and arrays): compact
separators, UTF-8 rather than ``\\u`` escapes, the same escapes of control characters.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_text", "loads"]


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON (what a Starlette ``JSONResponse`` would send)."""
    return orjson.dumps(content)


#: Datetimes and dataclasses left to the standard library, which refuses them, as it always did.
_AS_BEFORE = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps_text(value: Any) -> str:
    """``value`` as the text of a JSON column: compact, with orjson (a first-time notification's
    event rows and webhook event, a payment's view among them, cost the standard library's encoder
    about a fiftieth of the service's CPU). What orjson refuses and the standard library writes
    (integers beyond 64 bits, keys that are not strings) is written by the standard library, as
    before, and what it refused is still refused (``TypeError``) where orjson can be told to: a
    datetime or a dataclass (the service stores datetimes as ISO text it makes itself). The
    differences: a UUID or an enum that is not a ``str`` or ``int`` enum, which the standard library
    refused, is written as its value; a float NaN or infinity, which it wrote as ``NaN`` (not JSON: a
    PostgreSQL ``json`` column refuses it), is written as ``null``. Nothing the service writes is of
    these kinds. Rows written before keep their spacing (``", "``, ``": "``); :func:`loads` reads
    both."""
    try:
        return orjson.dumps(value, option=_AS_BEFORE).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)


def loads(text: str | bytes) -> Any:
    """A JSON document. What orjson refuses and the standard library reads (integers beyond 64 bits,
    ``NaN``, which ``json.dumps`` writes) is read by the standard library, so a stored value
    reads back as it always did."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
