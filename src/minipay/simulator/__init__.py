"""The mini program simulator at ``/try`` (sandbox mode of ``minipay serve``).

A phone with a small shop mini program, its backend, and the wire: log in (``wx.login`` ->
``POST /v1/sessions``), buy (``POST /v1/payments`` -> the sandbox's WeChat pay sheet ->
``/sandbox/pay``), watch the result page ask the backend until the payment is final, refund, move
the shared clock, and read every message on the wire (the XML the service sent to WeChat and got
back, the signed notifications and their replies, the webhooks the service emitted).

The shop backend holds the service's API keys; the page never sees them. It talks to the service
and the sandbox over HTTP only, like a merchant's server, so this package imports neither: only the
composition root (:mod:`minipay.serve`) wires it in.
"""

from __future__ import annotations

from minipay.simulator._routes import build_router
from minipay.simulator._shop import TEST_USERS, Product, Shop, ShopBackend, ShopError, ShopSession, catalogue

__all__ = ["TEST_USERS", "Product", "Shop", "ShopBackend", "ShopError", "ShopSession", "build_router", "catalogue"]
