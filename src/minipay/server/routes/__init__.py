"""The HTTP API's routes, one module a resource (each a ``build_router``), with the request and
answer shapes (``schemas``) and the error handling (``errors``); ``create_app`` mounts them."""
