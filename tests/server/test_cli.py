"""`minipay db upgrade` / `minipay db current`."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from minipay.cli import app


def test_db_upgrade_migrates_an_empty_database_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    assert "(empty database)" in runner.invoke(app, ["db", "current", "--database-url", url]).output
    first = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    assert again.exit_code == 0
    assert first.output == again.output
    assert "database at revision" in first.output
    current = runner.invoke(app, ["db", "current", "--database-url", url]).output.strip()
    assert current
    assert current in first.output
