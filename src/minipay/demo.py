"""``minipay demo``: the whole flow in one command, against the sandbox, on the virtual clock.

A composition root (like ``minipay serve``): it is the one place besides the CLI that wires the
sandbox and the service together. It starts, in this process, on free loopback ports:

* the sandbox (``minipay.sandbox``), its virtual clock starting today at 10:00 China time;
* the payment service (``minipay.server``) on a temporary SQLite database, its clock *being* the
  sandbox's virtual clock;
* a tiny webhook receiver (the merchant's systems) that checks every ``Minipay-Signature`` with
  ``verify_webhook``, as the docs tell a merchant to;

and plays a mini program user through login, payment, notification, webhook, query, partial
refund, refund notification, a lost notification recovered by the worker's active query, an
expired payment closed, and the next day's bill reconciled with zero discrepancies. The worker
runs in-process and is driven explicitly after each move of the clock, so every run is the same.
Every check must hold: the result is ``True`` (exit 0) or a clear message (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

__all__ = ["DemoFailed", "run_demo"]


class DemoFailed(Exception):
    """A check of the demo did not hold."""


# -- output ----------------------------------------------------------------------------------------


def _mask(value: str) -> str:
    return value[:4] + "…" + value[-4:] if len(value) > 12 else "…"


#: Fields left out of the printed bodies (they are in the API, just not interesting here).
_QUIET = frozenset(
    {"object", "metadata", "attach", "created_at", "updated_at", "sub_appid", "last_error", "description", "openid"}
)


def _trim(value: Any, depth: int = 0) -> Any:
    """Bodies for display: empty and routine fields left out, long strings shortened, secrets masked."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is None or ((depth > 0 or len(value) > 6) and k in _QUIET):
                continue
            if k in ("secret", "api_key", "app_secret", "paySign") and isinstance(v, str):
                out[k] = _mask(v)
            else:
                out[k] = _trim(v, depth + 1)
        return out
    if isinstance(value, list):
        return [_trim(v, depth + 1) for v in value[:6]] + (["…"] if len(value) > 6 else [])
    if isinstance(value, str) and len(value) > 64:
        return value[:60] + "…"
    return value


class Narrator:
    """Prints the steps with rich: what was sent, what came back, how long it took, what was checked."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.checks = 0
        self.started = time.perf_counter()
        self.current = "starting"  # the step running now, named in a failure message

    def step(self, number: int, title: str, why: str) -> None:
        self.current = f"step {number} ({title})"
        self.console.rule(f"[bold cyan]{number}. {title}")
        self.console.print(f"[dim]{why}[/dim]")

    def note(self, text: str) -> None:
        self.console.print(f"  {text}")

    def sent(self, who: str, method: str, path: str, body: Any = None) -> None:
        shown = f" {json.dumps(_trim(body), ensure_ascii=False)}" if body is not None else ""
        self.console.print(f"  [yellow]→ {who}[/yellow] {method} {path}{shown}", highlight=False, soft_wrap=True)

    def got(self, status: int, body: Any, elapsed: float) -> None:
        colour = "green" if status < 400 else "red"
        shown = json.dumps(_trim(body), ensure_ascii=False) if body is not None else ""
        self.console.print(
            f"  [{colour}]← {status}[/{colour}] [dim]({elapsed * 1000:.0f} ms)[/dim] {shown}",
            highlight=False,
            soft_wrap=True,
        )

    def check(self, condition: bool, what: str, detail: Any = None) -> None:
        if not condition:
            self.console.print(f"  [bold red]✗ {what}[/bold red]")
            message = what if detail is None else f"{what} (got: {detail})"
            raise DemoFailed(message)
        self.checks += 1
        self.console.print(f"  [green]✓[/green] {what}")


# -- the pieces ------------------------------------------------------------------------------------


def _china_morning() -> datetime:
    """Today (China time) at 10:00: bills of yesterday are ready, and nothing straddles midnight."""
    from minipay.protocol import CHINA_TZ

    today = datetime.now(CHINA_TZ).date()
    return datetime(today.year, today.month, today.day, 10, 0, tzinfo=CHINA_TZ)


class SandboxClock:
    """The service's clock in the demo: the sandbox's virtual clock itself (one time for everyone)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def now(self) -> datetime:
        now: datetime = self._backend.now()
        return now


@dataclass
class Receiver:
    """The merchant's webhook endpoint: verifies ``Minipay-Signature``, records the events."""

    clock: SandboxClock
    secret: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def verify(self, body: bytes, header: str) -> str | None:
        """None when the signature holds, else why not. Freshness is checked against the wall clock,
        as a real receiver checks it (the service signs with real time even on the sandbox's clock)."""
        from minipay.server.webhooks import WebhookSignatureError, verify_webhook

        try:
            verify_webhook(body, header, self.secret)
        except WebhookSignatureError as exc:
            return str(exc)
        return None

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def hook(request: Request) -> JSONResponse:
            body = await request.body()
            problem = self.verify(body, request.headers.get("minipay-signature", ""))
            if problem is not None:
                self.rejected.append(problem)
                return JSONResponse({"error": problem}, status_code=400)
            self.events.append(json.loads(body))
            return JSONResponse({"received": True})

        return Starlette(routes=[Route("/hooks", hook, methods=["POST"])])


def _bind() -> tuple[socket.socket, str]:
    """A listening socket on a free loopback port, and its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.asynccontextmanager
async def _serve(
    app: Any, sock: socket.socket, *, lifespan: Literal["auto", "on", "off"] = "off", tls: Any = None
) -> AsyncIterator[None]:
    """Serve an ASGI app on ``sock`` inside this event loop (uvicorn), until the block ends.

    ``tls`` (the sandbox's ``TLSMaterial``): HTTPS asking for a client certificate, with the
    sandbox's protocol class, which hands the certificate to the app (mutual TLS on /secapi)."""
    import uvicorn

    options: dict[str, Any] = {}
    if tls is not None:
        from minipay.sandbox import SandboxH11Protocol

        options = {"http": SandboxH11Protocol, **tls.uvicorn_options()}
    config = uvicorn.Config(
        app, log_level="warning", lifespan=lifespan, timeout_graceful_shutdown=2, access_log=False, **options
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            problem = task.exception() if task.done() else "no answer within 10 s"
            raise DemoFailed(f"a server could not start: {problem}")
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
        sock.close()


class _Http:
    """Timed JSON calls, narrated."""

    def __init__(self, narrator: Narrator, client: Any, who: str, headers: dict[str, str] | None = None) -> None:
        self.n = narrator
        self.client = client
        self.who = who
        self.headers = headers or {}

    async def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None, quiet: bool = False
    ) -> tuple[int, Any]:
        if not quiet:
            self.n.sent(self.who, method, path, body)
        started = time.perf_counter()
        response = await self.client.request(method, path, json=body, headers={**self.headers, **(headers or {})})
        elapsed = time.perf_counter() - started
        try:
            data = response.json()
        except ValueError:
            data = response.text
        if not quiet:
            self.n.got(response.status_code, data, elapsed)
        return response.status_code, data


# -- the demo --------------------------------------------------------------------------------------


async def run_demo(
    *, console: Any = None, seed: int = 42, faults: Sequence[dict[str, Any]] = (), workdir: Path | None = None
) -> bool:
    """Play the whole flow; True when every check held. ``faults`` are sandbox faults set first
    (``{"endpoint", "fault", "times"}``), to see how the system copes (or how the demo fails)."""
    from rich.console import Console

    console = console or Console()
    narrator = Narrator(console)
    try:
        with tempfile.TemporaryDirectory(prefix="minipay-demo-") as tmp:
            await _play(narrator, seed=seed, faults=faults, workdir=workdir or Path(tmp))
    except DemoFailed as exc:
        from rich.markup import escape

        console.print(f"\n[bold red]DEMO FAILED:[/bold red] {escape(str(exc))}", highlight=False)
        return False
    except Exception as exc:  # an error nobody checked for (WeChat kept failing, a bug): still a clear verdict
        from rich.markup import escape

        problem = escape(f"{narrator.current} raised {type(exc).__name__}: {exc}")
        console.print(f"\n[bold red]DEMO FAILED:[/bold red] {problem}", highlight=False)
        return False
    elapsed = time.perf_counter() - narrator.started
    console.rule("[bold green]done")
    console.print(f"[bold green]All {narrator.checks} checks held[/bold green] in {elapsed:.1f} s (real time).")
    return True


async def _play(n: Narrator, *, seed: int, faults: Sequence[dict[str, Any]], workdir: Path) -> None:
    import httpx2

    from minipay.protocol import CHINA_TZ
    from minipay.sandbox import SandboxConfig, generate_tls_material
    from minipay.sandbox import create_app as create_sandbox_app
    from minipay.serve import sandbox_settings
    from minipay.server.api import create_app
    from minipay.server.bootstrap import build_container
    from minipay.server.worker import BILL_RECONCILE, Worker, WorkerConfig
    from minipay.server.worker.api import build_router

    start = _china_morning()
    # The strict profile (as WeChat behaves live): notifications arrive after the cashier's answer,
    # and /secapi/* (refunds) demands the institution's client certificate over mutual TLS.
    world = SandboxConfig.default().with_profile("strict")
    sandbox_app = create_sandbox_app(world, seed=seed, start=start)
    material = generate_tls_material(workdir / "tls", mch_id=world.institutions[0].mch_id)
    sandbox_app.state.sandbox.tls_files = material.to_json()
    backend = sandbox_app.state.sandbox
    clock = SandboxClock(backend)
    receiver = Receiver(clock)
    config = backend.config
    inst = config.institutions[0]
    sub = inst.sub_merchants[0]
    keys = {"admin": "adm_" + secrets.token_hex(20)}
    keys.update({s.sub_mch_id: "sk_" + secrets.token_hex(20) for i in config.institutions for s in i.sub_merchants})

    async with contextlib.AsyncExitStack() as stack:
        sandbox_sock, sandbox_url = _bind()
        await stack.enter_async_context(_serve(sandbox_app, sandbox_sock))
        # The service talks to WeChat over HTTPS, as live: the sandbox's second, TLS listener.
        wechat_sock, wechat_url = _bind()
        wechat_url = wechat_url.replace("http://", "https://")
        await stack.enter_async_context(_serve(sandbox_app, wechat_sock, tls=material))
        receiver_sock, receiver_url = _bind()
        await stack.enter_async_context(_serve(receiver.app(), receiver_sock))
        # The service's settings name its own URL (WeChat calls it back there): bind first, then build.
        service_sock, service_url = _bind()
        database = workdir / "minipay-demo.db"
        settings = sandbox_settings(
            config,
            sandbox_url=wechat_url,
            service_url=service_url,
            database_url=f"sqlite+aiosqlite:///{database.as_posix()}",
            keys=keys,
            tls=material,
        ).model_copy(update={"webhook_dispatch": False})  # the worker delivers webhooks
        container = build_container(settings, clock=clock)
        service_app = create_app(settings, container=container, routers=[build_router()])
        # With its lifespan: migrations at start, the container closed at the end.
        await stack.enter_async_context(_serve(service_app, service_sock, lifespan="on"))
        worker = Worker.from_container(container, config=WorkerConfig(), name="demo-worker")
        stack.push_async_callback(worker.aclose)

        http_sandbox = await stack.enter_async_context(httpx2.AsyncClient(base_url=sandbox_url, timeout=10))
        http_service = await stack.enter_async_context(httpx2.AsyncClient(base_url=service_url, timeout=10))
        wechat = _Http(n, http_sandbox, "sandbox")
        merchant = _Http(n, http_service, "service", {"Authorization": f"Bearer {keys[sub.sub_mch_id]}"})
        admin = _Http(n, http_service, "service", {"Authorization": f"Bearer {keys['admin']}"})

        async def advance(seconds: float, why: str) -> None:
            status, data = await wechat.call("POST", "/sandbox/clock", {"advance": seconds}, quiet=True)
            n.check(status == 200, f"virtual clock advanced {timedelta(seconds=seconds)} ({why})", data)
            n.note(f"[dim]virtual time now {datetime.fromisoformat(data['china_time']):%Y-%m-%d %H:%M:%S} China[/dim]")

        async def tick(why: str, *, bills: bool = False) -> list[tuple[str, str, Any]]:
            started = time.perf_counter()
            results = []
            sent = 0
            for summary in await worker.run_until_idle():
                results.extend(summary.results)
                sent += summary.webhooks
            elapsed = (time.perf_counter() - started) * 1000
            n.note(f"[magenta]worker[/magenta] pass ({why}): {sent} webhook(s) sent [dim]({elapsed:.0f} ms)[/dim]")
            for kind, key, result in results:
                # Earlier days' (empty) bills are reconciled on the first pass too; shown in step 10.
                if kind != BILL_RECONCILE or bills:
                    n.note(f"  [magenta]job[/magenta] {kind} {key}: {json.dumps(result)}")
            return results

        # -- 0. the stage ------------------------------------------------------------------------------
        n.step(0, "The stage", "Everything runs in this process, on loopback ports, on the sandbox's virtual clock.")
        n.note(f"sandbox (WeChat Pay Global + Mini Program login)  {sandbox_url}")
        n.note(f"payment service (temporary SQLite {database.name})  {service_url}")
        n.note(f"merchant webhook receiver                          {receiver_url}/hooks")
        n.note(f"institution appid={inst.appid} mch_id={inst.mch_id}")
        n.note(f"sub-merchant {sub.sub_mch_id} ({sub.settlement_currency}), mini program {sub.sub_appid}")
        n.note(f"virtual time {clock.now().astimezone(CHINA_TZ):%Y-%m-%d %H:%M:%S} China")
        status, _ = await merchant.call("GET", "/readyz", quiet=True)
        n.check(status == 200, "the service is ready (database migrated)")
        for fault in faults:
            status, data = await wechat.call("POST", "/sandbox/faults", dict(fault))
            n.check(status == 200, f"sandbox fault scripted: {fault}", data)

        # -- 1. webhook endpoint -----------------------------------------------------------------------
        n.step(1, "The merchant registers a webhook endpoint", "Events are signed with the endpoint's secret.")
        status, endpoint = await merchant.call("POST", "/v1/webhook-endpoints", {"url": f"{receiver_url}/hooks"})
        n.check(
            status in (200, 201) and bool(endpoint.get("secret")), "endpoint created, secret returned once", endpoint
        )
        receiver.secret = endpoint["secret"]

        # -- 2. login ----------------------------------------------------------------------------------
        n.step(2, "Login", "wx.login() gives the mini program a one-time code; the backend trades it for the openid.")
        status, login = await wechat.call("POST", "/sandbox/login", {"appid": sub.sub_appid, "user": "alice"})
        n.check(status == 200 and "code" in login, "the mini program got a js_code", login)
        status, session = await merchant.call("POST", "/v1/sessions", {"code": login["code"]})
        n.check(
            status == 200 and session.get("openid") == login["openid"], "the service resolved alice's openid", session
        )
        n.check("session_key" not in session, "the session_key is never returned")
        openid = session["openid"]

        # -- 3. create a payment ----------------------------------------------------------------------
        n.step(
            3,
            "Create a payment",
            "The service records it, calls unified order, and signs wx.requestPayment parameters.",
        )
        idem = {"Idempotency-Key": secrets.token_hex(8)}
        body = {"amount": 2500, "currency": sub.settlement_currency, "description": "Flat white x2", "openid": openid}
        status, payment = await merchant.call("POST", "/v1/payments", body, headers=idem)
        n.check(status == 201, "payment created", payment)
        n.check(payment.get("status") == "pending" and bool(payment.get("pay_params")), "pending, with pay params")
        status, again = await merchant.call("POST", "/v1/payments", body, headers=idem, quiet=True)
        n.check(again.get("id") == payment["id"], "the same Idempotency-Key returns the same payment (no double order)")

        # -- 4. pay -------------------------------------------------------------------------------------
        n.step(4, "Pay", "wx.requestPayment in the sandbox's cashier; WeChat then notifies the service.")
        status, paid = await wechat.call("POST", "/sandbox/pay", {**payment["pay_params"], "outcome": "success"})
        n.check(paid.get("errMsg") == "requestPayment:ok", "requestPayment:ok", paid)
        status, early = await merchant.call("GET", f"/v1/payments/{payment['id']}", quiet=True)
        n.check(
            early.get("status") == "pending",
            "the cashier answered first: the backend has not been notified yet (as live)",
            early.get("status"),
        )
        attempts: list[dict[str, Any]] = []
        waited = time.perf_counter()
        while not attempts and time.perf_counter() - waited < 10:
            await asyncio.sleep(0.2)
            status, notes = await wechat.call(
                "GET", f"/sandbox/notifications?out_trade_no={payment['out_trade_no']}", quiet=True
            )
            attempts = notes["notifications"][0]["attempts"] if notes.get("notifications") else []
        n.note(f"[dim]the notification arrived {time.perf_counter() - waited:.1f} s (real) after the answer[/dim]")
        n.check(
            bool(attempts) and attempts[0]["verdict"] == "ack",
            "the notification was delivered and acknowledged (SUCCESS XML)",
            attempts,
        )

        # -- 5. the payment succeeded, the merchant is told ---------------------------------------------
        n.step(
            5,
            "Notification applied, webhook sent",
            "Applied exactly once; the outbox event goes to the merchant, signed.",
        )
        status, found = await merchant.call("GET", f"/v1/payments/{payment['id']}")
        n.check(found.get("status") == "succeeded", "payment succeeded", found.get("status"))
        n.check(found.get("transaction_id") == paid.get("transaction_id"), "WeChat's transaction_id recorded")
        await tick("delivers webhooks")
        n.check(
            [e["type"] for e in receiver.events] == ["payment.succeeded"] and not receiver.rejected,
            "the receiver got payment.succeeded and verified its Minipay-Signature",
            [e["type"] for e in receiver.events] or receiver.rejected,
        )

        # -- 6. query -----------------------------------------------------------------------------------
        n.step(
            6,
            "Query",
            "After wx.requestPayment the mini program asks the backend (never trusting the client); the backend "
            "asks WeChat while a payment is open (?sync=true), and anyone can ask WeChat through the SDK.",
        )
        status, synced = await merchant.call("GET", f"/v1/payments/{payment['id']}?sync=true")
        n.check(synced.get("status") == "succeeded", "the backend answers succeeded", synced.get("status"))
        n.sent("WeChat (SDK orderquery)", "POST", "/pay/orderquery", {"out_trade_no": payment["out_trade_no"]})
        started = time.perf_counter()
        settings_sub = settings.sub_merchant(sub.sub_mch_id)
        assert settings_sub is not None
        wx = await container.gateway.query_order(settings_sub, payment["out_trade_no"])
        shown = (
            None if wx is None else {"trade_state": wx.trade_state, "total_fee": wx.total_fee, "fee_type": wx.fee_type}
        )
        n.got(200, shown, time.perf_counter() - started)
        n.check(
            wx is not None and wx.trade_state == "SUCCESS" and wx.total_fee == 2500,
            "WeChat says SUCCESS for the same amount",
            shown,
        )

        # -- 7. partial refund ---------------------------------------------------------------------------
        n.step(
            7, "Partial refund", "Accepted by WeChat (PROCESSING), finished later and notified (encrypted req_info)."
        )
        status, refund = await merchant.call(
            "POST", f"/v1/payments/{payment['id']}/refunds", {"amount": 1000, "reason": "one cup spilt"},
            headers={"Idempotency-Key": secrets.token_hex(8)},
        )  # fmt: skip
        n.check(status == 201 and refund.get("status") in ("processing", "pending"), "refund accepted", refund)
        await advance(60, "WeChat finishes the refund")
        status, refund = await merchant.call("GET", f"/v1/refunds/{refund['id']}")
        n.check(
            refund.get("status") == "succeeded", "the refund notification marked it succeeded", refund.get("status")
        )
        status, found = await merchant.call("GET", f"/v1/payments/{payment['id']}")
        n.check(found.get("status") == "partially_refunded", "payment partially_refunded", found.get("status"))
        await tick("delivers webhooks, cross-checks the refund")
        n.check(receiver.events[-1]["type"] == "refund.succeeded", "the receiver got refund.succeeded")
        status, journal = await wechat.call("GET", "/sandbox/requests?endpoint=refund", quiet=True)
        certs = [r.get("client_cert") for r in journal["requests"]]
        n.check(
            bool(certs) and all(cn == inst.mch_id for cn in certs),
            f"the refund went over mutual TLS with the institution's client certificate (CN {inst.mch_id})",
            certs,
        )

        # -- 8. a lost notification ----------------------------------------------------------------------
        n.step(
            8,
            "A notification that never arrives",
            "WeChat's delivery is not guaranteed: the worker's active query recovers it.",
        )
        body = {"amount": 1800, "currency": sub.settlement_currency, "description": "Croissant", "openid": openid}
        status, lost = await merchant.call(
            "POST", "/v1/payments", body, headers={"Idempotency-Key": secrets.token_hex(8)}
        )
        n.check(status == 201, "second payment created", lost)
        status, paid2 = await wechat.call("POST", "/sandbox/pay", {**lost["pay_params"], "notify": "never"})
        n.check(paid2.get("errMsg") == "requestPayment:ok", "paid at WeChat, notification suppressed")
        status, found = await merchant.call("GET", f"/v1/payments/{lost['id']}")
        n.check(found.get("status") == "pending", "the service does not know yet", found.get("status"))
        await advance(60, "the active query's first delay")
        results = await tick("active query")
        status, found = await merchant.call("GET", f"/v1/payments/{lost['id']}")
        n.check(found.get("status") == "succeeded", "recovered by the active query", found.get("status"))
        n.check(
            any(r[1] == lost["id"] and r[2].get("via") == "query" for r in results),
            "applied via orderquery, like a notification",
        )

        # -- 9. an expired payment -----------------------------------------------------------------------
        n.step(
            9,
            "A payment nobody pays",
            "Past its expiry the worker closes it at WeChat (closeorder), so it can no longer be paid.",
        )
        body = {
            "amount": 900,
            "currency": sub.settlement_currency,
            "description": "Muffin",
            "openid": openid,
            "expires_in": 600,
        }
        status, unpaid = await merchant.call(
            "POST", "/v1/payments", body, headers={"Idempotency-Key": secrets.token_hex(8)}
        )
        n.check(status == 201, "third payment created, expires in 10 minutes", unpaid.get("expires_at"))
        await advance(600, "past its expiry")
        await tick("expiry")
        status, found = await merchant.call("GET", f"/v1/payments/{unpaid['id']}")
        n.check(found.get("status") == "closed", "closed", found.get("status"))
        status, journal = await wechat.call(
            "GET", f"/sandbox/requests?endpoint=closeorder&out_trade_no={unpaid['out_trade_no']}", quiet=True
        )
        n.check([r["result_code"] for r in journal["requests"]] == ["SUCCESS"], "closeorder answered SUCCESS at WeChat")
        status, late = await wechat.call("POST", "/sandbox/pay", {**unpaid["pay_params"]})
        n.check(late.get("errMsg") != "requestPayment:ok", "paying it now fails at WeChat", late.get("errMsg"))
        n.check(receiver.events[-1]["type"] == "payment.closed", "the receiver got payment.closed")

        # -- 10. the next day's bill ---------------------------------------------------------------------
        n.step(
            10,
            "The next day: reconciliation",
            "WeChat's T+1 bill is compared with the ledger; every difference would be a discrepancy row.",
        )
        day = start.date()
        next_morning = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=CHINA_TZ) + timedelta(
            hours=10, minutes=5
        )
        status, data = await wechat.call("POST", "/sandbox/clock", {"set": next_morning.isoformat()}, quiet=True)
        n.check(status == 200, "virtual clock moved to the next morning", data)
        n.note(f"[dim]virtual time now {datetime.fromisoformat(data['china_time']):%Y-%m-%d %H:%M:%S} China[/dim]")
        await tick("downloads the bills", bills=True)
        status, report = await admin.call("GET", f"/v1/reconciliation/{day.isoformat()}")
        runs = {r["sub_mch_id"]: r for r in report.get("runs", [])}
        mine = runs.get(sub.sub_mch_id, {})
        n.check(mine.get("status") == "ok", f"bill of {day} for {sub.sub_mch_id} reconciled", mine)
        n.check(
            mine.get("bill_rows") == 3 and mine.get("ledger_rows") == 3, "3 rows on both sides: 2 payments + 1 refund"
        )
        n.check(report.get("discrepancies") == [], "zero discrepancies", report.get("discrepancies"))
        n.check(not receiver.rejected, "every webhook signature verified", receiver.rejected)

        from rich.table import Table

        from minipay.protocol import format_major

        status, listing = await merchant.call("GET", "/v1/payments?limit=10", quiet=True)
        table = Table(title="The ledger at the end", title_justify="left")
        for column in ("out_trade_no", "amount", "status", "refunded", "transaction_id"):
            table.add_column(column)
        for p in reversed(listing.get("data", [])):
            amount = f"{format_major(p['amount'], p['currency'])} {p['currency']}"
            refunded = format_major(p["amount_refunded"], p["currency"]) if p.get("amount_refunded") else ""
            table.add_row(p["out_trade_no"], amount, p["status"], refunded, p.get("transaction_id") or "")
        n.console.print(table)
        events = ", ".join(e["type"] for e in receiver.events)
        n.note(f"webhooks received and verified: {events}")
