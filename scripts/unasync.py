"""Generate the synchronous client from the asynchronous source (httpcore's unasync approach).

``src/minipay/client/_async.py`` (``AsyncClient`` and its resources) is the one written copy;
``src/minipay/client/_sync.py`` is produced from it by the substitutions below, then sorted and
formatted with the project's ruff settings. Run ``uv run python scripts/unasync.py`` after editing
the async source; ``--check`` (run in CI and by a test) fails when the generated file is stale or a
substitution no longer matches anything.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src/minipay/client/_async.py"
TARGET = ROOT / "src/minipay/client/_sync.py"

#: (pattern, replacement), applied in order to the whole file.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (
        r"# unasync: the source of _sync\.py.*",
        "# Generated from _async.py by scripts/unasync.py: edit that file, then run it.",
    ),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\baclose\b", "close"),
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
    (r"Awaitable\[([\w.]+(?:\[[\w., ]*\])?)\]", r"\1"),
    (r"\bAwaitable, ", ""),
    (r"\bimport anyio\b", "import time"),
    (r"\banyio\.sleep\b", "time.sleep"),
    (r"\basynchronous\b", "synchronous"),
    (r"\bacross tasks\b", "across threads"),
    (r"\basync_client\b", "client"),
    # The async client sends over aiohttp (minipay/client/_aiohttp.py); the sync one over httpx2's own pool.
    (r"transport=AiohttpTransport\((\w+)\)", r"verify=\1"),
]


def _ruff(args: list[str], text: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own interpreter running ruff on generated text
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise SystemExit(f"ruff {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def generate(source: str) -> tuple[str, list[str]]:
    """The sync module for ``source``, and the substitutions that matched nothing."""
    unused = []
    text = source
    for pattern, replacement in SUBSTITUTIONS:
        text, count = re.subn(pattern, replacement, text)
        if count == 0:
            unused.append(pattern)
    text = _ruff(["check", "--fix", "--select", "I,F401", "--quiet", "--exit-zero"], text)
    return _ruff(["format", "--quiet"], text), unused


def main(argv: list[str]) -> int:
    check = "--check" in argv
    generated, unused = generate(SOURCE.read_text(encoding="utf-8"))
    if unused:
        print(f"unasync: substitutions that matched nothing: {unused}", file=sys.stderr)
        return 1
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if generated == current:
        return 0
    if check:
        print(f"unasync: {TARGET.relative_to(ROOT)} is stale: run `uv run python scripts/unasync.py`", file=sys.stderr)
        return 1
    TARGET.write_text(generated, encoding="utf-8")
    print(f"unasync: wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
