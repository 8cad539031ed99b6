"""The v2 signature: MD5 or HMAC-SHA256 over the sorted, non-empty fields (spec section 3).

Written once and used by both sides: the client signs requests and checks responses and
notifications, the sandbox checks requests and signs its answers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from minipay.protocol._errors import SignatureError
from minipay.protocol._secrets import ApiKey, as_api_key

__all__ = [
    "HMAC_SHA256",
    "MD5",
    "SignPolicy",
    "SignType",
    "SignatureExplanation",
    "explain_signature",
    "new_nonce",
    "sign",
    "string_to_sign",
    "verify",
]

SignType: TypeAlias = Literal["MD5", "HMAC-SHA256"]
MD5: Final = "MD5"
HMAC_SHA256: Final = "HMAC-SHA256"
FieldValue: TypeAlias = str | int
_SIGN_TYPES: Final[frozenset[str]] = frozenset({MD5, HMAC_SHA256})
_HEX32: Final = re.compile(r"[0-9A-Fa-f]{32}")
_HEX64: Final = re.compile(r"[0-9A-Fa-f]{64}")


def _checked_sign_type(value: str) -> SignType:
    if value == MD5:
        return MD5
    if value == HMAC_SHA256:
        return HMAC_SHA256
    raise SignatureError(f"unknown sign_type {value!r} (expected 'MD5' or 'HMAC-SHA256')")


def string_to_sign(fields: Mapping[str, FieldValue]) -> str:
    """``stringA`` of spec 3.1: non-empty fields except ``sign``, byte-wise ascending, raw values.

    >>> string_to_sign({"b": "2", "a": 1, "sign": "X", "c": ""})
    'a=1&b=2'
    """
    try:
        # Fast path: every value a str (what decode_xml and to_fields produce); an int or None
        # value makes the concatenation raise, and the checked path below handles it.
        return "&".join([k + "=" + fields[k] for k in sorted(fields) if k != "sign" and fields[k] != ""])  # type: ignore[operator]
    except TypeError:
        pass  # an int (or None) value: the checked path below
    parts = []
    for name in sorted(fields):
        if name == "sign":
            continue
        value = fields[name]
        if value is None:
            continue
        text = value if isinstance(value, str) else _int_text(name, value)
        if text:
            parts.append(f"{name}={text}")
    return "&".join(parts)


def _int_text(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"field {name!r} must be str or int, not {type(value).__name__}")
    return str(value)


def _digest(message: str, key: ApiKey, sign_type: SignType) -> str:
    try:
        data: bytes | None = f"{message}&key={key.reveal()}".encode()
    except UnicodeEncodeError:
        data = None  # raised below, outside this block: the encoder's error holds the key in .object
    if data is None:
        # A lone surrogate has no UTF-8 form: nothing can be signed or checked over it.
        raise SignatureError("a field value is not valid Unicode text (a lone surrogate)")
    if sign_type == MD5:
        return hashlib.md5(data, usedforsecurity=False).hexdigest().upper()
    return hmac.new(key.reveal().encode(), data, hashlib.sha256).hexdigest().upper()


def sign(fields: Mapping[str, FieldValue], key: str | ApiKey, sign_type: SignType | str = MD5) -> str:
    """The v2 signature of ``fields`` (spec 3.1), upper-case hex.

    ``sign_type`` chooses the algorithm; when the fields carry ``sign_type`` it is signed like any
    other field (so pass the same value in both places).

    >>> sign({"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000",
    ...       "body": "test", "nonce_str": "ibuaiVcKdpRxkhJA"}, "192006250b4c09247ec02edce69f6a2d")
    '9A0A8659F005D6984697E2CA0A9CF3B7'
    """
    return _digest(string_to_sign(fields), as_api_key(key), _checked_sign_type(sign_type))


@dataclass(frozen=True, slots=True)
class SignPolicy:
    """A merchant-level rule for checking signatures.

    ``pinned="HMAC-SHA256"`` refuses any MD5 signature, whatever the message claims: no downgrade.
    """

    pinned: SignType | None = None

    def __post_init__(self) -> None:
        if self.pinned is not None:
            _checked_sign_type(self.pinned)


DEFAULT_POLICY: Final = SignPolicy()


def _algorithm(fields: Mapping[str, str], received: str, sign_type: str | None, policy: SignPolicy) -> SignType:
    if sign_type is not None:
        algorithm = _checked_sign_type(sign_type)
    elif fields.get("sign_type"):
        algorithm = _checked_sign_type(fields["sign_type"])
    else:
        algorithm = MD5 if len(received) == 32 else HMAC_SHA256
    expected_shape = _HEX32 if algorithm == MD5 else _HEX64
    if not expected_shape.fullmatch(received):
        raise SignatureError(f"malformed signature: not {32 if algorithm == MD5 else 64} hex characters")
    if policy.pinned is not None and algorithm != policy.pinned:
        raise SignatureError(f"{algorithm} signature refused: the policy pins {policy.pinned}")
    return algorithm


def verify(
    fields: Mapping[str, str],
    key: str | ApiKey,
    sign_type: SignType | str | None = None,
    *,
    policy: SignPolicy = DEFAULT_POLICY,
) -> None:
    """Check ``fields["sign"]`` over **all** received fields except ``sign`` (spec 3.1).

    The algorithm is ``sign_type`` when given, else the received ``sign_type`` field, else the
    signature's length (32 hex = MD5, 64 = HMAC-SHA256); ``policy`` may pin HMAC-SHA256.
    Raises :class:`SignatureError` on a missing, empty, malformed or wrong signature.
    The comparison is constant-time.
    """
    received = fields.get("sign")
    if received is None:
        raise SignatureError("missing signature: no 'sign' field")
    if not isinstance(received, str) or not received:
        raise SignatureError("empty signature")
    if len(received) not in (32, 64):
        raise SignatureError(f"malformed signature: {len(received)} characters (expected 32 or 64 hex)")
    algorithm = _algorithm(fields, received, sign_type, policy)
    expected = _digest(string_to_sign(fields), as_api_key(key), algorithm)
    if not hmac.compare_digest(expected.encode(), received.upper().encode()):
        raise SignatureError(f"wrong signature ({algorithm})")


@dataclass(frozen=True, slots=True)
class SignatureExplanation:
    """What went into a signature, safe to print: the key is redacted."""

    algorithm: SignType
    string_to_sign: str
    expected: str
    received: str | None

    @property
    def matches(self) -> bool:
        return self.received is not None and hmac.compare_digest(self.expected.encode(), self.received.upper().encode())


def explain_signature(
    fields: Mapping[str, FieldValue], key: str | ApiKey, sign_type: SignType | str | None = None
) -> SignatureExplanation:
    """Explain a signature for a human: the string-to-sign (key redacted), expected and received.

    The answer to WeChat's "签名错误": compare ``string_to_sign`` with what your code signed.
    """
    received = fields.get("sign")
    received_text = received if isinstance(received, str) and received else None
    if sign_type is None:
        claimed = fields.get("sign_type")
        if isinstance(claimed, str) and claimed:
            sign_type = claimed
        elif received_text is not None and len(received_text) == 64:
            sign_type = HMAC_SHA256
        else:
            sign_type = MD5
    algorithm = _checked_sign_type(sign_type)
    message = string_to_sign(fields)
    return SignatureExplanation(
        algorithm=algorithm,
        string_to_sign=f"{message}&key=<redacted>",
        expected=_digest(message, as_api_key(key), algorithm),
        received=received_text,
    )


def new_nonce(length: int = 32) -> str:
    """A fresh random ``nonce_str`` (spec 3.5): hex letters and digits from :mod:`secrets`."""
    if not 1 <= length <= 32:
        raise ValueError("a nonce is 1 to 32 characters")
    return secrets.token_hex(16)[:length]
