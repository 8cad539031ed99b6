"""Fixtures shared by every tier."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.browser"]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _logging_is_given_back() -> Iterator[None]:
    """Fail a test that leaves ``logging.disable(...)`` switched on, and switch it back.

    Left on, it silences every later test's logs, so their log assertions pass or fail by order.
    """
    before = logging.root.manager.disable
    yield
    after = logging.root.manager.disable
    if after != before:
        logging.disable(before)
        pytest.fail(
            f"the test left logging.disable({logging.getLevelName(after)}) on (it was "
            f"{logging.getLevelName(before)}): restore it in a finally block or a fixture",
            pytrace=False,
        )
