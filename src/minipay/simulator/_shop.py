"""The shop's backend behind the simulated mini program: it holds the service's API keys (never the
page), and talks to the service and the sandbox over HTTP, as a merchant's server would.

* ``login``: ``POST /sandbox/login`` (the WeChat client's ``wx.login``) -> a code; ``POST /v1/sessions``
  with the sub-merchant's key -> the payer's openid, kept in a shop session of its own.
* ``buy``: ``POST /v1/payments`` for a product of the catalogue -> the ``wx.requestPayment`` parameters.
* ``payment`` / ``refunds``: ``GET /v1/payments/{id}`` (``?sync=true`` asks WeChat), its refunds.
* ``refund``: ``POST /v1/payments/{id}/refunds`` with an Idempotency-Key.
* webhooks: an endpoint registered with the service per sub-merchant (``/try/webhook``); every
  delivery is checked (``Minipay-Signature``) and kept for the wire panel.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2

from minipay._web import WebhookSignatureError, money, verify_webhook
from minipay.protocol import DEFAULT_CURRENCIES

__all__ = ["TEST_USERS", "Product", "Shop", "ShopBackend", "ShopError", "ShopSession", "catalogue"]

#: The payers to choose from (each a WeChat user of the sandbox, with a CNY wallet).
TEST_USERS = ("alice", "bob", "carol")


class ShopError(Exception):
    """The shop backend cannot do what the page asked; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Shop:
    """A sub-merchant and its mini program, as the shop backend knows it (with its API key)."""

    sub_mch_id: str
    sub_appid: str
    currency: str
    name: str
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    amount: int  # minor units of the shop's currency
    currency: str

    @property
    def price(self) -> str:
        return money(self.amount, self.currency)


_CATALOGUE: dict[str, list[tuple[str, str, int]]] = {
    "HKD": [("jasmine", "Jasmine tea, 250 g", 3800), ("tarts", "Egg tarts, box of 6", 5250), ("set", "Tea set", 26800)],
    "JPY": [("matcha", "Matcha, 40 g", 650), ("wagashi", "Wagashi box", 1800), ("bowl", "Tea bowl", 12000)],
}


def catalogue(currency: str) -> list[Product]:
    """The shop's products, priced in its settlement currency."""
    rows = _CATALOGUE.get(currency)
    if rows is None:
        scale = 10 ** DEFAULT_CURRENCIES.exponent(currency) if currency in DEFAULT_CURRENCIES else 100
        rows = [("tea", "Tea, 250 g", 5 * scale), ("cups", "Two cups", 18 * scale), ("set", "Tea set", 60 * scale)]
    return [Product(id=pid, name=name, amount=amount, currency=currency) for pid, name, amount in rows]


@dataclass
class ShopSession:
    """What the mini program's storage holds after login: the shop's own session (a cookie here)."""

    sub_mch_id: str
    user: str
    openid: str | None = None
    payments: list[str] = field(default_factory=list)


class ShopBackend:
    """State and calls of the shop backend. ``service_transport`` / ``sandbox_transport`` replace the
    network (e.g. ``httpx2.ASGITransport(app)`` in tests)."""

    def __init__(
        self,
        shops: list[Shop],
        *,
        service_url: str,
        sandbox_url: str,
        webhook_url: str | None = None,
        service_transport: httpx2.AsyncBaseTransport | None = None,
        sandbox_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.shops = {shop.sub_mch_id: shop for shop in shops}
        self.service_url = service_url.rstrip("/")
        self.sandbox_url = sandbox_url.rstrip("/")
        self.webhook_url = webhook_url
        self._service_transport = service_transport
        self._sandbox_transport = sandbox_transport
        self._service: httpx2.AsyncClient | None = None
        self._sandbox: httpx2.AsyncClient | None = None
        self.sessions: dict[str, ShopSession] = {}
        #: payment id -> sub_mch_id (which key reads it)
        self.payments: dict[str, str] = {}
        #: sub_mch_id -> webhook secret (registered on first use)
        self.webhook_secrets: dict[str, str] = {}
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=200)

    # -- plumbing ---------------------------------------------------------------------------------------

    def service(self) -> httpx2.AsyncClient:
        if self._service is None:
            self._service = httpx2.AsyncClient(base_url=self.service_url, transport=self._service_transport, timeout=30)
        return self._service

    def sandbox(self) -> httpx2.AsyncClient:
        if self._sandbox is None:
            self._sandbox = httpx2.AsyncClient(base_url=self.sandbox_url, transport=self._sandbox_transport, timeout=30)
        return self._sandbox

    async def aclose(self) -> None:
        for client in (self._service, self._sandbox):
            if client is not None:
                await client.aclose()
        self._service = self._sandbox = None

    def shop(self, sub_mch_id: str) -> Shop:
        found = self.shops.get(sub_mch_id)
        if found is None:
            raise ShopError(f"no shop with sub_mch_id {sub_mch_id!r}", 404)
        return found

    def _auth(self, shop: Shop, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {shop.api_key}", **extra}

    async def _call(self, shop: Shop, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self.service().request(
                method, path, headers=self._auth(shop, **kwargs.pop("headers", {})), **kwargs
            )
        except httpx2.TransportError as exc:
            raise ShopError(f"the payment service did not answer ({type(exc).__name__})", 502) from None
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            found = data.get("error")
            error: dict[str, Any] = found if isinstance(found, dict) else {}
            message = error.get("message") or f"HTTP {response.status_code}"
            code = error.get("code")
            raise ShopError(f"the payment service refused: {message}" + (f" ({code})" if code else ""), 502)
        return data

    # -- sessions ---------------------------------------------------------------------------------------

    def new_session(self, sub_mch_id: str, user: str) -> tuple[str, ShopSession]:
        self.shop(sub_mch_id)
        if user not in TEST_USERS:
            raise ShopError(f"unknown test user {user!r} (one of {', '.join(TEST_USERS)})", 404)
        token = secrets.token_urlsafe(24)
        session = ShopSession(sub_mch_id=sub_mch_id, user=user)
        self.sessions[token] = session
        while len(self.sessions) > 1000:
            self.sessions.pop(next(iter(self.sessions)))
        return token, session

    async def login(self, session: ShopSession) -> str:
        """Step 1: the WeChat client's ``wx.login`` (the sandbox issues a code), then the service's
        ``POST /v1/sessions`` turns it into the payer's openid."""
        shop = self.shop(session.sub_mch_id)
        try:
            issued = await self.sandbox().post("/sandbox/login", json={"appid": shop.sub_appid, "user": session.user})
        except httpx2.TransportError as exc:
            raise ShopError(f"the sandbox did not answer ({type(exc).__name__})", 502) from None
        if issued.status_code != 200:
            raise ShopError(f"wx.login failed: {issued.json().get('error', issued.status_code)}", 502)
        answer = await self._call(shop, "POST", "/v1/sessions", json={"code": issued.json()["code"]})
        session.openid = str(answer["openid"])
        return session.openid

    # -- payments ---------------------------------------------------------------------------------------

    async def buy(self, session: ShopSession, product_id: str) -> dict[str, Any]:
        """Step 2: ``POST /v1/payments`` for one product; the answer carries the pay params."""
        shop = self.shop(session.sub_mch_id)
        if session.openid is None:
            raise ShopError("log in first: the shop needs the payer's openid", 409)
        product = next((p for p in catalogue(shop.currency) if p.id == product_id), None)
        if product is None:
            raise ShopError(f"no product {product_id!r} in this shop", 404)
        await self.ensure_webhook(shop)
        body = {
            "amount": product.amount,
            "currency": product.currency,
            "description": product.name,
            "openid": session.openid,
            "attach": f"product={product.id}",
            "metadata": {"product": product.id, "user": session.user},
        }
        key = f"try-{secrets.token_hex(8)}"
        payment = await self._call(shop, "POST", "/v1/payments", json=body, headers={"Idempotency-Key": key})
        self.payments[payment["id"]] = shop.sub_mch_id
        session.payments.append(payment["id"])
        return payment

    def _shop_of(self, payment_id: str) -> Shop:
        sub = self.payments.get(payment_id)
        if sub is None:
            raise ShopError("this shop made no such payment", 404)
        return self.shop(sub)

    async def payment(self, payment_id: str, *, sync: bool = False) -> dict[str, Any]:
        """Steps 4-5: the backend's word on the payment (``sync``: it asks WeChat first)."""
        shop = self._shop_of(payment_id)
        params = {"sync": "true"} if sync else None
        return await self._call(shop, "GET", f"/v1/payments/{payment_id}", params=params)

    async def refunds(self, payment_id: str) -> list[dict[str, Any]]:
        shop = self._shop_of(payment_id)
        data: list[dict[str, Any]] = (await self._call(shop, "GET", f"/v1/payments/{payment_id}/refunds"))["data"]
        return data

    async def refund(self, payment_id: str, amount: int) -> dict[str, Any]:
        shop = self._shop_of(payment_id)
        key = f"try-refund-{secrets.token_hex(8)}"
        return await self._call(
            shop,
            "POST",
            f"/v1/payments/{payment_id}/refunds",
            json={"amount": amount, "reason": "refund from the simulator"},
            headers={"Idempotency-Key": key},
        )

    # -- the clock and the wire -------------------------------------------------------------------------

    async def clock(self, advance: float | None = None) -> dict[str, Any]:
        try:
            if advance is None:
                response = await self.sandbox().get("/sandbox/clock")
            else:
                response = await self.sandbox().post("/sandbox/clock", json={"advance": advance})
        except httpx2.TransportError as exc:
            raise ShopError(f"the sandbox did not answer ({type(exc).__name__})", 502) from None
        if response.status_code != 200:
            raise ShopError(f"the sandbox refused: {response.json().get('error', response.status_code)}", 502)
        data: dict[str, Any] = response.json()
        return data

    async def wire(self, out_trade_no: str | None = None, payment_id: str | None = None) -> list[dict[str, Any]]:
        """The sandbox's side of the wire plus the webhooks this backend received, oldest first."""
        params = {"limit": "40"}
        if out_trade_no:
            params["out_trade_no"] = out_trade_no
        try:
            response = await self.sandbox().get("/sandbox/wire", params=params)
            events: list[dict[str, Any]] = response.json()["events"] if response.status_code == 200 else []
        except (httpx2.TransportError, ValueError, KeyError):
            events = []
        hooks = [w for w in self.webhooks if (not payment_id or w.get("payment_id") == payment_id)]
        merged = [*events, *hooks]
        # A webhook's time has whole seconds only: within one second it follows the WeChat traffic
        # that caused it (the sort is stable, so the sandbox's own order stays).
        merged.sort(key=lambda e: (_instant(e.get("at")).replace(microsecond=0), e.get("type") == "webhook"))
        return merged[-40:]

    # -- webhooks ---------------------------------------------------------------------------------------

    async def ensure_webhook(self, shop: Shop) -> None:
        """Register ``webhook_url`` with the service for this sub-merchant (once per run; an endpoint
        left by an earlier run is removed: its secret was only shown to that run)."""
        if self.webhook_url is None or shop.sub_mch_id in self.webhook_secrets:
            return
        listed = await self._call(shop, "GET", "/v1/webhook-endpoints")
        for endpoint in listed.get("data", []):
            if endpoint.get("url") == self.webhook_url:
                await self._call(shop, "DELETE", f"/v1/webhook-endpoints/{endpoint['id']}")
        created = await self._call(shop, "POST", "/v1/webhook-endpoints", json={"url": self.webhook_url})
        self.webhook_secrets[shop.sub_mch_id] = str(created["secret"])

    def receive_webhook(self, body: bytes, header: str) -> str | None:
        """Check and keep one delivery; None when accepted, else why it was refused."""
        problem: str | None = "no webhook endpoint registered"
        for secret in self.webhook_secrets.values():
            try:
                verify_webhook(body, header, secret)  # t= is real time, within five minutes
            except WebhookSignatureError as exc:
                problem = str(exc)
            else:
                problem = None
                break
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        # data is the payment (or the refund, which names its payment_id) as the API shows it.
        data = event.get("data") if isinstance(event, dict) else None
        payment_id = None
        if isinstance(data, dict):
            payment_id = data.get("payment_id") if data.get("object") == "refund" else data.get("id")
        # The event's own time is the service's clock (the sandbox's virtual one), like the
        # rest of the wire; the signature's t= is real time.
        created = event.get("created") if isinstance(event, dict) else None
        at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else datetime.now(UTC)
        self.webhooks.append(
            {
                "type": "webhook",
                "at": at.isoformat(),
                "event_type": event.get("type") if isinstance(event, dict) else None,
                "payment_id": payment_id,
                "body": body.decode("utf-8", "replace")[:16_384],
                "signature": header,
                "verdict": "refused: " + problem if problem else "accepted",
            }
        )
        return problem


def _instant(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
