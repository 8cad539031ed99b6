"""Payment and refund notifications: parse + verify, the reply bodies, and builders (spec 7, 12).

A payment notification is signed like any v2 message: it is decoded with the hardened codec and
its signature is checked over **all** received fields (unknown ones such as ``rate_value`` or
``sign_type`` included) before anything in it is believed; a missing ``sign`` is a failure.
A refund notification is not signed: its ``req_info`` is AES-256-ECB encrypted with the MD5 of
the API key; the decrypted ``<root>`` document goes through the same hardened codec.

The builders are what the sandbox sends; they are the exact inverse of the parsers.

>>> reply_success()
b'<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import ClassVar, Final, TypeAlias

from minipay.protocol._crypto import decrypt_req_info, encrypt_req_info
from minipay.protocol._errors import DecryptionError
from minipay.protocol._responses import WeChatResponse, _PaymentFields
from minipay.protocol._secrets import ApiKey
from minipay.protocol._signing import DEFAULT_POLICY, MD5, SignPolicy, SignType, sign, verify
from minipay.protocol._xml import DEFAULT_MAX_BYTES, decode_xml, encode_xml

__all__ = [
    "REFUND_NOTIFICATION_OUTER_FIELDS",
    "KeyLookup",
    "PaymentNotification",
    "RefundNotification",
    "build_payment_notification",
    "build_refund_notification",
    "parse_payment_notification",
    "parse_refund_notification",
    "reply_fail",
    "reply_success",
]

_SUCCESS_REPLY: Final = (
    b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
)

#: The unencrypted fields of a refund notification (spec 12.1); everything else comes from ``req_info``.
REFUND_NOTIFICATION_OUTER_FIELDS: Final = frozenset(
    {"return_code", "return_msg", "appid", "mch_id", "sub_appid", "sub_mch_id", "nonce_str", "req_info"}
)


#: Finds the key (and signature policy) of the institution a notification names, from its decoded
#: outer fields (``appid``, ``mch_id``, ``sub_mch_id``), *before* anything in it is believed. A
#: service with several institutions passes one to the parsers; to refuse a notification
#: (a foreign ``mch_id``), raise: the exception propagates unchanged.
KeyLookup: TypeAlias = Callable[[Mapping[str, str]], tuple[str | ApiKey, SignPolicy]]


def _key_for(
    key: str | ApiKey | KeyLookup, fields: Mapping[str, str], policy: SignPolicy
) -> tuple[str | ApiKey, SignPolicy]:
    if isinstance(key, (str, ApiKey)):
        return key, policy
    return key(fields)


class PaymentNotification(_PaymentFields):
    """The payment result notification (spec 7.2), verified.

    ``rate_value`` (WxJava's name) and ``rate`` (SKIT's) are both accepted; :attr:`exchange_rate`
    gives whichever came (CNY per major unit x 10^8). Unknown fields are kept in ``model_extra``.
    """

    rate_value: int | None = None
    rate: int | None = None

    @property
    def exchange_rate(self) -> int | None:
        return self.rate_value if self.rate_value is not None else self.rate

    @property
    def is_success(self) -> bool:
        """Both ``return_code`` and ``result_code`` are ``SUCCESS``: the payment went through."""
        return self.return_code == "SUCCESS" and self.result_code == "SUCCESS"


class RefundNotification(WeChatResponse):
    """A refund result notification (spec 12): the outer fields plus the decrypted ``req_info``.

    ``refund_status`` is ``SUCCESS``, ``CHANGE`` (abnormal) or ``REFUNDCLOSE``; ``success_time`` is
    an aware China-time datetime. ``req_info`` itself is not kept.
    """

    _datetime_fields: ClassVar[frozenset[str]] = frozenset({"success_time"})

    transaction_id: str | None = None
    out_trade_no: str | None = None
    refund_id: str | None = None
    out_refund_no: str | None = None
    total_fee: int | None = None
    settlement_total_fee: int | None = None
    refund_fee: int | None = None
    settlement_refund_fee: int | None = None
    refund_status: str | None = None
    success_time: datetime | None = None
    refund_recv_accout: str | None = None
    refund_account: str | None = None
    refund_request_source: str | None = None
    cash_refund_fee: int | None = None
    fee_type: str | None = None
    refund_fee_type: str | None = None
    cash_refund_fee_type: str | None = None

    def inner_fields(self) -> dict[str, str]:
        """The fields that travel inside ``req_info`` (everything but the outer fields)."""
        return {k: v for k, v in self.to_fields().items() if k not in REFUND_NOTIFICATION_OUTER_FIELDS}


def parse_payment_notification(
    body: bytes,
    key: str | ApiKey | KeyLookup,
    *,
    sign_type: SignType | str | None = None,
    policy: SignPolicy = DEFAULT_POLICY,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PaymentNotification:
    """Decode, verify and type a payment notification (spec 7).

    Raises :class:`~minipay.protocol.XMLError` for a body the codec refuses,
    :class:`~minipay.protocol.SignatureError` for a missing or wrong ``sign`` (the algorithm is
    ``sign_type``, else the received ``sign_type`` field, else the signature length; ``policy`` may
    pin HMAC-SHA256), :class:`~minipay.protocol.FieldError` for a malformed amount or time.
    ``key`` may be a :data:`KeyLookup` (the institution's key and policy from the decoded fields;
    ``policy`` is then the lookup's). The caller still compares ``total_fee``/``fee_type``/
    ``sub_mch_id`` with its own order (spec 7.5).
    """
    fields = decode_xml(body, max_bytes=max_bytes)
    api_key, policy = _key_for(key, fields, policy)
    verify(fields, api_key, sign_type, policy=policy)
    return PaymentNotification.from_fields(fields)


def parse_refund_notification(
    body: bytes,
    key: str | ApiKey | KeyLookup,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RefundNotification:
    """Decode a refund notification and decrypt its ``req_info`` (spec 12).

    Raises :class:`~minipay.protocol.XMLError` (outer or inner XML refused),
    :class:`~minipay.protocol.DecryptionError` (no ``req_info``; bad Base64, block length or padding,
    i.e. a wrong key or a forgery), :class:`~minipay.protocol.FieldError` (malformed amount or time).
    Decrypted fields that collide with an outer field are refused. ``key`` may be a
    :data:`KeyLookup`, called with the outer fields (its policy is not used: nothing is signed).
    """
    outer = decode_xml(body, max_bytes=max_bytes)
    api_key, _ = _key_for(key, outer, DEFAULT_POLICY)
    req_info = outer.get("req_info")
    if not req_info:
        raise DecryptionError(f"refund notification has no req_info (return_code={outer.get('return_code')!r})")
    inner = decode_xml(decrypt_req_info(req_info, api_key), max_bytes=max_bytes, root="root")
    clash = REFUND_NOTIFICATION_OUTER_FIELDS & inner.keys()
    if clash:
        raise DecryptionError(f"req_info repeats outer fields: {sorted(clash)}")
    merged = {k: v for k, v in outer.items() if k != "req_info"}
    merged.update(inner)
    return RefundNotification.from_fields(merged)


def reply_success() -> bytes:
    """The exact body that tells WeChat the notification was received (spec 7.3)."""
    return _SUCCESS_REPLY


def reply_fail(message: str) -> bytes:
    """The documented refusal: ``return_code=FAIL`` with ``return_msg`` (WeChat retries later)."""
    return encode_xml({"return_code": "FAIL", "return_msg": message})


def build_payment_notification(
    fields: Mapping[str, str | int],
    key: str | ApiKey,
    sign_type: SignType | str = MD5,
    *,
    include_sign_type: bool | None = None,
) -> bytes:
    """Sign ``fields`` and encode them as the notification body (the sandbox's side).

    ``include_sign_type``: add a ``sign_type`` field (signed like the others). ``None`` adds it
    only for HMAC-SHA256; the spec 7.6 sample has none. A ``sign`` in ``fields`` is replaced.
    """
    payload: dict[str, str | int] = {k: v for k, v in fields.items() if k != "sign"}
    if include_sign_type or (include_sign_type is None and sign_type != MD5):
        payload["sign_type"] = sign_type
    payload["sign"] = sign(payload, key, sign_type)
    return encode_xml(payload)


def build_refund_notification(
    outer: Mapping[str, str],
    inner: Mapping[str, str | int],
    key: str | ApiKey,
) -> bytes:
    """Encrypt ``inner`` (spec 12.3 fields) into ``req_info`` and wrap it in the ``outer`` fields.

    ``outer`` holds ``return_code``, ``appid``, ``mch_id``, ``sub_appid``, ``sub_mch_id``,
    ``nonce_str`` (no ``sign``: the refund notification is not signed).
    """
    if "sign" in outer or "req_info" in outer:
        raise ValueError("outer refund-notification fields carry neither sign nor req_info")
    clash = REFUND_NOTIFICATION_OUTER_FIELDS & inner.keys()
    if clash:
        raise ValueError(f"inner fields must not repeat outer ones: {sorted(clash)}")
    req_info = encrypt_req_info(encode_xml(inner, root="root"), key)
    return encode_xml({**outer, "req_info": req_info})
