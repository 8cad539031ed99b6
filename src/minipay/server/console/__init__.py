"""The ops console at ``/console``: server-rendered pages over the service's own database.

Sign in with an admin or a sub-merchant API key (kept out of URLs; the browser gets an HttpOnly,
SameSite=Strict session cookie, see ``_session``). A sub-merchant's key sees only its own
payments, exactly as the API does (another sub-merchant's payment is a 404). Actions (close,
refund, re-query WeChat, webhook retry) call the same use cases as the API, with the same rules.
Every page escapes what it shows (Jinja2 autoescape): descriptions, attach and webhook answers
come from outside.
"""

from __future__ import annotations

from minipay.server.console._routes import build_console_router

__all__ = ["build_console_router"]
