"""Real-browser fixtures: the system's Chromium, driven by Playwright, at desktop and phone width.

Pages are tested as a person uses them; ``screenshot`` writes what the browser shows to
``build/screenshots/`` (kept out of git) so a person can look at every page after a run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium for one test (skips without one, fails in CI).

    Not shared across tests: Playwright's sync API leaves its event loop marked as running in this
    thread until it stops, and every ``anyio`` test after it would then fail with "Cannot run the
    event loop while another loop is running"."""
    if CHROMIUM is None:
        if os.environ.get("CI") or os.environ.get("MINIPAY_REQUIRE_POSTGRES") == "1":
            pytest.fail("Chromium is required in CI (.ci/run installs it)")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (own cookies) at desktop width."""
    context = chromium.new_context(viewport=DESKTOP)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def phone_page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context at phone width, with touch."""
    context = chromium.new_context(viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=2)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save the whole page as ``build/screenshots/<name>-<width>.png`` and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
