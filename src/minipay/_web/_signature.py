"""Signing webhooks: the ``Minipay-Signature`` header, made by the service and checked by receivers."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Minipay-Signature"


class WebhookSignatureError(ValueError):
    """A ``Minipay-Signature`` header that is missing, malformed, stale or wrong."""


def sign_webhook(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Minipay-Signature`` header value for ``body`` at ``timestamp`` (Unix seconds).

    >>> sign_webhook(b'{}', "whsec_test", 1700000000)
    't=1700000000,v1=...'  # doctest: +SKIP
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook(body: bytes, header: str, secret: str, *, tolerance: int = 300, now: int | None = None) -> int:
    """Check a ``Minipay-Signature`` header against the raw body; returns its timestamp.

    Constant-time; refuses timestamps further than ``tolerance`` seconds from ``now``.
    """
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError("malformed Minipay-Signature header")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise WebhookSignatureError("Minipay-Signature has no valid t=") from None
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureError("Minipay-Signature timestamp outside the tolerance")
    expected = sign_webhook(body, secret, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in parts.get("v1", [])):
        raise WebhookSignatureError("Minipay-Signature does not match")
    return timestamp
