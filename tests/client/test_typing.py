"""The typing test: mypy (strict, the project's config) checks ``typing_public_api.py``."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def test_the_public_api_type_checks_with_assert_type_under_mypy_strict() -> None:
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-error-summary",
            "--hide-error-context",
            str(HERE / "typing_public_api.py"),
        ]
    )
    assert status == 0, stdout + stderr


def test_the_typing_check_can_fail(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from typing import assert_type\n"
        "from minipay.client import Client, UnifiedOrderResponse\n"
        "def f(c: Client) -> None:\n"
        "    assert_type(c.orders.query(out_trade_no='x'), UnifiedOrderResponse)\n"
    )
    stdout, _, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), str(wrong)])
    assert status == 1
    assert "[assert-type]" in stdout
