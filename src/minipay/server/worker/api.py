"""``GET /v1/reconciliation/{date}`` and the hooks ``create_app`` takes from the worker.

::

    app = create_app(settings, background=[worker_task()], routers=[build_router()])

The router reads the container from ``request.app.state.container`` (set by ``create_app``) and
authenticates with the same API keys as the rest of the service: the admin key sees every
sub-merchant, a sub-merchant key only its own runs and discrepancies.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from minipay.server.logs import current_request_id
from minipay.server.settings import SHUTDOWN_GRACE
from minipay.server.worker._queue import JobQueue
from minipay.server.worker._reconcile import Reconciler
from minipay.server.worker._worker import Worker, WorkerConfig

__all__ = ["build_router", "worker_task"]

log = logging.getLogger("minipay.worker")

#: Real seconds the in-process worker gets to finish the job it is running when it is cancelled
#: without the app's stop event (the app's lifespan sets the event and itself waits up to its own
#: ``shutdown_grace``, the same 10 s by default, before cancelling: then the worker stops at once).
STOP_GRACE = SHUTDOWN_GRACE


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "request_id": current_request_id()}}, status_code=status
    )


class _NoBills:
    async def download(self, sub: Any, bill_date: date) -> None:  # pragma: no cover - reading never downloads
        raise RuntimeError("the reconciliation API only reads stored runs")


def _scope(container: Any, authorization: str | None) -> list[str] | JSONResponse | None:
    """None: the admin key (every sub-merchant); a list: the sub-merchant of the key; or an error."""
    if not authorization or not authorization.startswith("Bearer "):
        return _error(401, "unauthorized", "missing 'Authorization: Bearer <api key>'")
    presented = authorization.removeprefix("Bearer ").strip().encode()
    settings = container.settings
    found: list[str] | bool | None = False
    for key in settings.admin_api_keys:
        if hmac.compare_digest(key.get_secret_value().encode(), presented):
            found = None
    for sub in settings.sub_merchants:
        for key in sub.api_keys:  # every key is compared, each in constant time
            if hmac.compare_digest(key.get_secret_value().encode(), presented):
                found = [sub.sub_mch_id]
    if found is False:
        return _error(401, "unauthorized", "invalid API key")
    assert found is None or isinstance(found, list)
    return found


def build_router() -> APIRouter:
    """The reconciliation read API, for ``create_app(..., routers=[build_router()])``."""
    router = APIRouter(tags=["reconciliation"])

    @router.get("/v1/reconciliation/{day}")
    async def get_reconciliation(
        day: str, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        """Runs and discrepancies of one China-time bill day (``YYYY-MM-DD``)."""
        container = request.app.state.container
        scope = _scope(container, authorization)
        if isinstance(scope, JSONResponse):
            return scope
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            return _error(400, "invalid_request", "date must be YYYY-MM-DD")
        if len(day) != 10:
            return _error(400, "invalid_request", "date must be YYYY-MM-DD")
        reconciler = Reconciler(container.engine, container.clock, _NoBills())
        return JSONResponse(await reconciler.report(parsed, scope))

    @router.get("/v1/worker/jobs")
    async def get_worker_jobs(request: Request, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Queue health (admin key only): counts per kind and status, overdue seconds, stalled and dead jobs."""
        container = request.app.state.container
        scope = _scope(container, authorization)
        if isinstance(scope, JSONResponse):
            return scope
        if scope is not None:
            return _error(403, "forbidden", "the worker's queue is visible to the admin key only")
        queue = JobQueue(container.engine, container.clock)
        return JSONResponse(await queue.overview())

    return router


BackgroundTask = Callable[[Any, asyncio.Event], Coroutine[Any, Any, None]]


def worker_task(config: WorkerConfig | None = None, **kwargs: Any) -> BackgroundTask:
    """The worker as a ``create_app`` background task: ticks until the app stops."""

    async def run(container: Any, stop: asyncio.Event) -> None:
        worker = Worker.from_container(container, config=config, **kwargs)
        done = anyio.Event()

        async def relay() -> None:
            await stop.wait()
            done.set()

        relay_task = asyncio.create_task(relay())
        runner = asyncio.ensure_future(worker.run_forever(done))
        try:
            await asyncio.shield(runner)
        except asyncio.CancelledError:
            # Cancelled after the app's stop event: the lifespan already gave the job in progress its
            # grace (it waited for this task before cancelling), so no second wait; it is cut off and
            # left to its lease. Cancelled without it: the job in progress finishes first (within
            # STOP_GRACE seconds) instead of being cut off.
            grace = 0.0 if stop.is_set() else STOP_GRACE
            done.set()
            if grace:
                await asyncio.wait({runner}, timeout=grace)
            if not runner.done():
                runner.cancel()
                await asyncio.wait({runner})
            raise
        finally:
            relay_task.cancel()
            await worker.aclose()

    return run
