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
from typing import Final, NoReturn, TypeAlias
from xml.parsers import expat

from minipay.protocol._errors import XMLError

__all__ = ["DEFAULT_MAX_BYTES", "decode_xml", "encode_xml"]

DEFAULT_MAX_BYTES: Final = 64 * 1024
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Characters XML 1.0 cannot carry at all (spec: Char production), and lone surrogates.
_INVALID_CHARS_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ROOTS: Final = frozenset({"xml", "root"})
_VALID_NAMES: Final[set[str]] = set()
# The fast path: a strict subset of the flat document (no declaration, no comments, no entities or
# references, simple names, CDATA or plain text) read with two regular expressions. Anything it does
# not recognise goes to the expat path, which accepts or refuses it with a precise message; both
# paths give the same result for every document the fast path accepts.
_XML_WS: Final = " \t\r\n"
_FAST_ENVELOPES: Final = {
    name: re.compile(rf"[ \t\r\n]*<{name}>(.*)</{name}>[ \t\r\n]*", re.DOTALL) for name in ("xml", "root")
}
# A field with a simple name and a CDATA or plain-text value with none of "]" (so no "]]>"), CR,
# "<" or "&": groups are name, CDATA opener (when present), value. Possessive quantifiers: nothing
# to backtrack into. The pattern starts with the literal "<" and never with white space: split()
# tries it at every position, and a leading "[ \t\r\n]*" would rescan a run of n spaces n times
# (64 KiB of padding took seconds); the white space between fields is checked in the gaps instead.
_FAST_FIELDS: Final = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*+)>(<!\[CDATA\[)?([^\]\r<&]*+)(?(2)\]\]>)</\1>")
# The ASCII bytes XML 1.0 allows; deleting them from an ASCII body leaves only forbidden controls.
_XML_ASCII: Final = b"\t\n\r" + bytes(range(0x20, 0x80))
# The same check without deleting: forbidden controls map to another byte, everything else to
# itself, so an ASCII body is clean exactly when translating leaves it unchanged (the no-delete
# form of bytes.translate is the cheaper loop).
_FLAG_CONTROLS: Final = bytes(c if c in _XML_ASCII or c >= 0x80 else c ^ 0x40 for c in range(256))
# encode_xml's layouts, per (root, names): the markup around the values (which go at the odd
# places) and the places of the int values; see _fast_encode.
_Layout: TypeAlias = tuple[tuple[str, ...], tuple[int, ...]]
_LAYOUTS: Final[dict[tuple[str, tuple[str, ...]], _Layout]] = {}
_MAX_LAYOUTS: Final = 512
_XML_DECL_ENCODING_RE: Final = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._\-]+)[\"']")


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.lower().startswith("xml"):
        raise XMLError(f"invalid field name {name!r}")
    if len(_VALID_NAMES) < 4096:  # bounded: names may come from received messages
        _VALID_NAMES.add(name)


def encode_xml(fields: Mapping[str, str | int], *, root: str = "xml") -> bytes:
    """Encode ``fields`` as a flat ``<xml>`` document (UTF-8). Strings go in CDATA, ints as text.

    ``root="root"`` gives the refund-notification ``req_info`` plaintext (spec 12.3). Refuses
    (:class:`XMLError`) a bad field name, a value that is not ``str``/``int``, and text with a
    character XML 1.0 cannot carry.

    >>> encode_xml({"return_code": "SUCCESS", "total_fee": 1})
    b'<xml><return_code><![CDATA[SUCCESS]]></return_code><total_fee>1</total_fee></xml>'
    """
    if root not in _ROOTS:
        raise XMLError(f"root must be one of {sorted(_ROOTS)}")
    body = _fast_encode(fields, root)
    return body if body is not None else _checked_bytes(_checked_encode(fields, root), fields)


def _checked_bytes(text: str, fields: Mapping[str, str | int]) -> bytes:
    """``text`` in UTF-8 once it holds only characters XML can carry; else the field is named."""
    if _xml_chars_only(text):
        return text.encode()
    for name, value in fields.items():
        if isinstance(value, str) and _INVALID_CHARS_RE.search(value):
            raise XMLError(f"field {name!r} contains a character XML 1.0 cannot carry")
    raise XMLError("the document contains a character XML 1.0 cannot carry")  # pragma: no cover


def _xml_chars_only(text: str) -> bool:
    if text.isascii():  # the usual case: one pass in C over the bytes
        raw = text.encode("ascii")
        return raw.translate(_FLAG_CONTROLS) == raw
    return _INVALID_CHARS_RE.search(text) is None


def _fast_encode(fields: Mapping[str, str | int], root: str) -> bytes | None:
    """The document for the common case, or ``None`` to let :func:`_checked_encode` decide.

    The common case: names already checked, each value a ``str`` or an exact ``int``, no value
    holding "]]>" or a carriage return. The markup around the values depends only on the root,
    the names and which values are ints, so it is built once per layout and cached; the values
    are then laid between its pieces by C code, with no Python step per field.
    """
    names = tuple(fields)
    layout = _LAYOUTS.get((root, names))
    laid = None if layout is None else _lay_out(layout, fields)
    if layout is None or laid is None:  # a layout not seen yet, or the value types changed
        layout = _layout(root, names, fields)
        laid = None if layout is None else _lay_out(layout, fields)
        if layout is None or laid is None:
            return None
    values, joined = laid
    if "]]>" in joined or "\r" in joined:
        return None
    parts = list(layout[0])
    parts[1::2] = values
    text = "".join(parts)
    # The markup holds only characters XML can carry, by construction: checking the values is enough.
    return text.encode() if _xml_chars_only(joined) else _checked_bytes(text, fields)


def _lay_out(layout: _Layout, fields: Mapping[str, str | int]) -> tuple[list[str], str] | None:
    """The values as text (ints where the layout has them) and joined, or ``None`` if the types differ.

    The join is also the type check: it refuses anything but a ``str`` (a ``str`` subclass gives
    its plain text, as ``str.__str__`` would). Its separator, a space, cannot be part of "]]>", so "]]>" in
    the joined text is "]]>" in one value.
    """
    values: list[object] = list(fields.values())
    for place in layout[1]:
        value = values[place]
        if type(value) is not int:
            return None
        values[place] = str(value)
    try:
        joined = " ".join(values)  # type: ignore[arg-type]  # checked right here
    except TypeError:
        return None
    return values, joined  # type: ignore[return-value]  # every value is a str: the join said so


def _layout(root: str, names: tuple[str, ...], fields: Mapping[str, str | int]) -> _Layout | None:
    """The markup around each value (values go at the odd places) and where the ints are."""
    for name in names:
        if name not in _VALID_NAMES:
            _check_name(name)
    template = [f"<{root}>"]
    int_places = []
    for place, (name, value) in enumerate(fields.items()):
        if isinstance(value, str):
            template[-1] += f"<{name}><![CDATA["
            template += ["", f"]]></{name}>"]
        elif type(value) is int:
            int_places.append(place)
            template[-1] += f"<{name}>"
            template += ["", f"</{name}>"]
        else:
            return None  # an int subclass (an enum member) or a value to refuse: the checked path
    template[-1] += f"</{root}>"
    layout = (tuple(template), tuple(int_places))
    if len(_LAYOUTS) >= _MAX_LAYOUTS:  # bounded: names may come from received messages
        _LAYOUTS.clear()
    _LAYOUTS[(root, names)] = layout
    return layout


def _checked_encode(fields: Mapping[str, str | int], root: str) -> str:
    """Any document: names and values checked one by one, "]]>" split, carriage returns escaped."""
    for name in fields:
        if name not in _VALID_NAMES:
            _check_name(name)
    text = "".join([_element(name, value) for name, value in fields.items()])
    text = f"<{root}>{text}</{root}>"
    if "\r" in text:
        # Only a value can hold a carriage return (names and ints cannot): every parser would read
        # it as "\n", so it is sent as a character reference instead.
        text = text.replace("\r", "]]>&#13;<![CDATA[")
    return text


def _element(name: str, value: object) -> str:
    """One field: a str in CDATA ("]]>" split), an int as text, anything else refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise XMLError(f"field {name!r} must be str or int, not {type(value).__name__}")
    if not isinstance(value, str):
        return f"<{name}>{int(value)}</{name}>"
    # "]]>" cannot appear inside CDATA: end the section between "]]" and ">".
    return f"<{name}><![CDATA[{str.__str__(value).replace(']]>', ']]]]><![CDATA[>')}]]></{name}>"


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
            if self.parts and "".join(self.parts).strip(_XML_WS):
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
        elif self.depth == 0 and self.parts and "".join(self.parts).strip(_XML_WS):
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


def _fast_decode(raw: bytes, text: str, root: str) -> dict[str, str] | None:
    """The common, simple document, or ``None`` to let expat decide (never an error here).

    ``split`` cuts the inner text into [gap, name, opener, value, gap, ...]: the document is in
    the fast subset exactly when every gap is white space (joined, the gaps strip to nothing).
    """
    envelope = _FAST_ENVELOPES[root].fullmatch(text)
    if envelope is None:
        return None
    parts = _FAST_FIELDS.split(envelope.group(1))
    if "".join(parts[0::4]).strip(_XML_WS):
        return None
    names = parts[1::4]
    fields = dict(zip(names, parts[3::4], strict=False))  # same length by construction
    if len(fields) != len(names):  # a duplicate: expat's path names it
        return None
    if raw.isascii():
        if raw.translate(None, _XML_ASCII):
            return None
    elif _INVALID_CHARS_RE.search(text):
        return None
    return fields


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
    raw = body if type(body) is bytes else bytes(body)
    if not raw or raw.isspace():
        raise XMLError("empty body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XMLError(f"body is not valid UTF-8 (byte {exc.start})") from None
    if root not in _ROOTS:
        raise XMLError(f"root must be one of {sorted(_ROOTS)}")
    fast = _fast_decode(raw, text, root)
    if fast is not None:
        return fast
    return _expat_decode(raw, root)


def _expat_decode(raw: bytes, root: str) -> dict[str, str]:
    """The full path: expat with every defence; refuses with a message naming what was wrong."""
    declared = _XML_DECL_ENCODING_RE.match(raw)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        raise XMLError(f"encoding {declared.group(1).decode('ascii')!r} is not allowed (UTF-8 only)")
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
