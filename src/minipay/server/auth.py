"""Bearer-key authentication: which API key (admin or sub-merchant) a request carries, checked in
constant time, and the ops keys that guard the operations pages."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request

from minipay.server.services import Principal, ServiceError
from minipay.server.settings import Settings

__all__ = [
    "AuthIndex",
    "Caller",
    "bearer_owner",
    "install_api_keys",
    "key_digest",
    "key_owner",
    "ops_access",
    "principal",
]

#: The API keys by their SHA-256: the digest again (compared in constant time) and who the key is.
AuthIndex = dict[bytes, tuple[bytes, Principal]]


def install_api_keys(app: FastAPI, settings: Settings) -> None:
    """The keys of ``settings`` on ``app.state``: every API key with who it is (``auth_keys``), the
    same indexed by SHA-256 (``auth_index``), and the ops keys (``ops_keys``)."""
    keys: list[tuple[bytes, Principal]] = [
        (k.get_secret_value().encode(), Principal(None)) for k in settings.admin_api_keys
    ]
    for sub in settings.sub_merchants:
        keys.extend((k.get_secret_value().encode(), Principal(sub.sub_mch_id)) for k in sub.api_keys)
    app.state.auth_keys = keys
    index: AuthIndex = {key_digest(key): (key_digest(key), who) for key, who in keys}
    app.state.auth_index = index
    app.state.ops_keys = [k.get_secret_value().encode() for k in settings.ops_api_keys]


def key_digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


async def principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """Who the ``Authorization: Bearer <api key>`` of a request is: the admin (``sub_mch_id`` None)
    or one sub-merchant; a 401 ``unauthorized`` error otherwise."""
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hand-off per request.
    return bearer_owner(request.app.state.auth_index, authorization)


def bearer_owner(auth_index: AuthIndex, authorization: str | None) -> Principal:
    """Who the value of an ``Authorization`` header (``Bearer <api key>``) is, by the app's
    ``auth_index``; a 401 ``unauthorized`` :class:`ServiceError` when it names no API key."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ServiceError("missing 'Authorization: Bearer <api key>'", code="unauthorized", status=401)
    who = _owner(auth_index, authorization.removeprefix("Bearer ").strip().encode())
    if who is None:
        raise ServiceError("invalid API key", code="unauthorized", status=401)
    return who


def key_owner(request: Request, key: bytes) -> Principal | None:
    """Who ``key`` is (the API's bearer token, the console's sign-in): None when it is no API key."""
    return _owner(request.app.state.auth_index, key)


def _owner(auth_index: AuthIndex, key: bytes) -> Principal | None:
    # Keys are looked up by their SHA-256 (the lookup's timing tells nothing about a key), then the
    # digest is compared in constant time.
    digest = key_digest(key)
    entry = auth_index.get(digest)
    if entry is None or not hmac.compare_digest(entry[0], digest):
        return None
    return entry[1]


def ops_access(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """With ``ops_api_keys`` configured, the operations pages need one of them as the bearer token."""
    ops_keys: list[bytes] = request.app.state.ops_keys
    if not ops_keys:
        return
    presented = (authorization or "").removeprefix("Bearer ").strip().encode()
    found = False
    for key in ops_keys:  # compare with every key, each in constant time
        found |= hmac.compare_digest(key, presented)
    if not found or not (authorization or "").startswith("Bearer "):
        raise ServiceError("this page needs 'Authorization: Bearer <ops key>'", code="unauthorized", status=401)


#: A route's caller, authenticated by its API key.
Caller = Annotated[Principal, Depends(principal)]
