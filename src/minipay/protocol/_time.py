"""China time (UTC+08:00, no DST) for every WeChat time field (spec 16.3).

Formatting takes timezone-aware datetimes only; parsing returns aware datetimes in China time.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final

from minipay.protocol._errors import FieldError

__all__ = [
    "CHINA_TZ",
    "china_date",
    "format_wx_date",
    "format_wx_datetime",
    "format_wx_time",
    "from_unix",
    "parse_wx_date",
    "parse_wx_datetime",
    "parse_wx_time",
    "require_aware",
    "to_unix",
]

CHINA_TZ: Final = timezone(timedelta(hours=8), "CST")
_WX_DATETIME_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def require_aware(value: datetime, field: str = "time") -> datetime:
    """Refuse naive datetimes: WeChat times are China time, and a naive value has no zone to convert."""
    if not isinstance(value, datetime):
        raise FieldError(field, f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise FieldError(field, "naive datetime refused: pass a timezone-aware datetime")
    return value


def format_wx_time(value: datetime, field: str = "time") -> str:
    """``yyyyMMddHHmmss`` in China time (``time_start``, ``time_expire``, ``time_end``).

    >>> format_wx_time(datetime(2014, 11, 11, 0, 0, tzinfo=UTC))
    '20141111080000'
    """
    t = require_aware(value, field).astimezone(CHINA_TZ)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}"


def parse_wx_time(text: str, field: str = "time") -> datetime:
    """Parse ``yyyyMMddHHmmss`` (China time) into an aware datetime."""
    if len(text) != 14 or not text.isascii() or not text.isdigit():
        raise FieldError(field, f"expected yyyyMMddHHmmss, got {text!r}")
    try:
        # Slicing is ~4x faster than strptime on the notification hot path.
        return datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            tzinfo=CHINA_TZ,
        )
    except ValueError:
        raise FieldError(field, f"not a valid time: {text!r}") from None


def format_wx_date(value: date | datetime, field: str = "date") -> str:
    """``yyyyMMdd``; a datetime is converted to its China-time day first."""
    if isinstance(value, datetime):
        value = require_aware(value, field).astimezone(CHINA_TZ).date()
    return value.strftime("%Y%m%d")


def parse_wx_date(text: str, field: str = "date") -> date:
    """Parse ``yyyyMMdd``."""
    if not isinstance(text, str) or len(text) != 8 or not text.isascii() or not text.isdigit():
        raise FieldError(field, f"expected yyyyMMdd, got {text!r}")
    try:
        return date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise FieldError(field, f"not a valid date: {text!r}") from None


def format_wx_datetime(value: datetime, field: str = "time") -> str:
    """``yyyy-MM-dd HH:mm:ss`` in China time (refund ``success_time``, bill columns)."""
    return require_aware(value, field).astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def parse_wx_datetime(text: str, field: str = "time") -> datetime:
    """Parse ``yyyy-MM-dd HH:mm:ss`` (China time) into an aware datetime.

    Exactly that shape in ASCII digits: ``strptime`` alone would also take one-digit fields padded
    with extra spaces (``2024-01-1  01:00:00``).
    """
    if not isinstance(text, str) or not _WX_DATETIME_RE.fullmatch(text):
        raise FieldError(field, f"expected yyyy-MM-dd HH:mm:ss, got {text!r}")
    try:
        return datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            tzinfo=CHINA_TZ,
        )
    except ValueError:
        raise FieldError(field, f"expected yyyy-MM-dd HH:mm:ss, got {text!r}") from None


def china_date(value: datetime) -> date:
    """The China-time calendar day of an aware datetime (bill days, rate days)."""
    return require_aware(value).astimezone(CHINA_TZ).date()


def to_unix(value: datetime) -> int:
    """Unix seconds of an aware datetime (``timeStamp`` of ``wx.requestPayment``)."""
    return int(require_aware(value).timestamp())


def from_unix(seconds: int) -> datetime:
    """An aware UTC datetime from Unix seconds."""
    return datetime.fromtimestamp(seconds, tz=UTC)
