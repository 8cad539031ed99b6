"""What the web-facing parts share: the sandbox dashboard, the service console and the /try simulator.

* the one stylesheet (``STYLESHEET``, served by :func:`stylesheet`) and the headers of a page
  nothing may frame (``PAGE_HEADERS``);
* :func:`templates`: a Jinja2 environment over a templates folder, with the settings every page is
  rendered with (autoescape, ``StrictUndefined``) and the shared ``money`` filter;
* the ``Minipay-Signature`` of the service's webhooks (:func:`sign_webhook`, :func:`verify_webhook`),
  made by the service and checked by a receiver such as the simulator's shop (the public names are
  ``minipay.server.webhooks``'s);
* :func:`freeze_startup_heap`, which a serving process calls once, just before it serves.

Imports no part of Minipay but ``protocol`` (for the currency table), so every part above it may use it.
"""

from __future__ import annotations

from minipay._web._pages import PAGE_HEADERS, STYLESHEET, stylesheet
from minipay._web._process import freeze_startup_heap
from minipay._web._signature import SIGNATURE_HEADER, WebhookSignatureError, sign_webhook, verify_webhook
from minipay._web._templates import money, templates

__all__ = [
    "PAGE_HEADERS",
    "SIGNATURE_HEADER",
    "STYLESHEET",
    "WebhookSignatureError",
    "freeze_startup_heap",
    "money",
    "sign_webhook",
    "stylesheet",
    "templates",
    "verify_webhook",
]
