"""The browser tests' accessibility check finds what it looks for (so a clean page means something)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import accessibility_problems

pytestmark = pytest.mark.browser


def test_the_accessibility_check_finds_unlabelled_fields_and_faint_text(page: Any) -> None:
    page.set_content(
        '<body style="background:#fff"><label for="a">Amount</label><input id="a">'
        '<input name="reason"><p style="color:#999">faint</p><p style="color:#4e5969">fine</p>'
        '<div style="background:#067a3e"><b style="color:#fff">on green</b></div>'
        '<input type="hidden" name="csrf"><select aria-label="Status"><option>any</option></select></body>'
    )
    problems = accessibility_problems(page)
    assert len(problems) == 2, problems
    assert problems[0].startswith("field without a label: input")
    assert problems[1].startswith("contrast 2.85 < 4.5: p 'faint'")
