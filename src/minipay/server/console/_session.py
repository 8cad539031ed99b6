"""The console's session cookie and CSRF checks.

The cookie never holds the API key. It holds a fingerprint of the key (an HMAC under the console
secret), an expiry and a random nonce, signed with the same secret::

    base64url({"f": fingerprint, "e": expires_unix, "n": nonce}) "." base64url(HMAC-SHA256)

Every request maps the fingerprint back to a configured key, so removing a key from the
configuration ends its sessions at once. The secret is derived from every configured API key
(``derive_secret``): replicas with the same configuration accept each other's cookies, and a
sub-merchant's key alone cannot forge one. Forms carry a CSRF token (an HMAC of the session's
nonce) and every POST must come from the console's own origin (``Origin`` / ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.requests import Request

__all__ = ["COOKIE", "ConsoleSession", "SessionCodec", "derive_secret", "same_origin"]

COOKIE = "minipay_console"
LIFETIME = 8 * 3600


def derive_secret(keys: Iterable[bytes]) -> bytes:
    digest = hashlib.sha256(b"minipay console session v1\0")
    for key in sorted(keys):
        digest.update(hashlib.sha256(key).digest())
    return digest.digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ConsoleSession:
    fingerprint: str
    expires: int
    nonce: str


class SessionCodec:
    """Issues and reads session cookies; ``keys`` are the configured API keys (bytes)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def fingerprint(self, key: bytes) -> str:
        return hmac.new(self._secret, b"key\0" + key, hashlib.sha256).hexdigest()[:32]

    def issue(self, key: bytes, *, now: float | None = None) -> str:
        body = {
            "f": self.fingerprint(key),
            "e": int((now if now is not None else time.time()) + LIFETIME),
            "n": secrets.token_urlsafe(16),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return payload + "." + _b64(self._sign(payload.encode()))

    def read(self, cookie: str | None, *, now: float | None = None) -> ConsoleSession | None:
        if not cookie or "." not in cookie or len(cookie) > 512:
            return None
        payload, _, signature = cookie.partition(".")
        try:
            if not hmac.compare_digest(_unb64(signature), self._sign(payload.encode())):
                return None
            body = json.loads(_unb64(payload))
            session = ConsoleSession(str(body["f"]), int(body["e"]), str(body["n"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (now if now is not None else time.time()):
            return None
        return session

    def csrf_token(self, session: ConsoleSession) -> str:
        return _b64(hmac.new(self._secret, b"csrf\0" + session.nonce.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: ConsoleSession, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(session), presented or "")

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"session\0" + payload, hashlib.sha256).digest()


def same_origin(request: Request, allowed: Sequence[str]) -> bool:
    """A browser POST from our own pages: ``Origin`` (when sent) is ours, and ``Sec-Fetch-Site``
    (when sent) is same-origin. ``allowed`` lists extra origins (the public base URL)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    own = f"{request.url.scheme}://{host}"
    return origin == own or origin in allowed
