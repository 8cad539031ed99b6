"""What a serving process does once its app is built: :func:`freeze_startup_heap`."""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive so far (the imported modules, the app, its settings)
    into the garbage collector's permanent generation (:func:`gc.freeze`).

    Why: a serving process holds ~110,000 container objects after its imports (FastAPI, pydantic,
    SQLAlchemy, the SDK), and CPython's full (generation 2) collection walks all of them: about 30 ms
    on a small machine, during which the event loop answers nobody. Under load such a collection runs
    every few seconds and lands in the latency tail of every request in flight. Frozen objects are
    still freed by reference counting; only cycles among them are no longer looked for, and the ones
    made at start-up are meant to live as long as the process. Call it once per process, just before
    serving (never in a library or a test run, where the process goes on to build other apps).
    """
    gc.collect()
    gc.freeze()
