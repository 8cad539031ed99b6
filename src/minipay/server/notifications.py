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
from dataclasses import dataclass

from minipay.protocol import (
    HMAC_SHA256,
    DecryptionError,
    MinipayError,
    SignatureError,
    SignPolicy,
    XMLError,
    decode_xml,
    decrypt_req_info,
    encode_xml,
    verify,
)
from minipay.server.domain import ApplyOutcome, PaymentResult, RefundResult
from minipay.server.ports import Clock
from minipay.server.services import apply_payment_result, apply_refund_result
from minipay.server.settings import InstitutionSettings, Settings
from minipay.server.uow import UnitOfWorkFactory

__all__ = ["NotifyReply", "handle_payment_notification", "handle_refund_notification", "reply"]

log = logging.getLogger("minipay.server.notifications")


@dataclass(frozen=True, slots=True)
class NotifyReply:
    status_code: int
    content: bytes
    outcome: str  # for logs and metrics: applied, duplicate, no_change, refused:<why>


def reply(success: bool, message: str = "OK", status_code: int = 200, outcome: str = "") -> NotifyReply:
    fields = (
        {"return_code": "SUCCESS", "return_msg": "OK"} if success else {"return_code": "FAIL", "return_msg": message}
    )
    return NotifyReply(status_code, encode_xml(fields), outcome or ("ok" if success else f"refused:{message}"))


def _institution(settings: Settings, appid: str | None, mch_id: str | None) -> InstitutionSettings | None:
    for inst in settings.institutions:
        if inst.appid == appid and inst.mch_id == mch_id:
            return inst
    return None


def _policy(inst: InstitutionSettings) -> SignPolicy:
    return SignPolicy(pinned=HMAC_SHA256) if inst.sign_type == HMAC_SHA256 else SignPolicy()


def _known_sub(settings: Settings, inst: InstitutionSettings, sub_mch_id: str | None) -> bool:
    sub = settings.sub_merchant(sub_mch_id or "")
    return sub is not None and sub.institution == inst.name


async def handle_payment_notification(
    body: bytes, *, settings: Settings, uow_factory: UnitOfWorkFactory, clock: Clock
) -> NotifyReply:
    try:
        fields = decode_xml(body, max_bytes=settings.notify_max_bytes)
    except XMLError as exc:
        log.warning("payment notification refused: %s", exc)
        return reply(False, "invalid XML", 400)
    if fields.get("return_code") != "SUCCESS":
        return reply(False, "return_code is not SUCCESS", 400)
    inst = _institution(settings, fields.get("appid"), fields.get("mch_id"))
    if inst is None:
        log.warning("payment notification for a foreign appid/mch_id refused")
        return reply(False, "unknown merchant", 400)
    try:
        verify(fields, inst.key(), policy=_policy(inst))
    except SignatureError as exc:
        log.warning("payment notification with a bad signature refused: %s", exc)
        return reply(False, "invalid signature", 400)
    if not _known_sub(settings, inst, fields.get("sub_mch_id")):
        log.warning("payment notification for an unknown sub_mch_id refused")
        return reply(False, "unknown sub-merchant", 400)
    if fields.get("result_code") != "SUCCESS":
        # Only successful payments are notified (spec 7.1); a failed attempt changes nothing.
        return reply(True, outcome="ignored:result_code")
    if not fields.get("out_trade_no"):
        return reply(False, "missing out_trade_no", 400)
    try:
        result = PaymentResult.from_fields(fields, trade_state="SUCCESS")
    except (ValueError, MinipayError) as exc:
        log.warning("payment notification with malformed fields refused: %s", exc)
        return reply(False, "malformed fields", 400)
    outcome = await apply_payment_result(uow_factory, result, source="notification", clock=clock)
    if outcome is ApplyOutcome.UNKNOWN:
        return reply(False, "unknown order", outcome="refused:unknown_order")
    if outcome is ApplyOutcome.MISMATCH:
        return reply(False, "order mismatch", outcome="refused:mismatch")
    return reply(True, outcome=str(outcome))


def _decode_req_info(plain: bytes, max_bytes: int) -> dict[str, str]:
    # The decrypted payload is a flat document rooted at <root> (spec 12.2): the same hardened codec.
    return decode_xml(plain, max_bytes=max_bytes, root="root")


async def handle_refund_notification(
    body: bytes, *, settings: Settings, uow_factory: UnitOfWorkFactory, clock: Clock
) -> NotifyReply:
    try:
        fields = decode_xml(body, max_bytes=settings.notify_max_bytes)
    except XMLError as exc:
        log.warning("refund notification refused: %s", exc)
        return reply(False, "invalid XML", 400)
    if fields.get("return_code") != "SUCCESS":
        return reply(False, "return_code is not SUCCESS", 400)
    inst = _institution(settings, fields.get("appid"), fields.get("mch_id"))
    if inst is None:
        return reply(False, "unknown merchant", 400)
    if not _known_sub(settings, inst, fields.get("sub_mch_id")):
        return reply(False, "unknown sub-merchant", 400)
    try:
        # No signature on refund notifications: the encryption under our key authenticates them (spec 12.1).
        inner = _decode_req_info(decrypt_req_info(fields.get("req_info", ""), inst.key()), settings.notify_max_bytes)
        result = RefundResult.from_fields({**inner, "sub_mch_id": fields.get("sub_mch_id", "")})
    except (DecryptionError, XMLError, ValueError, MinipayError) as exc:
        log.warning("refund notification refused: %s", exc)
        return reply(False, "invalid req_info", 400)
    if not result.out_refund_no or result.refund_status not in ("SUCCESS", "REFUNDCLOSE", "CHANGE"):
        return reply(False, "invalid req_info", 400)
    outcome = await apply_refund_result(uow_factory, result, mch_id=inst.mch_id, source="notification", clock=clock)
    if outcome is ApplyOutcome.UNKNOWN:
        return reply(False, "unknown refund", outcome="refused:unknown_refund")
    if outcome is ApplyOutcome.MISMATCH:
        return reply(False, "refund mismatch", outcome="refused:mismatch")
    return reply(True, outcome=str(outcome))
