"""What the use cases take: the caller (``Principal``), the ``CreatePayment`` command and their checks."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field

from minipay.protocol import (
    FieldError,
    MinipayError,
    TransportError,
)
from minipay.server.errors import Conflict
from minipay.server.ports import UnitOfWorkPort

__all__ = [
    "CreatePayment",
    "Principal",
    "check_storable",
    "err_code",
    "is_unknown",
    "new_out_refund_no",
    "new_out_trade_no",
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


def new_out_trade_no() -> str:
    return "mp" + secrets.token_hex(15)  # 32 characters, letters and digits (spec 5.1)


def new_out_refund_no() -> str:
    return "mr" + secrets.token_hex(15)


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
