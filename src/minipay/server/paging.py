"""Keyset paging of newest-first lists (payments in the API and in the console).

A page is ``limit`` rows ordered by ``(created_at, id)`` descending, after the anchor of the
previous page's last row; the cursor handed out is that row's id. One row more than ``limit`` is
read to know whether another page follows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

__all__ = ["Anchor", "Page", "anchor_of", "read_page"]

#: ``(created_at, id)`` of the last row of the previous page: the next page starts after it.
Anchor = tuple[datetime, str]


class Keyed(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


K = TypeVar("K", bound=Keyed)


def anchor_of(row: Keyed) -> Anchor:
    return (row.created_at, row.id)


@dataclass(frozen=True)
class Page(Generic[K]):
    rows: list[K]
    #: The id of the last row when another page follows (the next page's cursor), else None.
    next_cursor: str | None


async def read_page(fetch: Callable[[int], Awaitable[Sequence[K]]], limit: int) -> Page[K]:
    """``fetch(n)`` reads at most ``n`` rows after the anchor, newest first; the page is the first ``limit``."""
    rows = list(await fetch(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].id if more and rows else None)
