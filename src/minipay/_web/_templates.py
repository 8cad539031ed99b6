"""Jinja2 environments of the web pages (every value escaped, no silent undefined) and the shared filters."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minipay.protocol import format_major

if TYPE_CHECKING:
    import jinja2

__all__ = ["money", "templates"]


def money(amount: int | None, currency: str | None) -> str:
    """``38.00 HKD`` from minor units; ``—`` for no amount; the minor units when the currency is unknown."""
    if amount is None or not currency:
        return "—"
    try:
        return f"{format_major(amount, currency)} {currency}"
    except Exception:
        return f"{amount} {currency} (minor units)"


@functools.cache
def templates(folder: Path, **filters: Callable[..., Any]) -> jinja2.Environment:
    """The environment over ``folder`` with the ``money`` filter and the page's own ``filters``.

    One per folder and filters (cached), built on first use: a process that never shows a page
    does not load Jinja2 at all.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters.update(filters)
    return env
