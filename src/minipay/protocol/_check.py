"""The response check of spec 2.3, shared by every caller that reads a WeChat answer.

Reads an answer's layers in order (``return_code``, the signature, ``result_code``) and turns a
failure into the error the code table (``_codes``) names for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from minipay.protocol._codes import business_error
from minipay.protocol._errors import (
    CommunicationError,
    ResponseSignatureError,
    SignatureError,
    UnexpectedResponseError,
)
from minipay.protocol._operations import OPERATION_TABLE, is_mutating
from minipay.protocol._secrets import ApiKey
from minipay.protocol._signing import DEFAULT_POLICY, SignPolicy, SignType, verify

__all__ = ["check_response"]


def _has_result_layer(operation: str) -> bool:
    op = OPERATION_TABLE.get(operation)
    return op is None or op.result_layer


def check_response(
    operation: str,
    fields: Mapping[str, str],
    *,
    key: str | ApiKey,
    sign_type: SignType | str | None = "MD5",
    policy: SignPolicy = DEFAULT_POLICY,
    ids: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Judge a decoded v2 response in the order of spec 2.3; returns the fields when all is well.

    1. no ``return_code`` -> :class:`UnexpectedResponseError`; ``return_code=FAIL`` ->
       :class:`CommunicationError` (``return_msg`` in ``err_code_des``; no signature to check);
    2. the signature, **before** anything else is believed: :class:`ResponseSignatureError` (a
       :class:`SignatureError` with ``operation``, ``ids`` and ``outcome_unknown``) when missing or
       wrong. ``sign_type`` is the algorithm of the request; a response that names another one is
       refused (no downgrade), and ``policy`` may pin HMAC-SHA256;
    3. ``result_code=FAIL`` -> the :class:`BusinessError` subclass of ``err_code`` (see
       :func:`business_error`), with ``operation``, ``ids``, ``retryable``, ``outcome_unknown``.

    >>> check_response("orderquery", {"return_code": "FAIL", "return_msg": "签名错误"}, key="a" * 32)
    Traceback (most recent call last):
    ...
    minipay.protocol._errors.CommunicationError: [orderquery] return_code=FAIL: 签名错误
    """
    return_code = fields.get("return_code")
    if return_code is None:
        raise UnexpectedResponseError("the answer has no return_code", operation=operation, ids=ids, fields=fields)
    if return_code != "SUCCESS":
        if return_code != "FAIL":
            raise UnexpectedResponseError(
                f"unknown return_code {return_code!r}", operation=operation, ids=ids, fields=fields
            )
        return_msg = fields.get("return_msg", "")
        raise CommunicationError(
            f"return_code=FAIL: {return_msg}",
            operation=operation,
            ids=ids,
            err_code=fields.get("err_code", "") or fields.get("error_code", ""),
            err_code_des=return_msg,
            fields=fields,
        )
    claimed = fields.get("sign_type")
    try:
        if sign_type is not None and claimed and claimed != sign_type:
            raise SignatureError(f"signed with {claimed}, request used {sign_type}")
        verify(fields, key, sign_type, policy=policy)
    except SignatureError as exc:
        raise ResponseSignatureError(
            f"response {exc}", operation=operation, ids=ids, outcome_unknown=is_mutating(operation)
        ) from None
    result_code = fields.get("result_code")
    if result_code == "SUCCESS" or (result_code is None and not _has_result_layer(operation)):
        return dict(fields)
    if result_code == "FAIL":
        raise business_error(
            operation,
            fields.get("err_code", ""),
            fields.get("err_code_des", ""),
            ids=ids,
            fields=fields,
        )
    raise UnexpectedResponseError(
        f"result_code is {result_code!r}",
        operation=operation,
        ids=ids,
        fields=fields,
        outcome_unknown=is_mutating(operation),
    )
