"""The Minipay payment service: WeChat Pay Global as a JSON API, a database, notifications, webhooks.

Layers (``docs/server.md``): ``domain`` (pure) <- ``services`` (use cases, unit of work) <- ``adapters``
(SQLAlchemy, the SDK gateway, clocks, webhook sender) <- ``api`` (FastAPI, ``create_app(settings)``);
``bootstrap`` is the one composition root. Importing this package does no work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Settings", "create_app", "load_settings"]

if TYPE_CHECKING:
    from minipay.server.api import create_app
    from minipay.server.settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    # Lazy, so that `import minipay.server.domain` does not pull FastAPI and the SDK in.
    if name == "create_app":
        from minipay.server.api import create_app

        return create_app
    if name in ("Settings", "load_settings"):
        from minipay.server import settings

        return getattr(settings, name)
    raise AttributeError(name)
