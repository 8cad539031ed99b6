"""Jinja2 environment of the console (autoescaping every template) and its formatting helpers."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


@functools.cache
def _environment() -> Any:
    """Built on first use: a service that never shows a page does not load Jinja2 at all."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["when"] = when
    return env


def render(name: str, **context: Any) -> str:
    return str(_environment().get_template(name).render(**context))
