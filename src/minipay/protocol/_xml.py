"""The flat ``<xml>`` document of v2, both ways, hardened against hostile input (spec 2.2, 2.4).

Decoding uses expat directly with the same defences as ``defusedxml`` (any DOCTYPE, entity
declaration or external reference aborts the parse before anything is expanded or fetched), then
enforces the v2 shape: root ``xml``, one level of children, no attributes, no duplicates, no
processing instructions, UTF-8 only, and a size cap checked before parsing. Every refusal is an
:class:`XMLError` that names what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, NoReturn
from xml.parsers import expat

from minipay.protocol._errors import XMLError

__all__ = ["DEFAULT_MAX_BYTES", "decode_xml", "encode_xml"]

DEFAULT_MAX_BYTES: Final = 64 * 1024
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Characters XML 1.0 cannot carry at all (spec: Char production), and lone surrogates.
_INVALID_CHARS_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ROOTS: Final = frozenset({"xml", "root"})
_XML_DECL_ENCODING_RE: Final = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._\-]+)[\"']")


def _cdata(value: str) -> str:
    # "]]>" cannot appear inside CDATA: end the section between "]]" and ">".
    # A carriage return would be normalised to "\n" by every parser: send it as a character reference.
    body = value.replace("]]>", "]]]]><![CDATA[>")
    if "\r" in body:
        body = body.replace("\r", "]]>&#13;<![CDATA[")
    return f"<![CDATA[{body}]]>"


def encode_xml(fields: Mapping[str, str | int], *, root: str = "xml") -> bytes:
    """Encode ``fields`` as a flat ``<xml>`` document (UTF-8). Strings go in CDATA, ints as text.

    ``root="root"`` gives the refund-notification ``req_info`` plaintext (spec 12.3).

    >>> encode_xml({"return_code": "SUCCESS", "total_fee": 1})
    b'<xml><return_code><![CDATA[SUCCESS]]></return_code><total_fee>1</total_fee></xml>'
    """
    if root not in _ROOTS:
        raise XMLError(f"root must be one of {sorted(_ROOTS)}")
    out = [f"<{root}>"]
    for name, value in fields.items():
        if not _NAME_RE.fullmatch(name) or name.lower().startswith("xml"):
            raise XMLError(f"invalid field name {name!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise XMLError(f"field {name!r} must be str or int, not {type(value).__name__}")
        if isinstance(value, int):
            out.append(f"<{name}>{value}</{name}>")
            continue
        if _INVALID_CHARS_RE.search(value):
            raise XMLError(f"field {name!r} contains a character XML 1.0 cannot carry")
        out.append(f"<{name}>{_cdata(value)}</{name}>")
    out.append(f"</{root}>")
    return "".join(out).encode("utf-8")


class _Decoder:
    """expat callbacks that build the flat dict and refuse everything else."""

    __slots__ = ("current", "depth", "fields", "parts", "root", "root_seen")

    def __init__(self, root: str = "xml") -> None:
        self.root = root
        self.fields: dict[str, str] = {}
        self.depth = 0
        self.current: str | None = None
        self.parts: list[str] = []
        self.root_seen = False

    def start(self, name: str, attrs: dict[str, str] | list[str]) -> None:
        if attrs:
            _refuse(f"attributes are not allowed (on <{name}>)")
        if self.depth == 0:
            if self.root_seen:
                _refuse("more than one root element")
            if name != self.root:
                _refuse(f"root element must be <{self.root}>, not <{name}>")
            self.root_seen = True
        elif self.depth == 1:
            if self.parts and "".join(self.parts).strip():
                _refuse("text outside the fields of <xml>")
            if name in self.fields:
                _refuse(f"duplicate field <{name}>")
            self.current = name
        else:
            _refuse(f"nested elements are not allowed (<{name}> inside <{self.current}>)")
        self.parts = []
        self.depth += 1

    def end(self, name: str) -> None:
        self.depth -= 1
        if self.depth == 1:
            self.fields[name] = "".join(self.parts)
            self.current = None
        elif self.depth == 0 and self.parts and "".join(self.parts).strip():
            _refuse("text outside the fields of <xml>")
        self.parts = []

    def text(self, data: str) -> None:
        self.parts.append(data)


def _refuse(message: str) -> NoReturn:
    raise XMLError(message)


def _doctype(*_: object) -> None:
    _refuse("DOCTYPE is not allowed")


def _entity_decl(*_: object) -> None:
    _refuse("entity declarations are not allowed")


def _external_ref(*_: object) -> int:
    _refuse("external references are not allowed")


def _processing_instruction(target: str, _data: str) -> None:
    _refuse(f"processing instructions are not allowed (<?{target} ...?>)")


def decode_xml(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, root: str = "xml") -> dict[str, str]:
    """Decode a flat ``<xml>`` document into ``{field: text}``; every value stays a string.

    Accepts CDATA and plain text. Refuses (with :class:`XMLError`): bodies over ``max_bytes``,
    non-UTF-8, a DOCTYPE or any entity declaration, processing instructions, attributes,
    nested elements, duplicate fields, a root other than ``root`` (``xml``; ``root`` for the
    decrypted refund notification, spec 12.3) and malformed XML.

    >>> decode_xml(b"<xml><a><![CDATA[x&y]]></a><b>2</b></xml>")
    {'a': 'x&y', 'b': '2'}
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise XMLError(f"body must be bytes, not {type(body).__name__}")
    if len(body) > max_bytes:
        raise XMLError(f"body too large: {len(body)} bytes (limit {max_bytes})")
    raw = bytes(body)
    if not raw.strip():
        raise XMLError("empty body")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XMLError(f"body is not valid UTF-8 (byte {exc.start})") from None
    declared = _XML_DECL_ENCODING_RE.match(raw)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise XMLError(f"encoding {declared.group(1).decode('ascii')!r} is not allowed (UTF-8 only)")
    if root not in _ROOTS:
        raise XMLError(f"root must be one of {sorted(_ROOTS)}")
    decoder = _Decoder(root)
    parser = expat.ParserCreate("UTF-8")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _doctype
    parser.EntityDeclHandler = _entity_decl
    parser.UnparsedEntityDeclHandler = _entity_decl
    parser.ExternalEntityRefHandler = _external_ref
    parser.ProcessingInstructionHandler = _processing_instruction
    parser.StartElementHandler = decoder.start
    parser.EndElementHandler = decoder.end
    parser.CharacterDataHandler = decoder.text
    parser.buffer_text = True
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as exc:
        raise XMLError(f"malformed XML: {expat.ErrorString(exc.code)} at line {exc.lineno}") from None
    if not decoder.root_seen:
        raise XMLError(f"no <{root}> root element")
    return decoder.fields
