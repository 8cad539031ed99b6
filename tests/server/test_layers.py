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


# Relative to the server package. The SDK (and its HTTP library) is known to the adapters, the
# composition root and the app factory (which takes test transports); the web framework to the HTTP
# entrypoints only.
SDK_USERS = {"adapters.py", "bootstrap.py", "api.py", "worker/_reconcile.py"}
WEB_USERS = {"api.py", "asgi.py", "auth.py", "_guards.py", "_http.py", "worker/api.py"}
WEB_FOLDERS = ("routes/", "console/")


def _server_modules() -> list[str]:
    return sorted(str(p.relative_to(SERVER)) for p in SERVER.rglob("*.py"))


def test_the_walk_includes_the_sub_folders() -> None:
    modules = _server_modules()
    assert {"worker/_worker.py", "console/_routes.py", "routes/payments.py"} <= set(modules)


def test_only_the_composition_root_and_adapters_know_the_sdk() -> None:
    for name in _server_modules():
        if name not in SDK_USERS:
            used = imports(SERVER / name)
            assert not any(n.startswith(("minipay.client", "httpx2")) for n in used), name


def test_only_the_http_entrypoints_know_the_web_framework() -> None:
    for name in _server_modules():
        if name not in WEB_USERS and not name.startswith(WEB_FOLDERS):
            used = imports(SERVER / name)
            assert not any(n.startswith(("fastapi", "starlette")) for n in used), name
