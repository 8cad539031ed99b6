"""Field rules of spec 16.5, shared by the client (before sending) and the sandbox (on receipt).

Each check returns the value unchanged or raises :class:`FieldError` naming the field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from minipay.protocol._errors import FieldError
from minipay.protocol._money import DEFAULT_CURRENCIES, CurrencyTable

__all__ = [
    "check_amount",
    "check_fee_type",
    "check_id",
    "check_ip",
    "check_nonce",
    "check_notify_url",
    "check_out_refund_no",
    "check_out_trade_no",
    "check_text",
]

_OUT_TRADE_NO_RE: Final = re.compile(r"[0-9A-Za-z_\-|*]{1,32}")
_OUT_REFUND_NO_RE: Final = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE: Final = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_NONCE_RE: Final = re.compile(r"[0-9A-Za-z]{1,32}")
_LOCAL_HOSTS: Final = frozenset({"localhost", "localhost.localdomain"})
# Characters no XML 1.0 document can carry (C0 controls but TAB/LF/CR, lone surrogates, U+FFFE/F):
# refused here, naming the field, rather than later by encode_xml or the UTF-8 encoder of sign().
_NOT_XML_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def check_out_trade_no(value: str, field: str = "out_trade_no") -> str:
    """1-32 characters of ``[0-9A-Za-z_-|*]``."""
    if not isinstance(value, str) or not _OUT_TRADE_NO_RE.fullmatch(value):
        raise FieldError(field, "must be 1 to 32 characters of letters, digits, '_', '-', '|' or '*'")
    return value


def check_out_refund_no(value: str, field: str = "out_refund_no") -> str:
    """1-64 characters of ``[0-9A-Za-z_-|*@]``."""
    if not isinstance(value, str) or not _OUT_REFUND_NO_RE.fullmatch(value):
        raise FieldError(field, "must be 1 to 64 characters of letters, digits, '_', '-', '|', '*' or '@'")
    return value


def check_amount(value: int, field: str = "total_fee") -> int:
    """A positive ``int`` of minor units (never a float, never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"must be an int of minor units, not {type(value).__name__}")
    if value <= 0:
        raise FieldError(field, f"must be positive, got {value}")
    return value


def check_fee_type(value: str, field: str = "fee_type", table: CurrencyTable = DEFAULT_CURRENCIES) -> str:
    """An upper-case known currency code."""
    return table.check(value, field)


def check_text(value: str, field: str, max_chars: int = 127, *, utf8_bytes: bool = False) -> str:
    """At most ``max_chars`` characters (``utf8_bytes``: bytes of UTF-8, as WeChat counts ``body``,
    ``attach`` and ``detail``: 42 Chinese characters are 126 bytes), no 4-byte UTF-8 (emoji)
    characters (spec 2.2, 16.5), and nothing XML cannot carry (control characters, lone surrogates)."""
    if not isinstance(value, str):
        raise FieldError(field, f"must be a string, not {type(value).__name__}")
    if len(value) > max_chars:
        raise FieldError(field, f"at most {max_chars} characters, got {len(value)}")
    if utf8_bytes:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > max_chars:
            raise FieldError(field, f"at most {max_chars} bytes of UTF-8, got {size}")
    for ch in value:
        if ord(ch) > 0xFFFF:
            raise FieldError(field, f"4-byte UTF-8 characters (such as emoji) are not accepted: {ch!r}")
    _check_xml_text(value, field)
    return value


def _check_xml_text(value: str, field: str) -> None:
    bad = _NOT_XML_RE.search(value)
    if bad is not None:
        raise FieldError(field, f"contains U+{ord(bad.group()):04X}, which XML cannot carry")


def check_id(value: str, field: str, max_chars: int = 32) -> str:
    """A non-empty identifier of at most ``max_chars`` characters, without surrounding white space
    or characters XML cannot carry."""
    if not isinstance(value, str) or not value or len(value) > max_chars or value != value.strip():
        raise FieldError(field, f"must be 1 to {max_chars} characters without surrounding spaces")
    _check_xml_text(value, field)
    return value


def check_nonce(value: str, field: str = "nonce_str") -> str:
    """1-32 letters or digits."""
    if not isinstance(value, str) or not _NONCE_RE.fullmatch(value):
        raise FieldError(field, "must be 1 to 32 letters or digits")
    return value


def check_ip(value: str, field: str = "spbill_create_ip") -> str:
    """An IP address (IPv4 dotted string preferred by Global)."""
    if isinstance(value, str) and _IPV4_RE.fullmatch(value):
        return value
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise FieldError(field, f"not an IP address: {value!r}") from None
    return value


def check_notify_url(value: str, field: str = "notify_url", *, allow_local: bool = False) -> str:
    """An absolute http(s) URL with a host, at most 256 characters, no query string.

    WeChat refuses ``localhost`` and private addresses; ``allow_local=True`` lets the sandbox and
    tests use loopback callbacks.
    """
    if not isinstance(value, str) or not value or len(value) > 256:
        raise FieldError(field, "must be an http(s) URL of at most 256 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FieldError(field, f"must be an absolute http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise FieldError(field, "must not carry a query string or fragment")
    if any(ch.isspace() for ch in value):
        raise FieldError(field, "must not contain white space")
    if not allow_local:
        host = parts.hostname.lower()
        if host in _LOCAL_HOSTS:
            raise FieldError(field, "WeChat cannot call localhost")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified:
                raise FieldError(field, f"WeChat cannot call a private address ({host})")
    return value
