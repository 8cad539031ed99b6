"""The hardened flat-XML codec: round trips, and a corpus of hostile documents, each refused."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator
from enum import IntEnum, StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipay.protocol import DEFAULT_MAX_BYTES, MinipayError, XMLError, decode_xml, encode_xml

_XML_CHAR = st.characters(
    codec="utf-8",
    exclude_categories=("Cs",),
    exclude_characters="".join(chr(c) for c in range(0x20) if c not in (0x9, 0xA, 0xD)) + "\ufffe\uffff",
)
_VALUES = st.text(alphabet=_XML_CHAR, max_size=50) | st.sampled_from(
    ["]]>", "]]>]]>", "&", "<", ">", "", "&amp;", "<![CDATA[x]]>", "\r\n", "\r", " lead", "trail ", "\t"]
)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,20}", fullmatch=True).filter(
    lambda n: not n.lower().startswith("xml")
)


@settings(deadline=None)  # a loaded CI box must not turn slowness into flakiness
@given(fields=st.dictionaries(_NAMES, _VALUES, max_size=15))
def test_encode_then_decode_round_trips_any_xml_text(fields: dict[str, str]) -> None:
    assert decode_xml(encode_xml(fields), max_bytes=1 << 20) == fields


@settings(deadline=None)
@given(value=_VALUES)
def test_the_root_root_document_round_trips(value: str) -> None:
    assert decode_xml(encode_xml({"a": value}, root="root"), root="root", max_bytes=1 << 20) == {"a": value}


@settings(deadline=None)
@given(number=st.integers(min_value=0, max_value=10**18))
def test_ints_are_encoded_as_plain_text(number: int) -> None:
    assert encode_xml({"total_fee": number}) == f"<xml><total_fee>{number}</total_fee></xml>".encode()
    assert decode_xml(encode_xml({"total_fee": number})) == {"total_fee": str(number)}


_FORBIDDEN = [chr(c) for c in (0x0, 0x1, 0x8, 0xB, 0xC, 0x1F, 0xD800, 0xDFFF, 0xFFFE, 0xFFFF)]


@pytest.mark.parametrize("char", _FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in _FORBIDDEN])
def test_encode_refuses_characters_xml_cannot_carry(char: str) -> None:
    with pytest.raises(XMLError, match="cannot carry"):
        encode_xml({"body": f"a{char}b"})


@settings(deadline=None)
@given(before=st.text(), bad=st.sampled_from(_FORBIDDEN), after=st.text())
def test_encode_refuses_any_text_with_a_forbidden_character(before: str, bad: str, after: str) -> None:
    with pytest.raises(XMLError):
        encode_xml({"body": before + bad + after})


@pytest.mark.parametrize("name", ["1abc", "a b", "a<b", "xmlfoo", "XMLx", "", "a&b", "é"])
def test_encode_refuses_bad_field_names(name: str) -> None:
    with pytest.raises(XMLError, match="field name"):
        encode_xml({name: "v"})


def test_encode_refuses_non_text_values() -> None:
    with pytest.raises(XMLError):
        encode_xml({"a": 1.5})  # type: ignore[dict-item]
    with pytest.raises(XMLError):
        encode_xml({"a": True})


def test_decode_accepts_cdata_and_plain_text_mixed() -> None:
    body = b"<xml><a><![CDATA[x&y]]></a><b>2</b><c>a &amp; b</c><d/><e></e><f><![CDATA[]]></f></xml>"
    assert decode_xml(body) == {"a": "x&y", "b": "2", "c": "a & b", "d": "", "e": "", "f": ""}


def test_decode_accepts_an_xml_declaration_in_utf8_and_white_space() -> None:
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n<xml>\n  <a>1</a>\n</xml>\n'
    assert decode_xml(body) == {"a": "1"}


def test_decode_keeps_surrounding_white_space_of_values() -> None:
    assert decode_xml(b"<xml><a>  x  </a></xml>") == {"a": "  x  "}


# --- the hostile corpus -----------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener: any outbound fetch by the parser would connect here."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def _no_connection(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def _hostile(port: int) -> dict[str, bytes]:
    url = f"http://127.0.0.1:{port}"
    laughs = b'<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    )
    quadratic_entity = b"A" * 50_000
    return {
        "xxe_local_file": b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<xml><a>&xxe;</a></xml>",
        "xxe_http_url": b'<!DOCTYPE xml [<!ENTITY xxe SYSTEM "' + url.encode() + b'/x">]><xml><a>&xxe;</a></xml>',
        "billion_laughs": b"<!DOCTYPE xml [" + laughs + b"]><xml><a>&lol9;</a></xml>",
        "quadratic_blowup": b'<!DOCTYPE xml [<!ENTITY a "'
        + quadratic_entity
        + b'">]><xml><b>'
        + b"&a;" * 3000
        + b"</b></xml>",
        "external_dtd": b'<!DOCTYPE xml SYSTEM "' + url.encode() + b'/evil.dtd"><xml><a>1</a></xml>',
        "parameter_entity": b'<!DOCTYPE xml [<!ENTITY % pe SYSTEM "' + url.encode() + b'/pe.dtd"> %pe;]>'
        b"<xml><a>1</a></xml>",
        "internal_entity": b'<!DOCTYPE xml [<!ENTITY name "value">]><xml><a>&name;</a></xml>',
        "undefined_entity": b"<xml><a>&undefined;</a></xml>",
        "ten_megabytes": b"<xml><a>" + b"A" * (10 * 1024 * 1024) + b"</a></xml>",
        "invalid_utf8": b"<xml><a>\xff\xfe\xc3\x28</a></xml>",
        "overlong_utf8": b"<xml><a>\xc0\xbc</a></xml>",
        "declared_latin1": b'<?xml version="1.0" encoding="ISO-8859-1"?><xml><a>caf\xe9</a></xml>',
        "declared_latin1_ascii_body": b'<?xml version="1.0" encoding="ISO-8859-1"?><xml><a>1</a></xml>',
        "utf16": '<?xml version="1.0" encoding="UTF-16"?><xml><a>1</a></xml>'.encode("utf-16"),
        "nested": b"<xml><a><b>1</b></a></xml>",
        "deep_nesting": b"<xml>" + b"<a>" * 9_000 + b"</a>" * 9_000 + b"</xml>",  # just under the cap
        "unclosed_fields_under_the_cap": b"<xml>" + b"<a>" * 21_000 + b"</xml>",
        "endless_cdata_under_the_cap": b"<xml><a><![CDATA[" + b"]" * 60_000 + b"</a></xml>",
        "endless_white_space_under_the_cap": b"<xml>" + b" " * 60_000,
        "many_near_fields_under_the_cap": b"<xml>" + b"<a>x</b>" * 8_000 + b"</xml>",
        "attribute_on_field": b'<xml><a x="1">v</a></xml>',
        "attribute_on_root": b'<xml version="2"><a>v</a></xml>',
        "namespace_attribute": b'<xml xmlns:x="urn:x"><a>v</a></xml>',
        "duplicate_field": b"<xml><a>1</a><a>2</a></xml>",
        "processing_instruction": b"<xml><?php system('id'); ?><a>1</a></xml>",
        "stylesheet_pi": b'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1/x.xsl"?><xml><a>1</a></xml>',
        "wrong_root": b"<root><a>1</a></root>",
        "upper_case_root": b"<XML><a>1</a></XML>",
        "two_roots": b"<xml><a>1</a></xml><xml><b>2</b></xml>",
        "text_outside_fields": b"<xml>junk<a>1</a></xml>",
        "text_after_fields": b"<xml><a>1</a>junk</xml>",
        "unclosed": b"<xml><a>1</a>",
        "not_xml": b"return_code=SUCCESS",
        "empty": b"",
        "white_space_only": b"   \n ",
        "json": b'{"return_code": "SUCCESS"}',
    }


_CASES = sorted(_hostile(1))


@pytest.mark.parametrize("case", _CASES)
def test_hostile_document_is_refused_in_bounded_time_and_memory(case: str, listener: socket.socket) -> None:
    body = _hostile(listener.getsockname()[1])[case]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(XMLError) as info:
            decode_xml(body)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, MinipayError)
    assert str(info.value)  # the error names what was wrong
    assert elapsed < 1.0, f"{case} took {elapsed:.2f}s"
    assert peak < 8 * 1024 * 1024, f"{case} peaked at {peak} bytes"
    assert _no_connection(listener), f"{case} made an outbound connection"


@pytest.mark.parametrize("case", ["billion_laughs", "quadratic_blowup", "xxe_local_file", "parameter_entity"])
def test_entity_attacks_are_refused_even_under_a_large_size_cap(case: str, listener: socket.socket) -> None:
    body = _hostile(listener.getsockname()[1])[case]
    with pytest.raises(XMLError, match="DOCTYPE"):
        decode_xml(body, max_bytes=64 * 1024 * 1024)
    assert _no_connection(listener)


def _padded(before: bytes, after: bytes, pad: bytes = b" ") -> bytes:
    """A document filled up to the size cap with white space between ``before`` and ``after``."""
    return before + pad * (DEFAULT_MAX_BYTES - len(before) - len(after)) + after


_CRLF_PAD = (DEFAULT_MAX_BYTES - len(b"<xml><a></a></xml>")) // 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_padded(b"<xml><a>1</a>", b"</xml>"), {"a": "1"}),
        (_padded(b"<xml>", b"<a>1</a></xml>", b"\n"), {"a": "1"}),
        (b"<xml><a>" + b"\r\n" * _CRLF_PAD + b"</a></xml>", {"a": "\n" * _CRLF_PAD}),
        (_padded(b"<xml>", b"x</xml>"), None),
        (_padded(b"<xml>", b"<a>1</b></xml>"), None),
        (_padded(b"<xml><a>1</a>", b"<a>2</a></xml>", b"\t"), None),
    ],
    ids=["padding-accepted", "newlines-accepted", "crlf-value", "junk", "mismatched", "duplicate"],
)
def test_white_space_padding_up_to_the_cap_is_decoded_in_bounded_time(
    body: bytes, expected: dict[str, str] | None
) -> None:
    # The fast path once rescanned every run of white space from each of its positions: a 64 KiB
    # body of padding took seconds (quadratic), a cheap denial of service on the notify endpoint.
    assert len(body) <= DEFAULT_MAX_BYTES
    started = time.perf_counter()
    if expected is None:
        with pytest.raises(XMLError):
            decode_xml(body)
    else:
        assert decode_xml(body) == expected
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_the_size_cap_is_checked_before_parsing() -> None:
    body = b"<xml><a>" + b"A" * DEFAULT_MAX_BYTES + b"</a></xml>"
    with pytest.raises(XMLError, match="too large"):
        decode_xml(body)
    assert decode_xml(body, max_bytes=len(body)) == {"a": "A" * DEFAULT_MAX_BYTES}


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("xxe_local_file", "DOCTYPE"),
        ("nested", "nested"),
        ("duplicate_field", "duplicate"),
        ("attribute_on_field", "attributes"),
        ("processing_instruction", "processing instruction"),
        ("wrong_root", "root element"),
        ("invalid_utf8", "UTF-8"),
        ("declared_latin1_ascii_body", "UTF-8 only"),
        ("ten_megabytes", "too large"),
        ("empty", "empty"),
    ],
)
def test_refusals_name_what_was_wrong(case: str, words: str) -> None:
    with pytest.raises(XMLError, match=words):
        decode_xml(_hostile(1)[case])


def test_decode_refuses_text_instead_of_bytes() -> None:
    with pytest.raises(XMLError, match="bytes"):
        decode_xml("<xml></xml>")  # type: ignore[arg-type]


# --- the fast path agrees with expat -----------------------------------------------------------------


def _assert_both_paths_agree(document: bytes, root: str) -> None:
    """The fast path answers only where expat accepts, with expat's result; decode_xml follows expat."""
    from minipay.protocol import _xml

    fast = _xml._fast_decode(document, document.decode("utf-8"), root)
    try:
        slow = _xml._expat_decode(document, root)
    except XMLError:
        assert fast is None, f"fast path accepted what expat refuses: {document!r}"
        with pytest.raises(XMLError):
            decode_xml(document, root=root)
        return
    assert fast is None or fast == slow, document
    assert decode_xml(document, root=root) == slow


_PIECES = st.sampled_from(
    [
        "a",
        "1",
        " ",
        "\n",
        "\r",
        "\t",
        "&",
        "&amp;",
        "<",
        ">",
        "]",
        "]]>",
        "<![CDATA[",
        "]]",
        "é",
        "中",
        "\x01",
        "\ufffe",
    ]
)
_RAW_VALUES = st.lists(_PIECES | st.text(alphabet=_XML_CHAR, max_size=5), max_size=6).map("".join)
_RAW_NAMES = st.sampled_from(["a", "b", "total_fee", "x.y", "A-1", "_n", "xmlish", "a b", "1a"])


@st.composite
def _documents(draw: st.DrawFn) -> bytes:
    root = draw(st.sampled_from(["xml", "root"]))
    parts = [draw(st.sampled_from(["", " ", "\n  ", '<?xml version="1.0" encoding="UTF-8"?>']))]
    parts.append(f"<{root}>")
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        name = draw(_RAW_NAMES)
        value = draw(_RAW_VALUES)
        parts.append(draw(st.sampled_from(["", " ", "\n  ", "\r\n", "x"])))
        if draw(st.booleans()):
            parts.append(f"<{name}><![CDATA[{value}]]></{name}>")
        else:
            parts.append(f"<{name}>{value}</{name}>")
    parts.append(draw(st.sampled_from(["", "\n", " "])))
    parts.append(f"</{root}>")
    parts.append(draw(st.sampled_from(["", "\n", "<!-- c -->", "</xml>"])))
    return "".join(parts).encode("utf-8", "surrogatepass")


@settings(deadline=None)
@given(document=_documents())
def test_fast_path_only_accepts_what_expat_accepts_with_the_same_result(document: bytes) -> None:
    _assert_both_paths_agree(document, "root" if b"<root>" in document else "xml")


@settings(deadline=None)
@given(fields=st.dictionaries(_NAMES, _VALUES, max_size=10))
def test_both_paths_decode_every_encoded_document_alike(fields: dict[str, str]) -> None:
    from minipay.protocol import _xml

    body = encode_xml(fields)
    assert _xml._expat_decode(body, "xml") == fields
    fast = _xml._fast_decode(body, body.decode(), "xml")
    assert fast is None or fast == fields


# Tokens that sit on the edges of the fast path's grammar: tags that almost match, CDATA pieces,
# references, comments, PIs, a DOCTYPE, a BOM, CR, forbidden and exotic characters.
_TOKENS = st.sampled_from(
    [
        "<xml>", "</xml>", "<root>", "</root>", "<a>", "</a>", "<b>", "</b>", "<A>", "</A>", "<a/>", "<a >",
        "</a >", "<a\n>", "<a x=\"1\">", "<xmlx>", "</xmlx>", "<a:b>", "</a:b>", "<![CDATA[", "]]>", "]]", "]",
        "]]]>", "<", ">", "&", "&amp;", "&#13;", "&#x0;", "&#65;", "&lt;", "\r", "\n", "\r\n", " ", "\t", "x",
        "é", "中", "\U0001f600", "\x01", "\x7f", "\x85", "\u2028", "\ufffe", "\ufeff", "<!-- c -->", "--",
        "<?pi x?>", "<!DOCTYPE xml>", '<?xml version="1.0"?>', "=", '"', "'", "<!",
    ]
)  # fmt: skip


_SAFE_PIECES = st.text(alphabet="ab1 .-_>'\"\n\r\t\u00e9\u4e2d", min_size=1, max_size=4)


@st.composite
def _near_documents(draw: st.DrawFn) -> bytes:
    """Mostly flat documents with an edge token here and there; sometimes token soup."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return "".join(draw(st.lists(_TOKENS, max_size=14))).encode("utf-8")
    root = draw(st.sampled_from(["xml", "root"]))
    out = [draw(st.sampled_from(["", "", "", " ", "\r\n", "\ufeff", "<!-- c -->"])), f"<{root}>"]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        name = draw(st.sampled_from(["a", "b", "A", "_x", "a", "b", "xml", "root"]))
        value = "".join(draw(st.lists(_SAFE_PIECES | _SAFE_PIECES | _SAFE_PIECES | _TOKENS, max_size=3)))
        out.append(draw(st.sampled_from(["", "", "", "", " ", "\n", "\r\n", "\t", "x", "&#32;"])))
        if draw(st.booleans()):
            out.append(f"<{name}><![CDATA[{value}]]></{name}>")
        else:
            out.append(f"<{name}>{value}</{name}>")
    out.append(draw(st.sampled_from(["", "", "", " ", "\r", "\f"])))
    out.append(f"</{root}>")
    out.append(draw(st.sampled_from(["", "", "", "\n", " x", "<!-- c -->", f"</{root}>", f"<{root}/>"])))
    return "".join(out).encode("utf-8")


@settings(deadline=None, max_examples=500)
@given(document=_near_documents(), root=st.sampled_from(["xml", "root"]))
def test_fast_path_never_accepts_what_expat_refuses_on_near_miss_documents(document: bytes, root: str) -> None:
    _assert_both_paths_agree(document, root)


# Each of these once looked like an easy place for a fast path to differ from expat.
_EDGE_DOCUMENTS = [
    b"<xml><a>x\ry</a></xml>",  # expat turns a lone CR into LF
    b"<xml><a>x\r\ny</a></xml>",  # and CRLF into LF
    b"<xml><a><![CDATA[x\ry]]></a></xml>",  # inside CDATA too
    b"<xml><a>x&#13;y</a></xml>",  # only a reference keeps a CR
    b"<xml><a>x]]>y</a></xml>",  # "]]>" is not allowed in text
    b"<xml><a>x]y</a></xml>",
    b"<xml><a>x>y</a></xml>",
    b"<xml><a>\xef\xbf\xbe</a></xml>",  # U+FFFE is not an XML character
    b"<xml><a>\x7f\xc2\x85</a></xml>",  # DEL and NEL are
    b"\xef\xbb\xbf<xml><a>1</a></xml>",  # a BOM
    b"<xml><a>1</a><a>2</a></xml>",
    b"<xml><a>1</a ></xml>",
    b"<xml><a>1</A></xml>",
    b"<xml><xml>1</xml></xml>",
    b"<xml><a>1</a></xml><xml></xml>",
    b"<xml><a>1</a>\f</xml>",
    b"\f<xml><a>1</a></xml>",
    b"<xml><a>x\x01y</a></xml>",  # an ASCII document with a C0 control
    b"<xml><a>x</a><b>\x00</b></xml>",
    b"<xml><a><![CDATA[\x1f]]></a></xml>",
    b"<xml><a>1</a>\xc2\xa0<b>2</b></xml>",  # NBSP is not XML white space
    b"<xml> <a>1</a> x <b>2</b> </xml>",
    b"<xml>\r\n<a>1</a>\r\n<b>2</b>\r\n</xml>",
]


@pytest.mark.parametrize("document", _EDGE_DOCUMENTS)
def test_fast_path_agrees_with_expat_on_edge_documents(document: bytes) -> None:
    _assert_both_paths_agree(document, "xml")


_PLAIN_VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="]<&\ufffe\uffff"),
    max_size=30,
)


@settings(deadline=None)
@given(
    fields=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True), _PLAIN_VALUES, max_size=12),
    root=st.sampled_from(["xml", "root"]),
)
def test_plain_documents_take_the_fast_path(fields: dict[str, str], root: str) -> None:
    # The differential tests above would pass if the fast path never answered; this one pins that
    # what WeChat sends (CDATA or plain text, simple names) is decoded by it.
    from minipay.protocol import _xml

    fields = {name: value for name, value in fields.items() if not name.startswith("xml")}
    body = encode_xml(fields, root=root)
    assert _xml._fast_decode(body, body.decode(), root) == fields
    plain = "".join(f"<{k}>{val}</{k}>" for k, val in fields.items())
    document = f"\n<{root}>\n  {plain}\n</{root}>\n".encode()
    assert _xml._fast_decode(document, document.decode(), root) is not None


# encode_xml caches the markup of each (root, names, int places) layout and lays the values into it;
# the tests below hold it to the per-field rules (the reference encoder here is spec 2.2 written
# out plainly) for hostile text, for the same names with other value types, and to its bound.

_HOSTILE = st.sampled_from(
    ["]]>", "]]", "]", ">", "a]]>b", "]]]]>>", "x]]", "<![CDATA[x]]>", "]]><evil/><![CDATA[", "\r", "\r\n", "a\rb",
     "\t", "\n", "&amp;", "<", "é", "中文", "😀", "\u2028", "\u00a0", ""]
)  # fmt: skip
_ANY_XML_TEXT = st.lists(st.text(alphabet=_XML_CHAR, max_size=12) | _HOSTILE, max_size=4).map("".join)
_FIELD_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).filter(
    lambda n: not n.lower().startswith("xml")
)


def _reference_encoding(fields: dict[str, str | int], root: str = "xml") -> bytes:
    def element(name: str, value: str | int) -> str:
        if isinstance(value, int):
            return f"<{name}>{value}</{name}>"
        body = value.replace("]]>", "]]]]><![CDATA[>").replace("\r", "]]>&#13;<![CDATA[")
        return f"<{name}><![CDATA[{body}]]></{name}>"

    return f"<{root}>{''.join(element(n, val) for n, val in fields.items())}</{root}>".encode()


@settings(deadline=None)
@given(
    fields=st.dictionaries(_FIELD_NAMES, _ANY_XML_TEXT | st.integers(min_value=0, max_value=10**12), max_size=12),
    root=st.sampled_from(["xml", "root"]),
)
def test_hostile_text_and_ints_encode_as_the_spec_says_and_round_trip(fields: dict[str, str | int], root: str) -> None:
    first, again = encode_xml(fields, root=root), encode_xml(fields, root=root)  # the second from the cached layout
    assert first == again == _reference_encoding(fields, root)
    assert decode_xml(first, root=root, max_bytes=1 << 20) == {n: str(val) for n, val in fields.items()}


@settings(deadline=None)
@given(text=_ANY_XML_TEXT, bad=st.sampled_from(_FORBIDDEN))
def test_a_forbidden_character_is_refused_by_name_also_in_a_known_layout(text: str, bad: str) -> None:
    encode_xml({"body": "ok", "detail": "ok"})  # the layout is known now
    with pytest.raises(XMLError, match=r"'detail' contains a character XML 1\.0 cannot carry"):
        encode_xml({"body": text, "detail": text + bad})


class _Kind(IntEnum):
    TWO = 2


class _Word(StrEnum):
    WORD = "plain"

    def __str__(self) -> str:  # what str() and format() would say: never what is sent
        return "_Word.WORD"


def test_the_same_names_with_other_value_types_encode_right_each_time() -> None:
    assert encode_xml({"a": "x", "b": 1}) == b"<xml><a><![CDATA[x]]></a><b>1</b></xml>"
    assert encode_xml({"a": 1, "b": "y"}) == b"<xml><a>1</a><b><![CDATA[y]]></b></xml>"
    assert encode_xml({"a": "x", "b": "1"}) == b"<xml><a><![CDATA[x]]></a><b><![CDATA[1]]></b></xml>"
    assert encode_xml({"a": "x", "b": _Kind.TWO}) == b"<xml><a><![CDATA[x]]></a><b>2</b></xml>"
    assert encode_xml({"a": _Word.WORD, "b": 1}) == b"<xml><a><![CDATA[plain]]></a><b>1</b></xml>"
    assert encode_xml({"a": "]]>", "b": 1}) == b"<xml><a><![CDATA[]]]]><![CDATA[>]]></a><b>1</b></xml>"
    for bad in (True, None, 1.5, b"x"):
        with pytest.raises(XMLError, match="'b' must be str or int"):
            encode_xml({"a": "x", "b": bad})  # type: ignore[dict-item]
    assert encode_xml({"a": "x", "b": 1}) == b"<xml><a><![CDATA[x]]></a><b>1</b></xml>"


def test_the_cache_of_layouts_stays_bounded() -> None:
    from minipay.protocol import _xml

    for i in range(_xml._MAX_LAYOUTS + 50):
        assert encode_xml({f"f{i}": "v", "g": i}) == f"<xml><f{i}><![CDATA[v]]></f{i}><g>{i}</g></xml>".encode()
    assert len(_xml._LAYOUTS) <= _xml._MAX_LAYOUTS
