"""Keyset paging: one row more than the page is read to know whether another page follows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from minipay.server.paging import anchor_of, read_page

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Row:
    id: str
    created_at: datetime


ROWS = [Row(f"pay_{i}", T0 - timedelta(seconds=i)) for i in range(5)]  # newest first


def reader(asked: list[int]) -> Callable[[int], Awaitable[list[Row]]]:
    async def fetch(n: int) -> list[Row]:
        asked.append(n)
        return ROWS[:n]

    return fetch


async def test_a_full_page_with_more_behind_it_names_its_last_row_as_the_cursor() -> None:
    asked: list[int] = []
    page = await read_page(reader(asked), 2)
    assert asked == [3]
    assert [r.id for r in page.rows] == ["pay_0", "pay_1"]
    assert page.next_cursor == "pay_1"


async def test_the_last_page_has_no_cursor() -> None:
    assert (await read_page(reader([]), 5)).next_cursor is None
    empty = await read_page(lambda n: _none(), 5)
    assert (empty.rows, empty.next_cursor) == ([], None)


async def _none() -> list[Row]:
    return []


async def test_the_anchor_is_created_at_then_id() -> None:
    assert anchor_of(ROWS[1]) == (T0 - timedelta(seconds=1), "pay_1")
