"""Masking of key-looking values in URLs before they reach a log.

The service's own access log leaves the query string out; other loggers write whole URLs: uvicorn's
access log (on by default under ``uvicorn --factory``) writes the request line with its query, and
httpx2 logs every outgoing request URL (webhook URLs may carry the receiver's own token). A key sent
as ``?api_key=`` is refused, but it must not be written down either. :class:`RedactUrls` is installed
on those loggers and masks, in every URL-looking argument of a record:

- the password of ``user:password@`` userinfo;
- the value of a query parameter whose name mentions a key, secret, token, password, signature or
  auth(orization), or a session, code or ticket;
- any query value that looks like a key: this service's (``sk_``, ``adm_``, ``ops_``, ``whsec_``
  prefixes) or any run of 24 or more letters, digits, ``-`` and ``_``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

__all__ = ["MASK", "RedactUrls", "install_url_redaction", "redact_url"]

MASK: Final = "***"

_SECRET_NAME: Final = re.compile(
    r"key|secret|token|passw|pwd|sig|auth|credential|session|code|ticket|bearer", re.IGNORECASE
)
_KEY_VALUE: Final = re.compile(r"(?:sk|adm|ops|whsec|key|tok)_[\w-]+|[\w-]{24,}", re.IGNORECASE)
_USERINFO: Final = re.compile(r"^([a-z][a-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@", re.IGNORECASE)
_LOGGERS: Final = ("uvicorn.access", "uvicorn.error", "httpx2")


def _redact_query(query: str) -> str:
    parts = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        if not sep:
            if _KEY_VALUE.fullmatch(name):
                name = MASK  # a bare key: ?sk_live_...
        elif value.strip("*") and (_SECRET_NAME.search(name) or _KEY_VALUE.fullmatch(value)):
            value = MASK  # (an empty value, or one masked already by the SDK's own filter, stays)
        parts.append(f"{name}{sep}{value}")
    return "&".join(parts)


def redact_url(url: str) -> str:
    """``url`` (absolute, or a path with its query) with key-looking values masked.

    >>> redact_url("/v1/payments?api_key=sk_live_abc&limit=5")
    '/v1/payments?api_key=***&limit=5'
    """
    url = _USERINFO.sub(rf"\1:{MASK}@", url)
    head, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    return f"{head}?{_redact_query(query)}{hash_sep}{fragment}"


class RedactUrls(logging.Filter):
    """Masks key-looking values in every argument of a record that looks like a URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        return True


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact_url(arg) if ("?" in arg or "@" in arg) else arg
    if type(arg).__name__ == "URL":  # httpx2.URL and its kind: logged through str()
        text = str(arg)
        return redact_url(text) if ("?" in text or "@" in text) else arg
    return arg


_FILTER: Final = RedactUrls()


def install_url_redaction() -> None:
    """Attach :class:`RedactUrls` to the loggers that write whole URLs (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
