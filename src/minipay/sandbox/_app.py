"""The app factory: all state is built here, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from minipay.protocol import require_aware
from minipay.sandbox._backend import Backend
from minipay.sandbox._clock import VirtualClock
from minipay.sandbox._config import SandboxConfig
from minipay.sandbox._control import control_routes
from minipay.sandbox._dashboard import dashboard_routes
from minipay.sandbox._errors import ControlError
from minipay.sandbox._notifier import Dispatcher
from minipay.sandbox._persist import load_state, save_state
from minipay.sandbox._wire import wechat_routes

__all__ = ["create_app"]

#: Real seconds between two runs of the dispatcher in real-time mode.
TICK = 0.2
#: Ticks between two saves of the state file.
SAVE_EVERY = 25


async def _control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def create_app(
    config: SandboxConfig | None = None,
    *,
    seed: int | None = None,
    start: datetime | None = None,
    notify_transport: httpx2.AsyncBaseTransport | None = None,
    state_file: str | Path | None = None,
) -> Starlette:
    """Build a sandbox: a Starlette app serving the WeChat paths and the ``/sandbox/`` control API.

    ``seed`` makes ids repeat; ``start`` (aware) sets the virtual clock (default: now);
    ``notify_transport`` receives every notification instead of the network (e.g.
    ``httpx2.ASGITransport(service_app)``). ``state_file``: a JSON file the state is read from
    (when it exists) and written to while the app runs (``minipay sandbox --state FILE``).
    The backend is ``app.state.sandbox``.

    >>> app = create_app(seed=1)
    >>> app.state.sandbox.config.institutions[0].mch_id
    '1900000109'
    """
    cfg = config or SandboxConfig.default()
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    begin = require_aware(start, "start") if start is not None else (cfg.start or datetime.now(UTC))
    clock = VirtualClock(begin, realtime=cfg.clock.realtime, speed=cfg.clock.speed)
    backend = Backend(cfg, clock, Dispatcher(cfg.notify, notify_transport), begin)
    if state_file is not None and Path(state_file).exists():
        load_state(backend, state_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ticker = asyncio.create_task(_tick(backend, state_file)) if clock.realtime or state_file else None
        try:
            yield
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if state_file is not None:
                save_state(backend, state_file)

    app = Starlette(
        routes=[*wechat_routes(), *control_routes(), *dashboard_routes()],
        exception_handlers={ControlError: _control_error},
        lifespan=lifespan,
    )
    app.state.sandbox = backend
    return app


async def _tick(backend: Backend, state_file: str | Path | None) -> None:
    """Real-time mode: make due attempts and refund completions as the clock runs; save the state."""
    ticks = 0
    while True:
        await asyncio.sleep(TICK)
        if backend.clock.realtime:
            await backend.run_due()
        ticks += 1
        if state_file is not None and ticks % SAVE_EVERY == 0:
            save_state(backend, state_file)
