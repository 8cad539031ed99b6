"""A sub-merchant's shop backend: the server a mini program talks to, in front of the Minipay service.

It holds the sub-merchant's Minipay API key (a server-side secret the mini program never sees), logs
users in with their ``wx.login`` code, creates orders and their payments, and learns that an order is
paid from Minipay's signed webhooks. It speaks to Minipay over plain HTTP + JSON only, as a backend in
any language would; nothing here imports ``minipay``.
"""

from examples.shop_backend.app import PRODUCTS, ShopSettings, WebhookSignatureError, create_app, verify_signature

__all__ = ["PRODUCTS", "ShopSettings", "WebhookSignatureError", "create_app", "verify_signature"]
