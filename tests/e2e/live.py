"""The whole system of ``stack.py`` served on loopback for a real browser.

Playwright's sync API runs in the test's thread and must not share it with an event loop, so the
stack (sandbox, service, workers, SQLite file) lives in a thread of its own, with its own loop; the
service and the sandbox are served there by uvicorn on free loopback ports. The test prepares data
through :meth:`LiveStack.run`, which runs a coroutine on that loop and waits for its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.stack import Stack, running_stack, serving

T = TypeVar("T")


class LiveStack:
    def __init__(self, loop: asyncio.AbstractEventLoop, stack: Stack, service_url: str, sandbox_url: str) -> None:
        self.loop = loop
        self.stack = stack
        self.service_url = service_url
        self.sandbox_url = sandbox_url
        self._extra: list[asyncio.Future[None]] = []

    def run(self, step: Callable[[Stack], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
        """Run ``step(stack)`` on the stack's loop and return what it returns."""
        return asyncio.run_coroutine_threadsafe(step(self.stack), self.loop).result(timeout)

    def serve(self, app: Any, timeout: float = 30.0) -> str:
        """Serve another ASGI app on a loopback port until the stack stops; its base URL."""
        ready: asyncio.Future[str] = asyncio.run_coroutine_threadsafe(self._serve(app), self.loop)  # type: ignore[assignment]
        return ready.result(timeout)

    async def _serve(self, app: Any) -> str:
        started: asyncio.Future[str] = self.loop.create_future()

        async def keep() -> None:
            async with serving(app) as url:
                started.set_result(url)
                await asyncio.Event().wait()

        self._extra.append(asyncio.ensure_future(keep()))
        return await started


@contextmanager
def live_stack(tmp_path: Path, **options: Any) -> Iterator[LiveStack]:
    """Start the stack (SQLite in ``tmp_path``; ``options`` go to ``running_stack``) in its own
    thread; stop it and join the thread on exit."""
    loop = asyncio.new_event_loop()
    ready: list[LiveStack] = []
    failed: list[BaseException] = []
    started = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with (
                running_stack(f"sqlite+aiosqlite:///{tmp_path / 'minipay.db'}", **options) as stack,
                serving(stack.service_app) as service_url,
                serving(stack.sandbox_app) as sandbox_url,
            ):
                live = LiveStack(loop, stack, service_url, sandbox_url)
                ready.append(live)
                started.set()
                try:
                    await stop.wait()
                finally:
                    for task in live._extra:
                        task.cancel()
                    await asyncio.gather(*live._extra, return_exceptions=True)
        except BaseException as exc:  # surfaced in the test's thread
            failed.append(exc)
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="live-stack", daemon=True)
    thread.start()
    started.wait(60)
    if failed:
        raise failed[0]
    assert ready, "the live stack did not start"
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        if failed:
            raise failed[0]
