"""Minipay: WeChat Pay Global Mini Program payments for institutions.

Three parts on one sans-I/O protocol core:

* ``minipay.protocol`` — signing, the hardened XML codec, typed messages, error codes (no I/O);
* ``minipay.client`` — the SDK (``Client``, ``AsyncClient``);
* ``minipay.sandbox`` — a local simulator of WeChat Pay Global and Mini Program login;
* ``minipay.server`` — the payment service (HTTP API, database, worker).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
