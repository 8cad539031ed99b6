"""The busiest routes answered before routing, as plain ASGI: :class:`EarlyRoutes`.

FastAPI's per-request work (the router's search of the route table, dependency solving, the request
object) costs several times what a notification or a payment read itself costs the service. The
routes answered here stay in the router, with the same answers: they are what answers when this
layer is left out, what the OpenAPI document describes, and what every request these endpoints do
not take (another method, a query string) goes on to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from minipay.server._http import route_path

__all__ = ["EarlyRoutes", "ItemEndpoint", "shadowed"]


class ItemEndpoint(Protocol):
    """A plain ASGI endpoint for one item of a collection, ``{prefix}{id}`` (no further ``/``, no
    query string), for one method. ``route`` is the router's route of that path (for metrics)."""

    prefix: str
    method: str
    param: str
    route: BaseRoute

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def shadowed(routes: Sequence[BaseRoute], items: Sequence[ItemEndpoint]) -> list[str]:
    """The paths of routes that the router would prefer to an item endpoint's own route (listed before
    it: ``GET`` on a path of one segment below its prefix, e.g. ``/v1/payments/export``) and that the
    endpoint would answer in their place; the app refuses to start with one. Routes after the item's
    lose to it in the router too."""
    found = []
    for item in items:
        for route in routes:
            if route is item.route:
                break
            path = getattr(route, "path", None)
            methods = getattr(route, "methods", None) or ()
            if not isinstance(path, str) or item.method not in methods or not path.startswith(item.prefix):
                continue
            rest = path[len(item.prefix) :]
            if rest and "/" not in rest:
                found.append(path)
    return found


class EarlyRoutes:
    """Plain ASGI: answers the given routes before the router searches the route table, with their
    own ASGI endpoints: ``routes`` by their exact path and methods, ``items`` by path prefix (see
    :class:`ItemEndpoint`). ``scope["route"]`` and ``scope["path_params"]`` are set as the router
    would set them, so metrics count the request under its route. Anything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[Route] = (), items: Sequence[ItemEndpoint] = ()) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}
        self.items = [(item.prefix, len(item.prefix), item) for item in items]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = route_path(scope)
            method: str = scope["method"]
            route = self.routes.get(path)
            if route is not None:
                if route.methods is not None and method in route.methods:
                    scope["route"] = route
                    await route.endpoint(scope, receive, send)
                    return
            elif not scope["query_string"]:
                for prefix, size, item in self.items:
                    if method == item.method and path.startswith(prefix):
                        ident = path[size:]
                        if ident and "/" not in ident:
                            scope["route"] = item.route
                            scope["path_params"] = {item.param: ident}
                            await item(scope, receive, send)
                            return
        await self.app(scope, receive, send)
