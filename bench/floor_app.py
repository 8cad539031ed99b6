"""The floors of ``bench/service.py``: bare apps under the same uvicorn as the service.

``app`` (Starlette, the floor the targets are measured against): ``GET /get`` answers a small JSON
document; ``POST /post`` reads the body and answers a small XML document (the shape of a
notification reply). Nothing else: what the ASGI framework and the server cost.

``fastapi_app`` (FastAPI, what the service is written in, measured beside it to show how much of the
gap to the Starlette floor is the framework's own): ``GET /get``, the same JSON from a bare FastAPI
route; ``GET /items/{item_id}``, the shape of ``GET /v1/payments/{id}`` without its work: a path
parameter, a query flag and an ``Authorization`` header read by an async dependency.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
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


fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


async def _caller(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401)
    return authorization.removeprefix("Bearer ")


@fastapi_app.get("/get")
async def fastapi_get() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@fastapi_app.get("/items/{item_id}")
async def fastapi_item(item_id: str, caller: Annotated[str, Depends(_caller)], sync: bool = False) -> JSONResponse:
    return JSONResponse({"id": item_id, "sync": sync})
