"""``minipay serve`` in sandbox mode, started as a user starts it (a subprocess on free ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from minipay.serve import free_ports


@dataclass
class Served:
    service_url: str
    sandbox_url: str
    world: dict[str, Any]
    banner: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One sandbox-mode ``minipay serve`` (with its worker) for the module's tests."""
    root = tmp_path_factory.mktemp("serve")
    port, sandbox_port, tls_port = free_ports(3)
    creds = root / "creds.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPAY_")}
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from minipay.cli import main; main()", "serve", "--port", str(port),
         "--sandbox-port", str(sandbox_port), "--sandbox-tls-port", str(tls_port), "--credentials-out", str(creds)],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, Path(log.name).read_text()
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "minipay serve did not start"
            time.sleep(0.1)
        world = json.loads(creds.read_text())
        banner = [line for line in Path(log.name).read_text().splitlines() if not line.startswith("{")]
        yield Served(world["service_url"], world["sandbox_url"], world, banner)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
