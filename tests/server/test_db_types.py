"""How rows become values: SQLite's datetime text, a driver row's processed columns, JSON in and out."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite
from starlette.responses import JSONResponse

from minipay.server import db
from minipay.server._http import JSONBody
from minipay.server._json import dumps, dumps_text, loads
from minipay.server.repositories._driver import Compiled


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-12-07 06:18:20.123456", datetime(2026, 12, 7, 6, 18, 20, 123456, UTC)),  # what the service writes
        ("2026-12-07 06:18:20.000000", datetime(2026, 12, 7, 6, 18, 20, tzinfo=UTC)),
        ("2026-12-07 06:18:20", datetime(2026, 12, 7, 6, 18, 20, tzinfo=UTC)),  # CURRENT_TIMESTAMP's form
        ("2026-12-07T14:18:20+08:00", datetime(2026, 12, 7, 6, 18, 20, tzinfo=UTC)),  # text with an offset
        ("2026-12-07T06:18:20Z", datetime(2026, 12, 7, 6, 18, 20, tzinfo=UTC)),
        ("2026-12-07T01:18:20.5-05:00", datetime(2026, 12, 7, 6, 18, 20, 500000, UTC)),
        (datetime(2026, 12, 7, 6, 18, 20), datetime(2026, 12, 7, 6, 18, 20, tzinfo=UTC)),
        (None, None),
    ],
)
def test_sqlite_datetime_text_reads_back_as_an_aware_utc_datetime(stored: object, expected: datetime | None) -> None:
    process = db.UTCDateTime().result_processor(sqlite.dialect(), None)
    assert process is not None
    got = process(stored)
    assert got == expected
    if got is not None:
        assert got.tzinfo is UTC
        assert got.utcoffset() == timedelta(0)


def test_sqlite_datetime_text_that_is_no_datetime_is_an_error() -> None:
    process = db.UTCDateTime().result_processor(sqlite.dialect(), None)
    assert process is not None
    with pytest.raises(ValueError, match="Invalid isoformat"):
        process("not a time")


def test_a_driver_row_has_every_column_and_only_typed_ones_processed() -> None:
    compiled = Compiled("SELECT ...", (), (("id", None), ("status", str.upper), ("amount", None)))
    assert compiled.names == ("id", "status", "amount")
    assert [name for name, _ in compiled.processed] == ["status"]
    assert compiled.row(("pay_1", "pending", 1000)) == {"id": "pay_1", "status": "PENDING", "amount": 1000}
    with pytest.raises(ValueError, match="shorter"):
        compiled.row(("pay_1", "pending"))  # a row of another shape is never half-read


def test_the_api_json_is_the_bytes_starlette_would_send() -> None:
    view = {
        "id": "pay_1",
        "amount": 1000,
        "paid_after_close": False,
        "transaction_id": None,
        "metadata": {"ünï": "cödé 中文", "ctl": '\x00\x01\x1f\n\t\b\f\r"\\ \u2028 \x7f'},
        "pay_params": {"timeStamp": "1490840662", "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"},
        "list": [1, -2, 2**62, "x"],
    }
    assert dumps(view) == JSONResponse(view).body
    assert JSONBody(view, status_code=201).body == JSONResponse(view, status_code=201).body
    assert JSONBody(view).headers["content-type"] == "application/json"


def test_json_columns_read_what_the_standard_library_wrote() -> None:
    assert loads('{"order": "A-1", "ünï": "cödé"}') == {"order": "A-1", "ünï": "cödé"}
    assert loads(b"{}") == {}
    # What orjson refuses and json.dumps writes: read back as before.
    assert loads('{"n": 1180591620717411303424}') == {"n": 2**70}
    assert math.isnan(loads('{"x": NaN}')["x"])
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")


@dataclass
class Refused:
    name: str


def test_json_columns_are_written_compact_by_orjson_and_as_before_where_it_refuses() -> None:
    value = {"metadata": {"ünï": "cödé 中文", "ctl": '\x00\n"\\'}, "list": [1, None, True, 2**62]}
    text = dumps_text(value)
    assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert loads(text) == value
    # What orjson refuses, json.dumps writes as it always did.
    assert dumps_text({"n": 2**70}) == json.dumps({"n": 2**70})
    assert dumps_text({1: "x"}) == '{"1": "x"}'
    # Not JSON (a PostgreSQL json column refuses NaN): null.
    assert dumps_text({"x": math.nan}) == '{"x":null}'
    # What json.dumps refused and orjson would write: refused still.
    for refused in (datetime.now(UTC), Refused("x")):
        with pytest.raises(TypeError):
            dumps_text({"at": refused})


@pytest.mark.parametrize(
    "url", ["sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///unused.db", "postgresql+asyncpg://u@127.0.0.1/unused"]
)
def test_every_engine_writes_json_columns_with_it(url: str) -> None:
    engine = db.create_engine(url)  # connects to nothing yet
    engines = [engine, getattr(engine, "reader", engine)]
    for each in engines:
        assert each.dialect._json_serializer is dumps_text  # type: ignore[attr-defined]
        assert each.dialect._json_deserializer is loads  # type: ignore[attr-defined]


def test_datetimes_compare_across_offsets() -> None:
    # The parse gives UTC itself, so a read value equals one made in another offset.
    process = db.UTCDateTime().result_processor(sqlite.dialect(), None)
    assert process is not None
    assert process("2026-12-07 06:18:20.000001") == datetime(2026, 12, 7, 14, 18, 20, 1, timezone(timedelta(hours=8)))
