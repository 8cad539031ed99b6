"""Webhooks to the merchants' systems: endpoints, signing, and delivery from the outbox.

Every event row in ``outbox_events`` (written in the transaction of the state change) gets one
``webhook_deliveries`` row per endpoint. :func:`deliver_webhooks` claims due deliveries (PostgreSQL
``FOR UPDATE SKIP LOCKED`` + a lease, so many workers never send the same attempt twice; SQLite: one
writer), POSTs them, logs every attempt in ``webhook_attempts`` and reschedules failures with backoff
for 3 days. Delivery is at-least-once: receivers dedupe on the event ``id``.

Body: ``{"id", "type", "created", "data"}``; header
``Minipay-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the endpoint secret>``.

Verify on the receiving side::

    verify_webhook(raw_body, request.headers["Minipay-Signature"], secret)   # raises WebhookSignatureError

Modules: ``_addresses`` (URL checks, internal addresses, pinning), ``_endpoints`` and ``_events``
(what the API reads and writes), ``_dispatch`` (delivery); the SQL is the unit of work's ``webhooks``
repository. The header is signed and checked in ``minipay._web`` (the simulator's shop, a receiver,
checks it with the same code) and re-exported here. Import every name from this package.
"""

from __future__ import annotations

from minipay._web import SIGNATURE_HEADER, WebhookSignatureError, sign_webhook, verify_webhook
from minipay.server.webhooks._addresses import (
    InternalAddressRefused,
    Resolver,
    is_internal_address,
    parse_ipv4,
    pin_address,
)
from minipay.server.webhooks._dispatch import (
    DELIVERY_WINDOW,
    DeliveryLimits,
    WebhookDispatcher,
    backoff,
    deliver_webhooks,
)
from minipay.server.webhooks._endpoints import EndpointLimitReached, create_endpoint, delete_endpoint, list_endpoints
from minipay.server.webhooks._events import delivery_log, get_event, list_events

__all__ = [
    "DELIVERY_WINDOW",
    "SIGNATURE_HEADER",
    "DeliveryLimits",
    "EndpointLimitReached",
    "InternalAddressRefused",
    "Resolver",
    "WebhookDispatcher",
    "WebhookSignatureError",
    "backoff",
    "create_endpoint",
    "delete_endpoint",
    "deliver_webhooks",
    "delivery_log",
    "get_event",
    "is_internal_address",
    "list_endpoints",
    "list_events",
    "parse_ipv4",
    "pin_address",
    "sign_webhook",
    "verify_webhook",
]
