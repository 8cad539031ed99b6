"""Jinja2 environment of the console (autoescaping every template) and its formatting helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from minipay.protocol import format_major

__all__ = ["STYLESHEET", "render"]

_HERE = Path(__file__).parent
#: The one stylesheet shared by the console, the simulator and the sandbox dashboard.
STYLESHEET = _HERE.parent.parent / "_web" / "minipay.css"


def money(amount: int | None, currency: str | None) -> str:
    if amount is None or currency is None:
        return "—"
    try:
        return f"{format_major(amount, currency)} {currency}"
    except Exception:
        return f"{amount} {currency} (minor units)"


def when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["money"] = money
_ENV.filters["when"] = when


def render(name: str, **context: Any) -> str:
    return _ENV.get_template(name).render(**context)
