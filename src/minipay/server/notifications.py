"""WeChat callbacks: payment and refund result notifications (spec 7 and 12).

Pipeline for a payment notification: size cap (before parsing) -> hardened XML codec -> the
institution named by ``appid``/``mch_id`` must be ours -> signature verified with that institution's
key and policy (HMAC-SHA256 configured = MD5 refused) -> ``sub_mch_id`` must be one of its
sub-merchants -> :func:`~minipay.server.services.apply_payment_result` (ids, ``total_fee`` and
``fee_type`` checked against the stored payment; applied once). A notification never creates a payment.

Replies: the exact SUCCESS XML (HTTP 200) when applied or already applied; ``FAIL`` otherwise —
HTTP 400 for a body we refuse to read (too large: 413), HTTP 200 + FAIL for a well-formed message we
refuse (unknown order, mismatch) so WeChat retries and the alert is visible. Never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from minipay.protocol import (
    HMAC_SHA256,
    ApiKey,
    MinipayError,
    SignatureError,
    SignPolicy,
    XMLError,
    parse_payment_notification,
    parse_refund_notification,
    reply_fail,
    reply_success,
)
from minipay.server.domain import ApplyOutcome, PaymentResult, RefundResult
from minipay.server.ports import Clock, UnitOfWorkPortFactory
from minipay.server.services import apply_payment_result, apply_refund_result
from minipay.server.settings import InstitutionSettings, Settings

__all__ = ["NotifyReply", "handle_payment_notification", "handle_refund_notification", "reply"]

log = logging.getLogger("minipay.server.notifications")


@dataclass(frozen=True, slots=True)
class NotifyReply:
    status_code: int
    content: bytes
    outcome: str  # for logs and metrics: applied, duplicate, no_change, refused:<why>


def reply(success: bool, message: str = "OK", status_code: int = 200, outcome: str = "") -> NotifyReply:
    """The answer to WeChat: the protocol's exact SUCCESS body, or FAIL with ``message``."""
    if success:
        return NotifyReply(status_code, reply_success(), outcome or "ok")
    return NotifyReply(status_code, reply_fail(message), outcome or f"refused:{message}")


class _Refused(Exception):
    """A notification refused before its signature or ``req_info`` is read (raised by the lookup)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _policy(inst: InstitutionSettings) -> SignPolicy:
    return SignPolicy(pinned=HMAC_SHA256) if inst.sign_type == HMAC_SHA256 else SignPolicy()


def _institution(settings: Settings, fields: Mapping[str, str], kind: str) -> InstitutionSettings:
    if fields.get("return_code") != "SUCCESS":
        raise _Refused("return_code is not SUCCESS")
    inst = settings.institution_for(fields.get("appid"), fields.get("mch_id"))
    if inst is not None:
        return inst
    log.warning("%s notification for a foreign appid/mch_id refused", kind)
    raise _Refused("unknown merchant")


def _known_sub(settings: Settings, inst: InstitutionSettings, sub_mch_id: str | None) -> bool:
    sub = settings.sub_merchant(sub_mch_id or "")
    return sub is not None and sub.institution == inst.name


async def handle_payment_notification(
    body: bytes, *, settings: Settings, uow_factory: UnitOfWorkPortFactory, clock: Clock
) -> NotifyReply:
    found: list[InstitutionSettings] = []

    def lookup(fields: Mapping[str, str]) -> tuple[ApiKey, SignPolicy]:
        inst = _institution(settings, fields, "payment")
        found.append(inst)
        return inst.key(), _policy(inst)

    try:
        notification = parse_payment_notification(body, lookup, max_bytes=settings.notify_max_bytes)
    except _Refused as exc:
        return reply(False, exc.message, 400)
    except XMLError as exc:
        log.warning("payment notification refused: %s", exc)
        return reply(False, "invalid XML", 400)
    except SignatureError as exc:
        log.warning("payment notification with a bad signature refused: %s", exc)
        return reply(False, "invalid signature", 400)
    except MinipayError as exc:
        log.warning("payment notification with malformed fields refused: %s", exc)
        return reply(False, "malformed fields", 400)
    if not _known_sub(settings, found[0], notification.sub_mch_id):
        log.warning("payment notification for an unknown sub_mch_id refused")
        return reply(False, "unknown sub-merchant", 400)
    if notification.result_code != "SUCCESS":
        # Only successful payments are notified (spec 7.1); a failed attempt changes nothing.
        return reply(True, outcome="ignored:result_code")
    if not notification.out_trade_no:
        return reply(False, "missing out_trade_no", 400)
    result = PaymentResult.from_notification(notification)
    outcome = await apply_payment_result(uow_factory, result, source="notification", clock=clock)
    if outcome is ApplyOutcome.UNKNOWN:
        return reply(False, "unknown order", outcome="refused:unknown_order")
    if outcome is ApplyOutcome.MISMATCH:
        return reply(False, "order mismatch", outcome="refused:mismatch")
    return reply(True, outcome=str(outcome))


async def handle_refund_notification(
    body: bytes, *, settings: Settings, uow_factory: UnitOfWorkPortFactory, clock: Clock
) -> NotifyReply:
    found: list[InstitutionSettings] = []

    def lookup(fields: Mapping[str, str]) -> tuple[ApiKey, SignPolicy]:
        inst = _institution(settings, fields, "refund")
        if not _known_sub(settings, inst, fields.get("sub_mch_id")):
            raise _Refused("unknown sub-merchant")
        found.append(inst)
        return inst.key(), _policy(inst)

    try:
        # No signature on refund notifications: the encryption under our key authenticates them
        # (spec 12.1); decrypted fields that repeat an outer one are refused.
        notification = parse_refund_notification(body, lookup, max_bytes=settings.notify_max_bytes)
    except _Refused as exc:
        return reply(False, exc.message, 400)
    except MinipayError as exc:
        log.warning("refund notification refused: %s", exc)
        # An XML error before the lookup ran is the outer document's; after it, req_info's.
        outer_xml = isinstance(exc, XMLError) and not found
        return reply(False, "invalid XML" if outer_xml else "invalid req_info", 400)
    result = RefundResult.from_notification(notification)
    if not result.out_refund_no or result.refund_status not in ("SUCCESS", "REFUNDCLOSE", "CHANGE"):
        return reply(False, "invalid req_info", 400)
    outcome = await apply_refund_result(uow_factory, result, mch_id=found[0].mch_id, source="notification", clock=clock)
    if outcome is ApplyOutcome.UNKNOWN:
        return reply(False, "unknown refund", outcome="refused:unknown_refund")
    if outcome is ApplyOutcome.MISMATCH:
        return reply(False, "refund mismatch", outcome="refused:mismatch")
    return reply(True, outcome=str(outcome))
