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


#: Every visible form field without a label, and every visible text whose contrast with the
#: background behind it is under WCAG AA (4.5:1; 3:1 for large text), as "what: where" lines.
_A11Y_SCRIPT = """
() => {
  const problems = [];
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const where = (el) => (el.id ? "#" + el.id : el.tagName.toLowerCase())
    + " '" + (el.textContent || el.name || "").trim().slice(0, 40) + "'";
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    if (!visible(el)) continue;
    if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
      problems.push("field without a label: " + where(el));
  }
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !visible(el)) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || el.closest("[aria-hidden=true], svg")) continue;
    const fg = lum(rgb(style.color).slice(0, 3)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) problems.push("contrast " + ratio.toFixed(2) + " < " + needed + ": " + where(el));
  }
  return problems;
}
"""


def accessibility_problems(page: Any) -> list[str]:
    """Unlabelled form fields and text under WCAG AA contrast on the page as shown (empty: none)."""
    problems: list[str] = page.evaluate(_A11Y_SCRIPT)
    return problems
