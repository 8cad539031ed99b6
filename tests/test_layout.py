"""Imports flow one way (style.md): protocol <- client <- server; protocol <- sandbox; and the shared
web pieces, protocol <- _web <- sandbox, server, simulator.

Walks every module of every part (AST, so lazy imports inside functions count too). Only the
composition roots (the CLI, ``serve``, ``demo``) may wire the sandbox and the service together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import minipay

ROOT = Path(minipay.__file__).parent
# part -> the minipay parts it may import (besides itself)
ALLOWED = {
    "protocol": set(),
    # What the web-facing parts share (the stylesheet, the Jinja2 setup, the webhook signature):
    # it sits just above protocol, so the sandbox, the service and the simulator may all use it.
    "_web": {"protocol"},
    "client": {"protocol"},
    "sandbox": {"protocol", "_web"},
    "server": {"protocol", "client", "_web"},
    # The /try mini program simulator is a merchant's shop backend: it reaches the service and the
    # sandbox over HTTP only, as a real shop would, so it imports neither; serve.py wires it in.
    "simulator": {"protocol", "_web"},
}
MODULES = set(ALLOWED) | {"cli", "serve", "demo", "_signcli"}
COMPOSITION_ROOTS = {"cli.py", "serve.py", "demo.py", "_signcli.py", "__init__.py"}
# Leaves every part may read (they import nothing).
LEAVES = {"_version.py"}


def minipay_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "minipay":
                names += [f"minipay.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative imports hide the layering; use absolute ones")
        found.update(n.split(".")[1] for n in names if n.startswith("minipay."))
    # ``from minipay import __version__`` is the package root, not another part.
    return found & MODULES


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_the_parts_below_it(part: str) -> None:
    modules = sorted((ROOT / part).rglob("*.py"))
    assert modules, f"no modules found for {part}"
    for path in modules:
        used = minipay_imports(path) - {part}
        forbidden = used - ALLOWED[part]
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_top_level_modules_are_only_the_composition_roots() -> None:
    top = {p.name for p in ROOT.glob("*.py")}
    assert top <= COMPOSITION_ROOTS | LEAVES, top - COMPOSITION_ROOTS - LEAVES
    for leaf in LEAVES:
        tree = ast.parse((ROOT / leaf).read_text(encoding="utf-8"))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], leaf


def test_the_package_root_loads_the_sdk_lazily() -> None:
    # ``import minipay.sandbox`` must not drag in the SDK through ``minipay/__init__``.
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    top_level_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(
        not (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("minipay.client")) for n in top_level_imports
    )


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of ``minipay`` with the ``minipay`` modules it imports, wherever the import is
    written (top level, inside a function, under ``TYPE_CHECKING``): a reader follows them all.
    ``from a.b import c`` points at the module ``a.b.c`` when there is one, else at ``a.b``."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in files else node.module)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_covers_every_file_in_every_folder() -> None:
    graph = import_graph()
    every = {_module_name(p) for p in ROOT.rglob("*.py")}
    assert set(graph) == every
    # The folders a flat glob would miss are in it.
    assert {"minipay.server.worker.api", "minipay.server.console._routes"} <= every


def test_no_import_cycle_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


MAX_LINES = 600
# Generated modules (each says so in its text) are exempt from the line limit.
GENERATED = {"client/_sync.py": "# Generated from _async.py by scripts/unasync.py"}


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_says_what_it_is_and_has_one_job(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    docstring = ast.get_docstring(tree)
    # The first line of the file is the start of the module's docstring, with words on it.
    first = text.splitlines()[0] if text else ""
    assert docstring, f"{path.relative_to(ROOT)} has no module docstring"
    assert first.startswith('"""'), first
    assert len(first.strip('"').strip()) >= 10, first
    name = path.relative_to(ROOT).as_posix()
    if name in GENERATED:
        assert GENERATED[name] in text
    else:
        assert len(text.splitlines()) <= MAX_LINES, f"{name}: {len(text.splitlines())} lines; split it by job"
