"""``minipay sign`` and ``minipay verify``: the tools for WeChat's "签名错误" (spec 3).

Both print the string-to-sign with the key redacted; the key itself is never echoed (read from
``--key``, an environment variable, or a hidden prompt). Kept out of :mod:`minipay.protocol`
because it reads files and the environment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from minipay.protocol import (
    HMAC_SHA256,
    MD5,
    ApiKey,
    ConfigurationError,
    DecryptionError,
    MinipayError,
    SignatureError,
    SignPolicy,
    XMLError,
    decode_xml,
    decrypt_req_info,
    encode_xml,
    explain_signature,
    sign,
    verify,
)

__all__ = ["UsageError", "load_fields", "read_key", "sign_main", "verify_main"]

Echo = Callable[..., None]
_MAX_FILE_BYTES = 1024 * 1024


class UsageError(Exception):
    """A bad invocation; the command exits with status 2."""


def read_key(key: str | None, key_env: str | None, prompt: Callable[[], str], environ: Mapping[str, str]) -> ApiKey:
    """The API key from ``--key``, ``--key-env NAME`` or a hidden prompt (in that order)."""
    if key is not None and key_env is not None:
        raise UsageError("give --key or --key-env, not both")
    if key_env is not None:
        if key_env not in environ:
            raise UsageError(f"environment variable {key_env} is not set")
        value = environ[key_env]
    elif key is not None:
        value = key
    else:
        value = prompt()
    try:
        return ApiKey(value.strip())
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")  # values may contain "=" (package=prepay_id=...)
        if not sep or not name:
            raise UsageError(f"fields are NAME=VALUE, not {pair!r}")
        if name in fields:
            raise UsageError(f"field {name!r} given twice")
        fields[name] = value
    return fields


def load_fields(pairs: Sequence[str], file: str | None, *, stdin: Callable[[], bytes] | None = None) -> dict[str, str]:
    """Fields from ``NAME=VALUE`` arguments and/or a file (``<xml>`` or a JSON object; ``-`` = stdin)."""
    fields: dict[str, str] = {}
    if file is not None:
        fields.update(_parse_body(_read(file, stdin)))
    for name, value in _parse_pairs(pairs).items():
        fields[name] = value
    if not fields:
        raise UsageError("no fields: give NAME=VALUE arguments or --file")
    return fields


def _read(file: str, stdin: Callable[[], bytes] | None) -> bytes:
    if file == "-":
        if stdin is None:
            raise UsageError("no standard input")
        return stdin()
    path = Path(file)
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise UsageError(f"{file} is larger than {_MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None


def _parse_body(body: bytes) -> dict[str, str]:
    stripped = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"<"):
        try:
            return decode_xml(stripped, max_bytes=_MAX_FILE_BYTES)
        except XMLError as exc:
            raise UsageError(f"not a v2 XML body: {exc}") from None
    try:
        data = json.loads(stripped)
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the file is neither an <xml> body nor a JSON object") from None
    if not isinstance(data, dict):
        raise UsageError("the JSON file must hold an object of fields")
    fields: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UsageError(f"field {name!r} must be a string or an integer in the JSON file")
        fields[str(name)] = str(value)
    return fields


def _sign_type(value: str | None) -> str | None:
    if value is None:
        return None
    normal = value.strip().upper()
    if normal in ("MD5", "HMAC-SHA256", "HMAC_SHA256", "SHA256"):
        return MD5 if normal == "MD5" else HMAC_SHA256
    raise UsageError(f"--sign-type is MD5 or HMAC-SHA256, not {value!r}")


def sign_main(
    *,
    pairs: Sequence[str],
    file: str | None,
    key: ApiKey,
    sign_type: str | None,
    xml: bool,
    echo: Echo,
    stdin: Callable[[], bytes] | None = None,
) -> int:
    """Print the algorithm, the string-to-sign (key redacted) and the signature; 0 on success.

    The algorithm is ``--sign-type``, else the fields' ``sign_type`` (``signType``), else MD5. A ``sign`` among
    the fields is ignored for signing and compared with the result.
    """
    fields = load_fields(pairs, file, stdin=stdin)
    claimed = fields.get("sign_type") or fields.get("signType") or None  # signType: the paySign fields
    if sign_type is not None:
        algorithm = _sign_type(sign_type)
    elif claimed in (MD5, HMAC_SHA256):
        algorithm = claimed
    elif claimed is not None:
        raise UsageError(
            f"the fields say sign_type={claimed!r}: WeChat knows MD5 and HMAC-SHA256 (or give --sign-type)"
        )
    else:
        algorithm = MD5
    given = fields.pop("sign", None)
    explanation = explain_signature(fields, key, algorithm)
    echo(f"algorithm:      {explanation.algorithm}")
    echo(f"string-to-sign: {explanation.string_to_sign}")
    echo(f"sign:           {explanation.expected}")
    if claimed is not None and claimed != explanation.algorithm:
        # A classic cause of "签名错误": the body names one algorithm, the signer used the other.
        echo(f"warning:        the fields say sign_type={claimed}, but this signature is {explanation.algorithm}")
    if given is not None:
        same = given.upper() == explanation.expected
        echo(f"given sign:     {given} ({'matches' if same else 'DIFFERS'})")
    if xml:
        echo(encode_xml({**fields, "sign": explanation.expected}).decode("utf-8"))
    return 0


def verify_main(
    *,
    file: str,
    key: ApiKey,
    sign_type: str | None,
    pin_hmac: bool,
    echo: Echo,
    stdin: Callable[[], bytes] | None = None,
) -> int:
    """Check a response or notification body against the key; explain a mismatch.

    Exit status: 0 the signature holds (or, for a refund notification, ``req_info`` decrypts);
    1 it does not; 2 the body cannot be read.
    """
    fields = _parse_body(_read(file, stdin))
    if "sign" not in fields and "req_info" in fields:
        return _verify_refund_notification(fields, key, echo)
    algorithm = _sign_type(sign_type)
    policy = SignPolicy(pinned=HMAC_SHA256) if pin_hmac else SignPolicy()
    try:
        verify(fields, key, algorithm, policy=policy)
    except SignatureError as exc:
        _explain_mismatch(fields, key, algorithm, str(exc), echo)
        return 1
    explanation = explain_signature(fields, key, algorithm)
    echo(f"signature OK ({explanation.algorithm}) over {len(fields) - 1} fields")
    echo(f"string-to-sign: {explanation.string_to_sign}")
    return 0


def _explain_mismatch(fields: dict[str, str], key: ApiKey, algorithm: str | None, reason: str, echo: Echo) -> None:
    echo(f"signature MISMATCH: {reason}")
    if not fields.get("sign"):
        if fields.get("return_code") == "FAIL":
            echo("this is a return_code=FAIL answer: WeChat does not sign those (return_msg says why)")
        echo("no signature to check: a signed body must carry a non-empty <sign> field")
        return
    try:
        explanation = explain_signature(fields, key, algorithm)
    except SignatureError as exc:
        echo(f"cannot explain: {exc}")
        return
    echo(f"algorithm:      {explanation.algorithm}")
    echo(f"string-to-sign: {explanation.string_to_sign}")
    echo(f"expected:       {explanation.expected}")
    echo(f"received:       {explanation.received}")
    claimed = fields.get("sign_type")
    if claimed:
        echo(f"the body names sign_type={claimed}")
    other = HMAC_SHA256 if explanation.algorithm == MD5 else MD5
    if sign(fields, key, other) == (explanation.received or "").upper():
        echo(f"it matches with {other}: the sender signed with {other}")
    elif explanation.matches:
        echo("the signature matches, but the policy refused it (see the reason above)")
    else:
        echo("check the API key (it must be the institution's v2 key) and that no field was changed")
    empty = sorted(name for name, value in fields.items() if value == "" and name != "sign")
    if empty:
        echo(f"empty fields are not signed: {', '.join(empty)}")


def _verify_refund_notification(fields: dict[str, str], key: ApiKey, echo: Echo) -> int:
    echo("refund notification: no sign; authenticity comes from req_info decrypting with the key")
    try:
        inner = decode_xml(decrypt_req_info(fields["req_info"], key), root="root")
    except (DecryptionError, XMLError) as exc:
        echo(f"req_info does NOT decrypt with this key: {exc}")
        return 1
    echo(f"req_info decrypts ({len(inner)} fields):")
    for name, value in inner.items():
        echo(f"  {name} = {value}")
    return 0


def run(action: Callable[[], int], echo: Echo) -> int:
    """Run a command body, turning usage errors into exit status 2 (never a traceback)."""
    try:
        return action()
    except UsageError as exc:
        echo(f"error: {exc}", err=True)
        return 2
    except MinipayError as exc:
        echo(f"error: {exc}", err=True)
        return 2
