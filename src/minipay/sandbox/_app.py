"""The app factory: all state is built here, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from minipay.protocol import require_aware
from minipay.sandbox._backend import Backend
from minipay.sandbox._clock import VirtualClock
from minipay.sandbox._config import SandboxConfig
from minipay.sandbox._control import control_routes
from minipay.sandbox._dashboard import dashboard_routes
from minipay.sandbox._errors import ControlError
from minipay.sandbox._notifier import Dispatcher
from minipay.sandbox._paysheet import paysheet_routes
from minipay.sandbox._persist import load_state, save_state
from minipay.sandbox._wire import wechat_routes

__all__ = ["create_app"]

#: Real seconds between two runs of the dispatcher in real-time mode.
TICK = 0.2
#: Ticks between two saves of the state file.
SAVE_EVERY = 25


#: Methods that only read: never refused by the cross-site guard.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CrossSiteGuard:
    """Refuse state-changing browser requests to ``/sandbox/*`` that come from another origin.

    The control API and the dashboard forms move the clock, pay orders (which notifies the
    developer's local service), script faults and reset the world. Without this guard any web
    page open in the developer's browser could do that with a "simple" cross-site POST (a form
    or ``fetch(..., {mode: "no-cors"})`` with a text/plain JSON body). Browsers mark such
    requests: ``Sec-Fetch-Site: cross-site|same-site`` and an ``Origin`` whose host[:port] is not
    the ``Host`` asked for (or ``null``). Those are answered 403 before anything runs. Requests
    without these headers (curl, SDKs, scripts, tests) and same-origin dashboard forms pass. The
    WeChat paths are not guarded: like WeChat they authenticate by signature, not by origin.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in _SAFE_METHODS
            and (scope["path"] == "/sandbox" or scope["path"].startswith("/sandbox/"))
        ):
            reason = _cross_site(scope)
            if reason is not None:
                response = JSONResponse({"error": f"cross-site request refused: {reason}"}, status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cross_site(scope: Scope) -> str | None:
    """Why this request is cross-site, or ``None`` when it is same-origin or not from a browser."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}"
    origin = headers.get("origin")
    if origin is None:
        return None
    origin = origin.strip().lower()
    if origin == "null":
        return "Origin: null"
    _, _, origin_host = origin.partition("://")
    if origin_host != headers.get("host", "").strip().lower():
        return "Origin is not this sandbox's own address"
    return None


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
        routes=[*wechat_routes(), *control_routes(), *paysheet_routes(), *dashboard_routes()],
        exception_handlers={ControlError: _control_error},
        middleware=[Middleware(CrossSiteGuard)],
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
