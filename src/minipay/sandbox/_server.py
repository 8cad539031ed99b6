"""Running a sandbox on a real socket: ``minipay sandbox`` and loopback tests use this."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from minipay.sandbox._tls import SandboxH11Protocol, TLSMaterial

__all__ = ["RunningServer", "build_server", "running"]


def build_server(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8801,
    tls: TLSMaterial | None = None,
    log_level: str = "warning",
    lifespan: Literal["on", "off"] = "on",
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the sandbox protocol (TLS extension, abort hook).

    A second listener of the same app (the HTTPS port next to the plain one) takes
    ``lifespan="off"``: the app's ticker and state file belong to one server."""
    options = tls.uvicorn_options() if tls is not None else {}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=SandboxH11Protocol,
        ws="none",
        lifespan=lifespan,
        log_level=log_level,
        access_log=False,
        **options,
    )
    return uvicorn.Server(config)


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    port: int


@contextlib.contextmanager
def running(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, tls: TLSMaterial | None = None, timeout: float = 10.0
) -> Iterator[RunningServer]:
    """Serve ``app`` on a loopback socket in a thread (``port=0``: a free port); stop on exit.

    >>> from minipay.sandbox import create_app
    >>> with running(create_app(seed=1)) as server:  # doctest: +SKIP
    ...     httpx2.get(server.base_url + "/sandbox/clock")
    """
    server = build_server(app, host=host, port=port, tls=tls)
    thread = threading.Thread(target=server.run, name="minipay-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.01)
    sockets = [s for srv in server.servers for s in srv.sockets]
    bound = sockets[0].getsockname()[1]
    scheme = "https" if tls is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    try:
        yield RunningServer(base_url=f"{scheme}://{shown}:{bound}", port=bound)
    finally:
        server.should_exit = True
        thread.join(timeout)
