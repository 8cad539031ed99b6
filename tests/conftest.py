"""Fixtures shared by every tier."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.browser"]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio."""
    return "asyncio"
