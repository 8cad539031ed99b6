"""The floors of ``bench/service.py``: bare apps under the same uvicorn as the service.

``app`` (Starlette, the floor the targets are measured against): ``GET /get`` answers a small JSON
document; ``POST /post`` reads the body and answers a small XML document (the shape of a
notification reply). Nothing else: what the ASGI framework and the server cost. Beside them, not a
floor of their own: ``GET /rows/{row_id}`` runs the one keyed lookup ``GET /v1/payments/{id}``
makes (the payment by id, in the service's own unit of work of lookups,
``MINIPAY_BENCH_DATABASE_URL``) and answers a small JSON document: what that read costs on the bare
framework, the floor of the work left in the service's read once everything else is gone.
``POST /orders`` (when ``MINIPAY_CONFIG`` names the service's configuration) reads its body (the
payer's ``openid``, as ``POST /v1/payments`` gets it) and does what no payment creation can skip,
through the service's own repositories, unit of work and WeChat gateway: the payment and its event row inserted and
committed, the unified order at the sandbox, then the ``prepay_id`` saved with its event and
committed; it answers the payment's id and ``prepay_id``. That is the floor of ``POST
/v1/payments`` on the bare framework, without the request's validation, the API key, the
idempotency check, the ``pay_params`` and the view; the process that serves it runs as the service
does (its start-up heap frozen out of the garbage collector's full collections).

``fastapi_app`` (FastAPI, what the service is written in, measured beside it to show how much of the
gap to the Starlette floor is the framework's own): ``GET /get``, the same JSON from a bare FastAPI
route; ``GET /items/{item_id}``, the shape of ``GET /v1/payments/{id}`` without its work: a path
parameter, a query flag and an ``Authorization`` header read by an async dependency;
``GET /rows/{row_id}``, the same plus the one SQL read the service's GET makes (the payment by id,
through the service's own read-only unit of work and repository, ``MINIPAY_BENCH_DATABASE_URL``),
answered as a small JSON document: the floor of the remaining work of ``GET /v1/payments/{id}`` on
FastAPI, without the service's payment parameters and view; ``POST /writes/{row_id}``, a POST route
that reads its body and runs the statements a first-time payment notification runs, through the
service's own repositories and unit of work (the read that answers duplicates; then, decided on it,
its conditional update, an event row and an outbox event, sent at commit): the floor of the
remaining work of a first-time notification on FastAPI, without the notification's parse, signature check and
checks against the order; ``POST /verified-writes/{row_id}``, the same after parsing a signed
notification and checking its signature with the institution's key (``MINIPAY_BENCH_API_KEY``),
what no notification can skip: the floor of a first-time notification but for its checks against
the order and the service's HTTP guards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from minipay._web import freeze_startup_heap
from minipay.protocol import parse_payment_notification
from minipay.server import db
from minipay.server.adapters import ClientGateway
from minipay.server.commands import CreatePayment, new_out_trade_no, new_payment
from minipay.server.ports import OrderRequest
from minipay.server.services import PREPAY_LIFETIME
from minipay.server.settings import Settings, load_settings
from minipay.server.uow import UnitOfWork, retrying

_REPLY = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


async def get(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def post(request: Request) -> Response:
    await request.body()
    return Response(_REPLY, media_type="application/xml")


async def lookup(request: Request) -> JSONResponse:
    if _engine is None:
        return JSONResponse({"error": "MINIPAY_BENCH_DATABASE_URL is not set"}, 503)
    async with UnitOfWork(_engine).looking_up() as uow:
        payment = await uow.payments.get(request.path_params["row_id"])
    if payment is None:
        return JSONResponse({"error": "not found"}, 404)
    return JSONResponse({"id": payment.id, "status": str(payment.status), "amount": payment.amount})


async def orders(request: Request) -> JSONResponse:
    # What a payment's creation cannot skip, as the service runs it: the insert and its event at
    # commit, the unified order through the service's gateway, the prepay_id saved at commit.
    if _engine is None or _gateway is None or _settings is None:
        return JSONResponse({"error": "MINIPAY_BENCH_DATABASE_URL and MINIPAY_CONFIG must be set"}, 503)
    openid = str(orjson.loads(await request.body())["openid"])  # the payer, as POST /v1/payments gets it
    engine, gateway, settings = _engine, _gateway, _settings
    sub = settings.sub_merchants[0]
    inst = gateway.institution(sub)
    now = datetime.now(UTC)
    payment = new_payment(
        CreatePayment(amount=1000, currency=sub.currency, description="bench", openid=openid),
        inst,
        sub,
        out_trade_no=new_out_trade_no(),
        currency=sub.currency,
        client_ip="127.0.0.1",
        expires_in=settings.payment_expires_in,
        now=now,
    )
    async with UnitOfWork(engine).writing_at_commit() as uow:
        await uow.payments.add(payment)
        data = {"out_trade_no": payment.out_trade_no, "amount": payment.amount, "currency": payment.currency}
        await uow.events.append(
            type="created", source="bench", data=data, now=now, payment_id=payment.id, sub_mch_id=sub.sub_mch_id
        )
        await uow.commit()
    notify_url = f"{settings.public_base_url}/wechatpay/notify/payment"
    prepay_id = await gateway.create_order(sub, OrderRequest.for_payment(payment, notify_url))
    async with UnitOfWork(engine).writing_at_commit() as uow:
        now = datetime.now(UTC)
        payment.prepared(prepay_id, now + PREPAY_LIFETIME, now)
        await uow.payments.save(payment)
        await uow.record(payment.events, source="bench", sub_mch_id=sub.sub_mch_id, now=now, payment_id=payment.id)
        await uow.commit()
    return JSONResponse({"id": payment.id, "prepay_id": prepay_id}, 201)


_engine: Any = None
#: The Starlette app's WeChat gateway and settings (the service's own, from ``MINIPAY_CONFIG``), for
#: ``POST /orders``.
_gateway: ClientGateway | None = None
_settings: Settings | None = None


#: The Starlette app's engine: lookups only, gathered (a few connections at a time), so a pool of
#: 8 (4 on the statement pool); the database server is shared by every app of the run, and the
#: service's pools come first.
FLOOR_POOL_SIZE = 8


def _lifespan(*, lookups: bool) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        global _engine, _gateway, _settings
        url = os.environ.get("MINIPAY_BENCH_DATABASE_URL")
        _engine = _gateway = _settings = None
        if url:
            _engine = db.create_engine(url, pool_size=FLOOR_POOL_SIZE) if lookups else db.create_engine(url)
        if lookups and os.environ.get("MINIPAY_CONFIG"):
            _settings = load_settings()
            _gateway = ClientGateway(_settings)
        if lookups and isinstance(_engine, db.PgEngine):
            # As the service does at start-up: the statement pool open and warmed up before the
            # first request, so that the floor's lookups are measured on the same footing.
            await _engine.statements.fill()
        if _gateway is not None:
            freeze_startup_heap()  # as the service's processes do, just before serving
        try:
            yield
        finally:
            if _gateway is not None:
                await _gateway.aclose()
            if _engine is not None:
                await _engine.dispose()

    return lifespan


app = Starlette(
    routes=[
        Route("/get", get),
        Route("/post", post, methods=["POST"]),
        Route("/rows/{row_id}", lookup),
        Route("/orders", orders, methods=["POST"]),
    ],
    lifespan=_lifespan(lookups=True),
)

fastapi_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=_lifespan(lookups=False))


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


@fastapi_app.get("/rows/{row_id}")
async def fastapi_row(row_id: str, caller: Annotated[str, Depends(_caller)], sync: bool = False) -> JSONResponse:
    if _engine is None:
        raise HTTPException(503, "MINIPAY_BENCH_DATABASE_URL is not set")
    async with UnitOfWork(_engine).reading() as uow:
        payment = await uow.payments.get(row_id)
    if payment is None:
        raise HTTPException(404)
    return JSONResponse({"id": payment.id, "status": str(payment.status), "amount": payment.amount})


async def _notify_statements(row_id: str) -> None:
    """The statements of a first-time payment notification, through the service's repositories and
    unit of work, as ``apply_payment_result`` runs them: the read that answers duplicates, then the
    writes decided on it (the conditional update, an event row, an outbox event), sent at commit; on
    a concurrent change, again on the locked row."""
    if _engine is None:
        raise HTTPException(503, "MINIPAY_BENCH_DATABASE_URL is not set")
    engine = _engine
    async with UnitOfWork(engine).reading() as uow:
        seen = await uow.payments.get(row_id)  # the duplicate check's read
    if seen is None:
        raise HTTPException(404)
    snapshot = [seen]

    async def work(uow: UnitOfWork) -> None:
        payment = snapshot.pop() if snapshot else await uow.payments.get(row_id, for_update=True)
        if payment is None:
            raise HTTPException(404)
        await uow.payments.save(payment)  # the conditional update (the version moves on)
        await uow.events.append(type="bench", source="bench", data={}, now=payment.updated_at, payment_id=row_id)
        await uow.outbox.publish(
            key=f"bench:{secrets.token_hex(8)}",
            type="bench",
            sub_mch_id=payment.sub_mch_id,
            data={},
            now=payment.updated_at,
            payment_id=row_id,
        )
        await uow.commit()

    await retrying(lambda: UnitOfWork(engine).writing_at_commit() if snapshot else UnitOfWork(engine), work)


@fastapi_app.post("/writes/{row_id}")
async def fastapi_writes(row_id: str, request: Request) -> Response:
    await request.body()
    await _notify_statements(row_id)
    return Response(_REPLY, media_type="application/xml")


@fastapi_app.post("/verified-writes/{row_id}")
async def fastapi_verified_writes(row_id: str, request: Request) -> Response:
    # The same, after what no notification can skip: its XML parsed, its signature checked with the
    # institution's key (MINIPAY_BENCH_API_KEY) and its fields typed, by the protocol core.
    key = os.environ.get("MINIPAY_BENCH_API_KEY")
    if not key:
        raise HTTPException(503, "MINIPAY_BENCH_API_KEY is not set")
    parse_payment_notification(await request.body(), key)
    await _notify_statements(row_id)
    return Response(_REPLY, media_type="application/xml")
