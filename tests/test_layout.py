"""Imports flow one way (style.md): protocol <- client <- server; protocol <- sandbox.

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
    "client": {"protocol"},
    "sandbox": {"protocol"},
    "server": {"protocol", "client"},
    # The /try mini program simulator is a merchant's shop backend: it reaches the service and the
    # sandbox over HTTP only, as a real shop would, so it imports neither; serve.py wires it in.
    "simulator": {"protocol"},
}
MODULES = set(ALLOWED) | {"cli", "serve", "demo", "_signcli"}
COMPOSITION_ROOTS = {"cli.py", "serve.py", "demo.py", "_signcli.py", "__init__.py"}


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
    assert top <= COMPOSITION_ROOTS, top - COMPOSITION_ROOTS


def test_the_package_root_loads_the_sdk_lazily() -> None:
    # ``import minipay.sandbox`` must not drag in the SDK through ``minipay/__init__``.
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    top_level_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(
        not (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("minipay.client")) for n in top_level_imports
    )
