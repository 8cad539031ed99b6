"""What the use cases take: the caller (``Principal``), the ``CreatePayment`` command, their checks
(:func:`check_create_payment`) and the payment such a command makes (:func:`new_payment`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from minipay.protocol import (
    DEFAULT_CURRENCIES,
    FieldError,
    MinipayError,
    TransportError,
    check_amount,
    check_id,
    check_ip,
    check_out_trade_no,
    check_text,
    random_hex,
)
from minipay.server.domain import Payment, new_id
from minipay.server.errors import Conflict
from minipay.server.ports import UnitOfWorkPort
from minipay.server.settings import InstitutionSettings, SubMerchantSettings

__all__ = [
    "MAX_AMOUNT",
    "CreatePayment",
    "Principal",
    "check_create_payment",
    "check_storable",
    "err_code",
    "is_unknown",
    "new_out_refund_no",
    "new_out_trade_no",
    "new_payment",
    "replayed_id",
]

# -- callers ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: one sub-merchant's key, or the admin key (``sub_mch_id`` None, sees everything)."""

    sub_mch_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.sub_mch_id is None

    @property
    def scope(self) -> str:
        return self.sub_mch_id or "admin"


# -- commands --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatePayment:
    amount: int
    currency: str
    description: str
    openid: str
    out_trade_no: str | None = None
    attach: str | None = None
    client_ip: str | None = None
    expires_in: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    sub_mch_id: str | None = None  # admin key only

    def fingerprint(self) -> str:
        canonical = json.dumps(
            {
                "amount": self.amount,
                "currency": self.currency,
                "description": self.description,
                "openid": self.openid,
                "out_trade_no": self.out_trade_no,
                "attach": self.attach,
                "client_ip": self.client_ip,
                "expires_in": self.expires_in,
                "metadata": self.metadata,
                "sub_mch_id": self.sub_mch_id,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


MAX_AMOUNT = 2**63 - 1  # the amount columns are 64-bit integers (WeChat states no maximum)


def check_create_payment(cmd: CreatePayment, *, sub_currency: str, default_expires_in: int) -> tuple[str, str, int]:
    """The payment's currency, client IP and lifetime in seconds, once every field of ``cmd`` is
    checked for the sub-merchant (settlement currency ``sub_currency``); a bad one is a
    :class:`FieldError` (or ``ValueError``) naming it."""
    check_amount(cmd.amount, "amount")
    if cmd.amount > MAX_AMOUNT:
        raise FieldError("amount", f"must be at most {MAX_AMOUNT} minor units")
    currency = DEFAULT_CURRENCIES.check(cmd.currency, "currency")
    if currency not in (sub_currency, "CNY"):
        raise FieldError("currency", f"must be {sub_currency} or CNY for this sub-merchant")
    check_text(cmd.description, "description", 127, utf8_bytes=True)
    if not cmd.description.strip():
        raise FieldError("description", "must not be empty")
    if not cmd.openid:
        raise FieldError("openid", "is required (from POST /v1/sessions)")
    check_id(cmd.openid, "openid", 128)
    if cmd.out_trade_no is not None:
        check_out_trade_no(cmd.out_trade_no)
    if cmd.attach is not None:
        check_text(cmd.attach, "attach", 127, utf8_bytes=True)
    client_ip = check_ip(cmd.client_ip or "127.0.0.1", "client_ip")
    expires_in = cmd.expires_in if cmd.expires_in is not None else default_expires_in
    if not 60 <= expires_in <= 7 * 24 * 3600:
        raise FieldError("expires_in", "must be between 60 seconds and 7 days")
    if len(cmd.metadata) > 20 or any(len(k) > 40 or len(str(v)) > 500 for k, v in cmd.metadata.items()):
        raise FieldError("metadata", "at most 20 keys of 40 characters, values of 500 characters")
    for text in (*cmd.metadata, *map(str, cmd.metadata.values())):
        check_storable(text, "metadata")
    return currency, client_ip, expires_in


def new_payment(
    cmd: CreatePayment,
    inst: InstitutionSettings,
    sub: SubMerchantSettings,
    *,
    out_trade_no: str,
    currency: str,
    client_ip: str,
    expires_in: int,
    now: datetime,
) -> Payment:
    """The payment ``cmd`` asks for, made at ``now`` for the sub-merchant ``sub`` of the institution
    ``inst``, with what :func:`check_create_payment` made of it (``currency``, ``client_ip``,
    ``expires_in`` in seconds) and its ``out_trade_no``; not yet stored."""
    return Payment(
        id=new_id("pay"),
        institution=inst.name,
        appid=inst.appid,
        mch_id=inst.mch_id,
        sub_mch_id=sub.sub_mch_id,
        sub_appid=sub.sub_appid,
        out_trade_no=out_trade_no,
        amount=cmd.amount,
        currency=currency,
        description=cmd.description,
        openid=cmd.openid,
        client_ip=client_ip,
        attach=cmd.attach,
        metadata={str(k): str(v) for k, v in cmd.metadata.items()},
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=expires_in),
    )


def new_out_trade_no() -> str:
    return "mp" + random_hex(15)  # 32 characters, letters and digits (spec 5.1)


def new_out_refund_no() -> str:
    return "mr" + random_hex(15)


def check_storable(value: str, field: str) -> None:
    """Refuse what no database column can hold: NUL (PostgreSQL text) and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise FieldError(field, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise FieldError(field, "must be valid Unicode (no lone surrogates)") from None


async def replayed_id(uow: UnitOfWorkPort, scope: str, key: str, fingerprint: str) -> str | None:
    """The resource id stored for ``key`` (same request), None for a new key; 409 for another request."""
    row = await uow.idempotency.get(scope, key)
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise Conflict("this Idempotency-Key was used with a different request", code="idempotency_key_reused")
    return str(row["resource_id"])


def is_unknown(exc: MinipayError) -> bool:
    return bool(exc.outcome_unknown or exc.retryable or isinstance(exc, TransportError))


def err_code(exc: MinipayError) -> str:
    return getattr(exc, "err_code", "") or type(exc).__name__
