"""What a release carries: the license file matches the declared license, the changelog knows the version."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def test_license_file_matches_the_declared_license() -> None:
    project = _project()
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_changelog_has_a_section_for_the_current_version() -> None:
    version = _project()["version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{version}]" in changelog


def test_project_urls_are_https_and_classifiers_declare_the_license_free_form() -> None:
    project = _project()
    urls = project["urls"]
    assert isinstance(urls, dict)
    assert urls
    assert all(str(u).startswith("https://") for u in urls.values())
    classifiers = project["classifiers"]
    assert isinstance(classifiers, list)
    # PEP 639: with a license expression, "License ::" classifiers are rejected by the build backend.
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert "Typing :: Typed" in classifiers
