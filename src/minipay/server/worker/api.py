"""``GET /v1/reconciliation/{date}`` and the hooks ``create_app`` takes from the worker.

::

    app = create_app(settings, background=[worker_task()], routers=[build_router()])

The router reads the container from ``request.app.state.container`` (set by ``create_app``) and
authenticates with the same API keys as the rest of the service: the admin key sees every
sub-merchant, a sub-merchant key only its own runs and discrepancies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import date
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from minipay.server.auth import Caller
from minipay.server.bootstrap import Container
from minipay.server.routes.errors import error_response
from minipay.server.services import Principal
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


class _NoBills:
    async def download(self, sub: Any, bill_date: date) -> None:  # pragma: no cover - reading never downloads
        raise RuntimeError("the reconciliation API only reads stored runs")


def _scope(caller: Principal) -> list[str] | None:
    """None: the admin key (every sub-merchant); else the key's own sub-merchant."""
    return None if caller.sub_mch_id is None else [caller.sub_mch_id]


def build_router() -> APIRouter:
    """The reconciliation read API, for ``create_app(..., routers=[build_router()])``."""
    router = APIRouter(tags=["reconciliation"])

    @router.get("/v1/reconciliation/{day}")
    async def get_reconciliation(day: str, request: Request, caller: Caller) -> JSONResponse:
        """Runs and discrepancies of one China-time bill day (``YYYY-MM-DD``)."""
        container: Container = request.app.state.container
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            return error_response(400, "invalid_request", "date must be YYYY-MM-DD")
        if len(day) != 10:
            return error_response(400, "invalid_request", "date must be YYYY-MM-DD")
        reconciler = Reconciler(container.uow_factory, container.clock, _NoBills())
        return JSONResponse(await reconciler.report(parsed, _scope(caller)))

    @router.get("/v1/worker/jobs")
    async def get_worker_jobs(request: Request, caller: Caller) -> JSONResponse:
        """Queue health (admin key only): counts per kind and status, overdue seconds, stalled and dead jobs."""
        container: Container = request.app.state.container
        if caller.sub_mch_id is not None:
            return error_response(403, "forbidden", "the worker's queue is visible to the admin key only")
        queue = JobQueue(container.uow_factory, container.clock)
        return JSONResponse(await queue.overview())

    return router


BackgroundTask = Callable[[Container, asyncio.Event], Coroutine[Any, Any, None]]


def worker_task(config: WorkerConfig | None = None, **kwargs: Any) -> BackgroundTask:
    """The worker as a ``create_app`` background task: ticks until the app stops."""

    async def run(container: Container, stop: asyncio.Event) -> None:
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
