"""The service's JSON on its hot paths, with :mod:`orjson`: :func:`dumps`, :func:`loads`.

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

__all__ = ["dumps", "loads"]


def dumps(content: Any) -> bytes:
    """``content`` as compact UTF-8 JSON (what a Starlette ``JSONResponse`` would send)."""
    return orjson.dumps(content)


def loads(text: str | bytes) -> Any:
    """A JSON document. What orjson refuses and the standard library reads (integers beyond 64 bits,
    ``NaN``, which ``json.dumps`` writes) is read by the standard library, so a stored value
    reads back as it always did."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
