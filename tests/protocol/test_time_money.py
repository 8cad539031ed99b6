"""China time (UTC+8, no DST) and money in int minor units."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minipay.protocol import (
    CHINA_TZ,
    DEFAULT_CURRENCIES,
    FieldError,
    cash_fee_cny,
    cash_refund_fee,
    china_date,
    format_major,
    format_wx_date,
    format_wx_datetime,
    format_wx_time,
    from_unix,
    parse_major,
    parse_wx_date,
    parse_wx_datetime,
    parse_wx_time,
    to_unix,
)


def test_london_midnight_is_eight_in_the_morning_in_china() -> None:
    # The domestic parameter page's own example (spec 16.3).
    assert format_wx_time(datetime(2014, 11, 11, 0, 0, tzinfo=UTC)) == "20141111080000"


def test_new_york_evening_is_the_next_day_in_china() -> None:
    new_york = timezone(timedelta(hours=-5))
    moment = datetime(2024, 1, 1, 20, 30, tzinfo=new_york)
    assert format_wx_time(moment) == "20240102093000"
    assert format_wx_date(moment) == "20240102"
    assert china_date(moment) == date(2024, 1, 2)
    assert format_wx_datetime(moment) == "2024-01-02 09:30:00"


def test_naive_datetimes_are_refused_everywhere() -> None:
    naive = datetime(2024, 1, 1, 12, 0)
    for formatter in (format_wx_time, format_wx_datetime, format_wx_date, china_date, to_unix):
        with pytest.raises(FieldError, match="naive"):
            formatter(naive)


def test_parsed_times_are_aware_china_time() -> None:
    parsed = parse_wx_time("20240101120510")
    assert parsed == datetime(2024, 1, 1, 4, 5, 10, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=8)
    assert parse_wx_datetime("2024-01-02 10:00:00") == datetime(2024, 1, 2, 2, 0, tzinfo=UTC)
    assert parse_wx_date("20240101") == date(2024, 1, 1)


@pytest.mark.parametrize("text", ["2024010112051", "2024-01-01 12:05", "20241301120510", "2024010112056x", ""])
def test_malformed_wx_times_are_refused(text: str) -> None:
    with pytest.raises(FieldError):
        parse_wx_time(text)


@pytest.mark.parametrize("text", ["20240101120510", "2024-01-01", "2024-02-30 10:00:00", ""])
def test_malformed_wx_datetimes_are_refused(text: str) -> None:
    with pytest.raises(FieldError):
        parse_wx_datetime(text)


@settings(deadline=None)  # a loaded CI box must not turn slowness into flakiness
@given(
    moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)).map(
        lambda d: d.replace(microsecond=0)
    )
)
def test_wx_time_round_trips(moment: datetime) -> None:
    assert parse_wx_time(format_wx_time(moment)) == moment
    assert parse_wx_datetime(format_wx_datetime(moment)) == moment


def test_pay_params_timestamp_is_unix_seconds() -> None:
    moment = datetime(2024, 1, 1, 8, 0, tzinfo=CHINA_TZ)
    assert to_unix(moment) == 1704067200
    assert from_unix(1704067200) == moment


def test_china_has_no_daylight_saving() -> None:
    summer = datetime(2024, 7, 1, 0, 0, tzinfo=UTC)
    winter = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert format_wx_time(summer).endswith("080000")
    assert format_wx_time(winter).endswith("080000")


# --- money --------------------------------------------------------------------------------------


def test_major_units_format_per_currency_exponent() -> None:
    assert format_major(1050, "HKD") == "10.50"
    assert format_major(1750, "USD") == "17.50"
    assert format_major(100, "JPY") == "100"
    assert format_major(5, "CNY") == "0.05"
    assert format_major(-5, "USD") == "-0.05"


def test_parse_major_never_goes_through_floats() -> None:
    assert parse_major("0.29", "USD") == 29  # float(0.29) * 100 == 28.999999999999996
    assert parse_major("10.5", "HKD") == 1050
    assert parse_major("100", "JPY") == 100
    assert parse_major("1234567890123.45", "USD") == 123456789012345


@pytest.mark.parametrize(("text", "currency"), [("10.505", "HKD"), ("1.5", "JPY"), ("abc", "USD"), ("NaN", "USD")])
def test_parse_major_refuses_bad_amounts(text: str, currency: str) -> None:
    with pytest.raises(FieldError):
        parse_major(text, currency)


@settings(deadline=None)
@given(amount=st.integers(min_value=-(10**15), max_value=10**15), currency=st.sampled_from(["HKD", "JPY", "USD"]))
def test_major_units_round_trip(amount: int, currency: str) -> None:
    assert parse_major(format_major(amount, currency), currency) == amount


def test_float_amounts_are_refused() -> None:
    with pytest.raises(FieldError):
        format_major(10.5, "HKD")  # type: ignore[arg-type]


def test_unknown_or_lower_case_currency_is_refused() -> None:
    with pytest.raises(FieldError, match="upper case"):
        DEFAULT_CURRENCIES.check("hkd")
    with pytest.raises(FieldError, match="unknown"):
        DEFAULT_CURRENCIES.check("XXX")


def test_currency_exponents_are_configurable() -> None:
    table = DEFAULT_CURRENCIES.with_overrides({"IDR": 0})
    assert table.exponent("IDR") == 0
    assert DEFAULT_CURRENCIES.exponent("IDR") == 2
    assert format_major(1000, "IDR", table) == "1000"


def test_cash_fee_examples_of_the_spec() -> None:
    assert cash_fee_cny(1000, "HKD", 92_000_000) == 920
    assert cash_fee_cny(1000, "JPY", 4_800_000) == 4800
    assert cash_fee_cny(777, "CNY", 1) == 777


def test_cash_fee_rounds_half_up() -> None:
    assert cash_fee_cny(1, "HKD", 50_000_000) == 1  # 0.5 fen -> 1
    assert cash_fee_cny(1, "HKD", 49_999_999) == 0


def test_cash_refund_fee_is_proportional() -> None:
    assert cash_refund_fee(920, 500, 1000) == 460
    assert cash_refund_fee(921, 500, 1000) == 461  # 460.5 rounds half up


@pytest.mark.parametrize(
    "text",
    ["2024-01-1  01:00:00", "2024-1-01  1:00:00", "\u0662\u0660\u0662\u0664-01-01 10:00:00", "2024-01-01\t10:00:00"],
)
def test_wx_datetimes_must_have_the_exact_shape(text: str) -> None:
    with pytest.raises(FieldError):
        parse_wx_datetime(text)


def test_wx_dates_must_be_ascii_digits() -> None:
    with pytest.raises(FieldError):
        parse_wx_date("\u0662\u0660\u0662\u0664\u0660\u0661\u0660\u0661")
    with pytest.raises(FieldError):
        parse_wx_date("20240230")


@pytest.mark.parametrize(
    "text", ["1e2", "1_000", "+5", ".5", "5.", "\u0661\u0660", "1e999999999", "1E+400000", "Infinity", "-", ""]
)
def test_parse_major_takes_only_a_plain_decimal(text: str) -> None:
    # Each of these is a valid Decimal (or close): money from a bill must be plain digits, and a
    # huge exponent must be refused, not overflow or build a million-digit int.
    with pytest.raises(FieldError):
        parse_major(text, "HKD")
