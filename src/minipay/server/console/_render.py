"""The console's pages: its templates in the shared Jinja2 setup (``minipay._web``), with its own time filter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minipay._web import templates

__all__ = ["render"]

_HERE = Path(__file__).parent


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


def render(name: str, **context: Any) -> str:
    return str(templates(_HERE / "templates", when=when).get_template(name).render(**context))
