"""The service's layering holds (style.md): a pure domain, no sandbox, one composition root, and the
database reached only through the repositories of the unit of work."""

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


# The database is reached through the repositories of the unit of work: only the repositories, the
# schema and engines (db.py, with its SQLite and PostgreSQL drivers) and the migrations build SQL ...
SQL_BUILDERS = ("repositories/", "migrations/", "db.py", "_sqlite.py", "_postgres.py")
# ... and besides them only the unit of work (it owns the transaction) touches a connection: opens or
# begins one, executes on it, or reaches for a unit of work's ``conn``.
CONNECTION_HOLDERS = (*SQL_BUILDERS, "uow.py")
CONNECTION_ATTRIBUTES = {"conn", "execute", "exec_driver_sql", "connect", "begin", "run_sync"}
# What the others may import of SQLAlchemy: its errors (mapped to answers and retries), the async
# engine's types (passed around, never used) and URL parsing - no statement, dialect or table.
SQLALCHEMY_FOR_EVERYONE = ("sqlalchemy.exc", "sqlalchemy.ext.asyncio", "sqlalchemy.engine")


def sql_leaks(server: Path) -> list[str]:
    """Every place under ``server`` outside the repositories that builds SQL or touches a connection."""
    leaks: list[str] = []
    for path in sorted(server.rglob("*.py")):
        name = str(path.relative_to(server))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not name.startswith(SQL_BUILDERS):
            for module in sorted(imports(path)):
                if (module == "sqlalchemy" or module.startswith("sqlalchemy.")) and not module.startswith(
                    SQLALCHEMY_FOR_EVERYONE
                ):
                    leaks.append(f"{name} imports {module}")
        if not name.startswith(CONNECTION_HOLDERS):
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in CONNECTION_ATTRIBUTES:
                    leaks.append(f"{name}:{node.lineno} uses .{node.attr}")
    return leaks


def test_only_the_repositories_build_sql_or_touch_a_connection() -> None:
    assert sql_leaks(SERVER) == []


def test_the_sql_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    leaky = "from sqlalchemy import select\n\nasync def f(uow):\n    await uow.conn.execute(select(1))\n"
    for folder in ("console", "repositories"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "_queries.py").write_text(leaky, encoding="utf-8")
    (tmp_path / "uow.py").write_text(leaky, encoding="utf-8")  # may hold a connection, not build SQL
    assert set(sql_leaks(tmp_path)) == {
        "console/_queries.py imports sqlalchemy",
        "console/_queries.py:4 uses .conn",
        "console/_queries.py:4 uses .execute",
        "uow.py imports sqlalchemy",
    }


def private_imports(server: Path) -> list[str]:
    """``from minipay.x import _name``: a private name of one module used by another."""
    found: list[str] = []
    for path in sorted(server.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minipay."):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(server)} imports {alias.name} from {node.module}")
    return found


def test_no_module_imports_another_ones_private_names() -> None:
    assert private_imports(SERVER) == []


def test_every_repositories_module_is_small_and_says_what_it_is() -> None:
    for path in sorted((SERVER / "repositories").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) < 600, path.name
        docstring = ast.get_docstring(ast.parse(text))
        assert docstring, path.name
        assert docstring.split("\n")[0].strip(), path.name
