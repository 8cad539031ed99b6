"""The service's layering holds (style.md): a pure domain, no sandbox, one composition root."""

from __future__ import annotations

import ast
from pathlib import Path

import minipay.server

SERVER = Path(minipay.server.__file__).parent


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_domain_is_pure() -> None:
    allowed = {
        "__future__",
        "enum",
        "secrets",
        "collections.abc",
        "dataclasses",
        "datetime",
        "typing",
        "minipay.protocol",
    }
    assert imports(SERVER / "domain.py") <= allowed


def test_the_service_never_imports_the_sandbox() -> None:
    for path in SERVER.rglob("*.py"):
        assert not any(name.startswith("minipay.sandbox") for name in imports(path)), path


def test_only_the_composition_root_and_adapters_know_the_sdk_and_http() -> None:
    for path in SERVER.glob("*.py"):
        names = imports(path)
        if path.name not in ("adapters.py", "bootstrap.py", "api.py"):
            assert not any(n.startswith(("minipay.client", "httpx2", "fastapi")) for n in names), path
