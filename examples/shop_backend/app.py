"""The shop backend: a FastAPI app over SQLite that calls the Minipay service's JSON API with httpx2.

The mini program calls:

* ``POST /login`` ``{"code"}`` (from ``wx.login``) -> ``{"token"}``: the code goes to Minipay's
  ``POST /v1/sessions``, which answers the user's ``openid``; the shop issues its own session token.
* ``GET /products``; ``POST /orders`` ``{"product_id"}`` -> the order with ``pay_params``, the five
  arguments of ``wx.requestPayment``; ``GET /orders/{id}``; ``POST /orders/{id}/pay-params`` -> fresh ones
  (after the user cancelled the cashier).

Minipay calls ``POST /webhooks/minipay``: the ``Minipay-Signature`` header is checked (HMAC-SHA256 of
``"<t>.<body>"`` under the endpoint secret, ``t`` within five minutes), each event id is applied once,
and the order follows its payment: ``paid``, ``closed``, ``partially_refunded``, ``refunded``.

An order is paid only when Minipay says so: through a webhook (push), or when ``GET /orders/{id}``
finds a pending order and reads its payment from Minipay (pull, for a webhook that is late). What the
mini program's ``wx.requestPayment`` answered is never taken as proof.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

log = logging.getLogger("shop_backend")

# id -> (name, price in minor units of the shop's currency: 1800 = 18.00)
PRODUCTS: dict[str, tuple[str, int]] = {
    "latte": ("Latte", 1800),
    "croissant": ("Croissant", 1200),
    "beans": ("Coffee beans 250 g", 9800),
}
SESSION_LIFETIME = 7 * 24 * 3600
WEBHOOK_PATH = "/webhooks/minipay"
# The order's status for each Minipay payment status; an order only moves to a higher rank
# (a webhook replayed out of order never undoes a payment; money paid after a close still counts).
STATUS_OF_PAYMENT = {
    "created": "pending",
    "pending": "pending",
    "closed": "closed",
    "succeeded": "paid",
    "partially_refunded": "partially_refunded",
    "refunded": "refunded",
}
RANK = {"pending": 0, "closed": 1, "paid": 2, "partially_refunded": 3, "refunded": 4}

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (token_hash TEXT PRIMARY KEY, openid TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, openid TEXT NOT NULL, product_id TEXT NOT NULL, description TEXT NOT NULL,
    amount INTEGER NOT NULL, currency TEXT NOT NULL, payment_id TEXT UNIQUE, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, paid_at TEXT
);
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT NOT NULL, received_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_endpoint (url TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, secret TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ShopSettings:
    """Where Minipay is, the sub-merchant's key, and where Minipay reaches this backend."""

    minipay_url: str
    api_key: str = field(repr=False)
    currency: str = "HKD"
    public_url: str = "http://127.0.0.1:8100"
    db_path: str = "shop.db"
    # The webhook endpoint's secret; None = register the endpoint with Minipay at start-up (the
    # secret is shown once, so it is kept in the database).
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_tolerance: int = 300


class WebhookSignatureError(Exception):
    """The ``Minipay-Signature`` header is missing, malformed, too old or does not match the body."""


def verify_signature(body: bytes, header: str, secret: str, *, tolerance: int = 300, now: int | None = None) -> int:
    """Check ``Minipay-Signature: t=<unix>,v1=<hex>`` against the raw body; returns ``t``.

    ``v1`` is HMAC-SHA256 of ``"<t>.<body>"`` keyed with the endpoint secret, compared in constant
    time; a ``t`` further than ``tolerance`` seconds from now is refused (a captured request cannot be
    replayed later; within the window the event id catches it).
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError("malformed Minipay-Signature header")
        if name == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookSignatureError("Minipay-Signature has no valid t=") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None:
        raise WebhookSignatureError("Minipay-Signature has no valid t=")
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureError("Minipay-Signature timestamp outside the tolerance")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates):
        raise WebhookSignatureError("Minipay-Signature does not match")
    return timestamp


class LoginBody(BaseModel):
    code: str


class OrderBody(BaseModel):
    product_id: str


class ShopError(Exception):
    """An error answered to the mini program as ``{"error": {"code", "message"}}``, in plain words."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Minipay:
    """The few calls of the Minipay service's JSON API the shop needs (``Authorization: Bearer <key>``)."""

    def __init__(self, http: httpx2.AsyncClient) -> None:
        self.http = http

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
        try:
            response = await self.http.request(method, path, json=body, headers=headers)
        except httpx2.TransportError as exc:
            log.warning("Minipay unreachable: %s %s: %s", method, path, type(exc).__name__)
            raise ShopError(503, "payment_service_unavailable", "Payments are unavailable right now.") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "upstream_error", response.text[:200]
            log.warning("Minipay answered %s to %s %s: %s", response.status_code, method, path, code)
            raise MinipayError(response.status_code, code, message)
        return response.json()


class MinipayError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


class Shop:
    """The shop's state (SQLite) and its rules; one per app."""

    def __init__(self, settings: ShopSettings, db: sqlite3.Connection, minipay: Minipay) -> None:
        self.settings, self.db, self.minipay = settings, db, minipay
        self.webhook_secret = settings.webhook_secret

    async def register_webhook(self) -> None:
        """Make sure Minipay has this backend's webhook endpoint; keep its secret (shown only once)."""
        url = self.settings.public_url.rstrip("/") + WEBHOOK_PATH
        row = self.db.execute("SELECT endpoint_id, secret FROM webhook_endpoint WHERE url = ?", (url,)).fetchone()
        if row is not None:
            listed = await self.minipay.call("GET", "/v1/webhook-endpoints")
            if any(e["id"] == row[0] for e in listed["data"]):
                self.webhook_secret = row[1]
                return
        created = await self.minipay.call("POST", "/v1/webhook-endpoints", {"url": url})
        with self.db:
            row = (url, created["id"], created["secret"])
            self.db.execute("INSERT OR REPLACE INTO webhook_endpoint VALUES (?, ?, ?)", row)
        self.webhook_secret = created["secret"]
        log.info("registered webhook endpoint %s for %s", created["id"], url)

    def user(self, authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        digest = hashlib.sha256(token.encode()).hexdigest()
        row = self.db.execute("SELECT openid, created_at FROM sessions WHERE token_hash = ?", (digest,)).fetchone()
        if not token or row is None or row[1] + SESSION_LIFETIME < time.time():
            raise ShopError(401, "login_required", "Please log in again.")
        return str(row[0])

    def order(self, order_id: str, openid: str) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM orders WHERE id = ? AND openid = ?", (order_id, openid)).fetchone()
        if row is None:
            raise ShopError(404, "order_not_found", "This order does not exist.")
        return dict(row)

    def apply_payment(self, payment: dict[str, Any]) -> None:
        """Move the order of ``payment`` (Minipay's payment JSON) forward to what it says (caller commits)."""
        row = self.db.execute(
            "SELECT id, status, amount, currency FROM orders WHERE payment_id = ?", (payment.get("id"),)
        ).fetchone()
        new = STATUS_OF_PAYMENT.get(str(payment.get("status")))
        if row is None or new is None or RANK[new] <= RANK[row[1]]:
            return
        if new != "closed" and (payment.get("amount"), payment.get("currency")) != (row[2], row[3]):
            log.error("order %s: payment %s does not match the order's amount", row[0], payment.get("id"))
            return
        self.db.execute(
            "UPDATE orders SET status = ?, paid_at = COALESCE(paid_at, ?) WHERE id = ?",
            (new, payment.get("paid_at"), row[0]),
        )
        log.info("order %s: %s -> %s", row[0], row[1], new)


def public(order: dict[str, Any], pay_params: dict[str, str] | None = None) -> dict[str, Any]:
    """The order as the mini program sees it; ``pay_params`` are exactly ``wx.requestPayment``'s five."""
    shown = {k: order[k] for k in ("id", "product_id", "description", "amount", "currency", "status", "paid_at")}
    if pay_params is not None:
        keys = ("timeStamp", "nonceStr", "package", "signType", "paySign")
        shown["pay_params"] = {k: pay_params[k] for k in keys}
    return shown


def create_app(settings: ShopSettings, *, transport: httpx2.AsyncBaseTransport | None = None) -> FastAPI:
    """The shop backend; ``transport`` replaces the network to Minipay (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = sqlite3.connect(settings.db_path)
        db.row_factory = sqlite3.Row
        db.executescript(SCHEMA)
        auth = {"Authorization": f"Bearer {settings.api_key}"}
        async with httpx2.AsyncClient(
            base_url=settings.minipay_url, headers=auth, timeout=10, transport=transport
        ) as http:
            app.state.shop = shop = Shop(settings, db, Minipay(http))
            if shop.webhook_secret is None:
                await shop.register_webhook()
            try:
                yield
            finally:
                db.close()

    app = FastAPI(title="Shop backend (Minipay sample)", lifespan=lifespan)

    @app.exception_handler(ShopError)
    async def shop_error(request: Request, exc: ShopError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    def shop_of(request: Request) -> Shop:
        shop: Shop = request.app.state.shop
        return shop

    @app.post("/login")
    async def login(body: LoginBody, request: Request) -> dict[str, str]:
        shop = shop_of(request)
        try:
            session = await shop.minipay.call("POST", "/v1/sessions", {"code": body.code})
        except MinipayError as exc:
            raise ShopError(401, "login_failed", "WeChat could not log you in. Please try again.") from exc
        token = secrets.token_urlsafe(32)
        with shop.db:
            shop.db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?)",
                (hashlib.sha256(token.encode()).hexdigest(), session["openid"], int(time.time())),
            )
        return {"token": token}

    @app.get("/products")
    async def products() -> dict[str, Any]:
        data = [{"id": k, "name": n, "price": p, "currency": settings.currency} for k, (n, p) in PRODUCTS.items()]
        return {"data": data}

    @app.post("/orders", status_code=201)
    async def create_order(
        body: OrderBody, request: Request, authorization: str | None = Header(default=None)
    ) -> dict[str, Any]:
        shop = shop_of(request)
        openid = shop.user(authorization)
        if body.product_id not in PRODUCTS:
            raise ShopError(404, "product_not_found", "This product is no longer sold.")
        name, price = PRODUCTS[body.product_id]
        order_id = "ord" + secrets.token_hex(12)  # also the out_trade_no: letters and digits, <= 32
        with shop.db:
            shop.db.execute(
                "INSERT INTO orders (id, openid, product_id, description, amount, currency, status, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (order_id, openid, body.product_id, name, price, settings.currency, int(time.time())),
            )
        payment_body = {
            "amount": price,
            "currency": settings.currency,
            "description": name,
            "openid": openid,
            "out_trade_no": order_id,
            "metadata": {"order_id": order_id},
        }
        try:
            payment = await shop.minipay.call("POST", "/v1/payments", payment_body, **{"Idempotency-Key": order_id})
        except MinipayError as exc:
            raise ShopError(502, "payment_not_created", "The payment could not be started. Please try again.") from exc
        with shop.db:
            shop.db.execute("UPDATE orders SET payment_id = ? WHERE id = ?", (payment["id"], order_id))
        return public(shop.order(order_id, openid), payment["pay_params"])

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str, request: Request, authorization: str | None = Header(default=None)) -> Any:
        shop = shop_of(request)
        openid = shop.user(authorization)
        order = shop.order(order_id, openid)
        if order["status"] == "pending" and order["payment_id"]:
            # The webhook may be late (or the endpoint down): ask Minipay, which WeChat notified.
            try:
                payment = await shop.minipay.call("GET", f"/v1/payments/{order['payment_id']}")
            except (MinipayError, ShopError):
                pass  # the stored status stands; the mini program asks again
            else:
                with shop.db:
                    shop.apply_payment(payment)
            order = shop.order(order_id, openid)
        return public(order)

    @app.post("/orders/{order_id}/pay-params")
    async def pay_params(order_id: str, request: Request, authorization: str | None = Header(default=None)) -> Any:
        shop = shop_of(request)
        order = shop.order(order_id, shop.user(authorization))
        if order["status"] != "pending" or not order["payment_id"]:
            raise ShopError(409, "order_not_payable", f"This order is {order['status']} and cannot be paid again.")
        try:
            payment = await shop.minipay.call("POST", f"/v1/payments/{order['payment_id']}/pay-params")
        except MinipayError as exc:
            raise ShopError(409, "order_not_payable", "This order can no longer be paid. Please order again.") from exc
        with shop.db:
            shop.apply_payment(payment)
        order = shop.order(order_id, order["openid"])
        if payment.get("pay_params") is None:
            raise ShopError(409, "order_not_payable", f"This order is {order['status']} and cannot be paid again.")
        return public(order, payment["pay_params"])

    @app.post(WEBHOOK_PATH)
    async def webhook(request: Request, minipay_signature: str = Header(default="")) -> JSONResponse:
        shop = shop_of(request)
        body = await request.body()
        try:
            verify_signature(body, minipay_signature, shop.webhook_secret or "", tolerance=settings.webhook_tolerance)
        except WebhookSignatureError as exc:
            log.warning("webhook refused: %s", exc)
            return JSONResponse({"error": {"code": "bad_signature", "message": str(exc)}}, status_code=400)
        event = json.loads(body)
        data = event.get("data") or {}
        payment = data if data.get("object") == "payment" else data.get("payment")
        with shop.db:  # the event id and its effect in one transaction: each event is applied once
            fresh = shop.db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?)", (event["id"], event["type"], int(time.time()))
            ).rowcount
            if fresh and isinstance(payment, dict):
                shop.apply_payment(payment)
        return JSONResponse({"received": True, "duplicate": not fresh})

    return app
