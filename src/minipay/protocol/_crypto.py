"""Refund notification ``req_info``: AES-256-ECB, key = lower-case hex MD5 of the API key, PKCS#7
(spec 12.2). Decryption checks Base64, block length and padding strictly; encryption is what the
sandbox uses to send refund notifications.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from minipay.protocol._errors import DecryptionError
from minipay.protocol._secrets import ApiKey, as_api_key

__all__ = ["decrypt_req_info", "encrypt_req_info"]

_BLOCK = 16


def _cipher(key: ApiKey) -> Cipher[modes.ECB]:
    aes_key = hashlib.md5(key.reveal().encode(), usedforsecurity=False).hexdigest().encode("ascii")
    # ECB is what WeChat specifies for req_info (spec 12.2); it is not our choice.
    return Cipher(algorithms.AES(aes_key), modes.ECB())  # noqa: S305


def encrypt_req_info(plaintext: bytes, key: str | ApiKey) -> str:
    """Encrypt the refund-notification ``<root>`` XML the way WeChat does; returns Base64 text."""
    pad = _BLOCK - len(plaintext) % _BLOCK
    encryptor = _cipher(as_api_key(key)).encryptor()
    data = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(data).decode("ascii")


def decrypt_req_info(req_info: str, key: str | ApiKey) -> bytes:
    """Decrypt ``req_info``; raises :class:`DecryptionError` on bad Base64, length or padding."""
    if not isinstance(req_info, str) or not req_info.isascii():
        raise DecryptionError("req_info is not valid Base64")
    text = req_info.strip()
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptionError("req_info is not valid Base64") from None
    # validate=True still lets unused trailing bits vary ("...M=" and "...N=" decode alike):
    # only the one canonical spelling of the ciphertext is accepted.
    if base64.b64encode(data).decode("ascii") != text:
        raise DecryptionError("req_info is not canonical Base64")
    if not data or len(data) % _BLOCK:
        raise DecryptionError(f"req_info is {len(data)} bytes, not a whole number of AES blocks")
    decryptor = _cipher(as_api_key(key)).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= _BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise DecryptionError("req_info has bad padding (wrong API key?)")
    return plain[:-pad]
