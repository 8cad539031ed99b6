"""Minipay: WeChat Pay Global Mini Program payments for institutions.

Three parts on one sans-I/O protocol core:

* ``minipay.protocol`` — signing, the hardened XML codec, typed messages, error codes (no I/O);
* ``minipay.client`` — the SDK (``Client``, ``AsyncClient``);
* ``minipay.sandbox`` — a local simulator of WeChat Pay Global and Mini Program login;
* ``minipay.server`` — the payment service (HTTP API, database, worker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from minipay._version import __version__

if TYPE_CHECKING:
    from minipay.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): ``import minipay.sandbox`` or ``minipay --version`` must not load the SDK.
    if name in ("Client", "AsyncClient"):
        from minipay import client

        return getattr(client, name)
    raise AttributeError(f"module 'minipay' has no attribute {name!r}")
