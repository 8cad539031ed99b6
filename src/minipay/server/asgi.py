"""The service as ASGI servers start it: ``app_from_env``, the composition of the app for replicas.

::

    MINIPAY_CONFIG=/etc/minipay.toml uvicorn --factory minipay.server.asgi:app_from_env --workers 4

Settings come from ``$MINIPAY_CONFIG`` and the ``MINIPAY_*`` environment; the app serves the same
read API as ``minipay serve`` (reconciliation, queue health). The worker itself runs as
``minipay worker`` processes beside the replicas.
"""

from __future__ import annotations

from fastapi import FastAPI

from minipay.server.api import create_app
from minipay.server.settings import load_settings
from minipay.server.worker.api import build_router

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    """The app from ``$MINIPAY_CONFIG`` + ``MINIPAY_*`` env, with the worker's read API mounted."""
    return create_app(load_settings(), routers=[build_router()])
