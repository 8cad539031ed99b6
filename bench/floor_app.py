"""The floor of ``bench/service.py``: a bare Starlette app under the same uvicorn as the service.

``GET /get`` answers a small JSON document; ``POST /post`` reads the body and answers a small XML
document (the shape of a notification reply). Nothing else: what the framework and server cost.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_REPLY = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


async def get(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def post(request: Request) -> Response:
    await request.body()
    return Response(_REPLY, media_type="application/xml")


app = Starlette(routes=[Route("/get", get), Route("/post", post, methods=["POST"])])
