"""The v2 signature: MD5 or HMAC-SHA256 over the sorted, non-empty fields (spec section 3).

Written once and used by both sides: the client signs requests and checks responses and
notifications, the sandbox checks requests and signs its answers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, Literal, TypeAlias

from minipay.protocol._errors import SignatureError
from minipay.protocol._random import random_hex
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
# MD5 is the protocol's choice, not ours for security: usedforsecurity=False keeps it available
# on FIPS builds. Copying a fresh context is cheaper than building one: with OpenSSL 3,
# hashlib.md5(usedforsecurity=False) looks the algorithm up again on every call.
_MD5: Final = hashlib.md5(usedforsecurity=False)


def _checked_sign_type(value: str) -> SignType:
    if value == MD5:
        return MD5
    if value == HMAC_SHA256:
        return HMAC_SHA256
    raise SignatureError(f"unknown sign_type {value!r} (expected 'MD5' or 'HMAC-SHA256')")


def string_to_sign(fields: Mapping[str, FieldValue]) -> str:
    """``stringA`` of spec 3.1: non-empty fields except ``sign``, byte-wise ascending, raw values.

    Values are ``str`` (signed as they are) or ``int`` (signed as their decimal text); a ``str`` or
    ``int`` subclass (an enum member) is signed as its plain text, exactly as ``encode_xml`` sends it.

    >>> string_to_sign({"b": "2", "a": 1, "sign": "X", "c": ""})
    'a=1&b=2'
    """
    text = _fast_string_to_sign(fields)
    if text is not None:
        return text
    parts = []
    for name in sorted(fields):  # code-point order is UTF-8 byte order
        if name == "sign":
            continue
        value = fields[name]
        if value is None:
            continue
        text = str.__str__(value) if isinstance(value, str) else _int_text(name, value)
        if text:
            parts.append(f"{name}={text}")
    return "&".join(parts)


# The order of a set of names: an itemgetter of the signed names in ascending order, the
# "name=" pieces between the values (values go at the odd places), and the places of int values.
_Order: TypeAlias = tuple[Callable[[Mapping[str, FieldValue]], tuple[object, ...]], tuple[str, ...], tuple[int, ...]]
_ORDERS: Final[dict[tuple[str, ...], _Order]] = {}
_MAX_ORDERS: Final = 512


def _fast_string_to_sign(fields: Mapping[str, FieldValue]) -> str | None:
    """The common case, or ``None`` to let the checked loop of :func:`string_to_sign` decide.

    The common case: at least two signed fields, none empty, each a ``str`` or an exact ``int``.
    The sort and the "name=" pieces depend only on the names (and which values are ints), so they
    are worked out once per set of names and cached; the values are then picked in order and laid
    between the pieces by C code, with no Python step per field.
    """
    names = tuple(fields)
    order = _ORDERS.get(names)
    if order is None:
        order = _order(names, fields)
        if order is None:
            return None
    values = order[0](fields)
    if "" in values:  # an empty value is left out: the checked loop does that
        return None
    text = _laid_out(order, values)
    if text is None:  # the value types changed since the order was worked out
        order = _order(names, fields)
        text = None if order is None else _laid_out(order, values)
    return text


def _laid_out(order: _Order, values: tuple[object, ...]) -> str | None:
    """``name=value&...`` in order, or ``None`` when a value's type does not fit the order."""
    _, pieces, int_places = order
    if int_places:
        as_list = list(values)
        for place in int_places:
            value = as_list[place]
            if type(value) is not int:
                return None
            as_list[place] = str(value)
        values = tuple(as_list)
    parts: list[object] = list(pieces)
    parts[1::2] = values
    try:
        # The join is also the type check: it refuses anything but a str (a str subclass gives
        # its plain text, as str.__str__ would).
        return "".join(parts)  # type: ignore[arg-type]
    except TypeError:
        return None


def _order(names: tuple[str, ...], fields: Mapping[str, FieldValue]) -> _Order | None:
    """Work out and cache the order of ``names`` for values typed as in ``fields``, if it has one."""
    signed = sorted(name for name in names if name != "sign")
    if len(signed) < 2:  # itemgetter of one name gives the bare value: the checked loop is as quick
        return None
    int_places = []
    for place, name in enumerate(signed):
        value = fields[name]
        if type(value) is int:
            int_places.append(place)
        elif not isinstance(value, str):
            return None  # None, an int subclass or a value to refuse: the checked loop
    pieces = tuple(piece for place, name in enumerate(signed) for piece in (f"{'&' if place else ''}{name}=", ""))
    order: _Order = (itemgetter(*signed), pieces, tuple(int_places))
    if len(_ORDERS) >= _MAX_ORDERS:  # bounded: names may come from received messages
        _ORDERS.clear()
    _ORDERS[names] = order
    return order


def _int_text(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"field {name!r} must be str or int, not {type(value).__name__}")
    return str(int(value))  # an IntEnum member is signed as its number, as encode_xml sends it


def _key_text(key: str | ApiKey) -> str:
    """The key's text; a plain string is checked like :class:`ApiKey` (32 ASCII letters or digits)."""
    if type(key) is str and len(key) == 32 and key.isascii() and key.isalnum():
        return key  # the common case, without building an ApiKey on every call
    return as_api_key(key).reveal()  # an ApiKey, or a malformed string: refused without echoing it


def _digest(message: str, key: str, sign_type: SignType) -> str:
    try:
        data: bytes | None = (message + "&key=" + key).encode()
    except UnicodeEncodeError:
        data = None  # raised below, outside this block: the encoder's error holds the key in .object
    if data is None:
        # A lone surrogate has no UTF-8 form: nothing can be signed or checked over it.
        raise SignatureError("a field value is not valid Unicode text (a lone surrogate)")
    if sign_type == MD5:
        md5 = _MD5.copy()
        md5.update(data)
        return md5.hexdigest().upper()
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest().upper()


def sign(fields: Mapping[str, FieldValue], key: str | ApiKey, sign_type: SignType | str = MD5) -> str:
    """The v2 signature of ``fields`` (spec 3.1), upper-case hex.

    ``sign_type`` chooses the algorithm; when the fields carry ``sign_type`` it is signed like any
    other field (so pass the same value in both places).

    >>> sign({"appid": "wxd930ea5d5a258f4f", "mch_id": "10000100", "device_info": "1000",
    ...       "body": "test", "nonce_str": "ibuaiVcKdpRxkhJA"}, "192006250b4c09247ec02edce69f6a2d")
    '9A0A8659F005D6984697E2CA0A9CF3B7'
    """
    return _digest(string_to_sign(fields), _key_text(key), _checked_sign_type(sign_type))


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
    expected = _digest(string_to_sign(fields), _key_text(key), algorithm)
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
        expected=_digest(message, _key_text(key), algorithm),
        received=received_text,
    )


def new_nonce(length: int = 32) -> str:
    """A fresh random ``nonce_str`` (spec 3.5): hex letters and digits from the OS's CSPRNG
    (:func:`~minipay.protocol._random.random_hex`)."""
    if not 1 <= length <= 32:
        raise ValueError("a nonce is 1 to 32 characters")
    return random_hex(16)[:length]
