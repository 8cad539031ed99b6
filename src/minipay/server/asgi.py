"""The service as ASGI servers start it: ``app_from_env``, the composition of the app for replicas.

::

    MINIPAY_CONFIG=/etc/minipay.toml uvicorn --factory minipay.server.asgi:app_from_env \
        --http minipay.server.asgi:HttpProtocol --workers 4

Settings come from ``$MINIPAY_CONFIG`` and the ``MINIPAY_*`` environment; the app serves the same
read API as ``minipay serve`` (reconciliation, queue health). The worker itself runs as
``minipay worker`` processes beside the replicas.

``--http minipay.server.asgi:HttpProtocol`` is the HTTP/1.1 protocol ``minipay serve`` runs: uvicorn's
httptools protocol, sending each response's head and body in one write instead of two (one system
call and one TCP segment; see :mod:`minipay._web._transport`). Without it uvicorn's own protocol
serves the same app, with the same answers, at more CPU per request.
"""

from __future__ import annotations

from fastapi import FastAPI

from minipay._web import freeze_startup_heap
from minipay._web._transport import HttpProtocol
from minipay.server.api import create_app
from minipay.server.settings import load_settings
from minipay.server.worker.api import build_router

__all__ = ["HttpProtocol", "app_from_env"]


def app_from_env() -> FastAPI:
    """The app from ``$MINIPAY_CONFIG`` + ``MINIPAY_*`` env, with the worker's read API mounted.

    Called once per server process (uvicorn's ``--factory``), it is the last step before serving: what
    the process holds now lives as long as it does, so it is frozen out of the garbage collector's full
    collections (:func:`minipay._web.freeze_startup_heap`)."""
    app = create_app(load_settings(), routers=[build_router()])
    freeze_startup_heap()
    return app
