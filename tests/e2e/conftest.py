"""Fixtures of the end-to-end tier: the whole system in one process (see ``stack.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, running_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}") as s:
        yield s
