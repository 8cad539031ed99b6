"""The HTTP API's routes, one module a resource (each an ``add_routes(app, ...)``), with the request and
answer shapes (``schemas``) and the error handling (``errors``); ``create_app`` mounts them."""
