"""``minipay serve``: a composition root that may wire the sandbox and the service together.

With a configuration (``--config FILE`` / ``MINIPAY_CONFIG`` / ``MINIPAY_*`` env naming an
institution) it runs the service alone. Without one it runs in **sandbox mode**: the sandbox on a
second loopback port with a matching world, one clock for both (the service reads the sandbox's
virtual clock, which runs in real time until ``POST /sandbox/clock`` moves it), a local SQLite
file, stable dev API keys (kept in ``.minipay/dev-credentials.json`` next to the database), and it
prints the URLs and keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import socket
from collections.abc import Container, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minipay.server.settings import Settings

__all__ = [
    "SandboxWorld",
    "ServePlan",
    "free_port",
    "free_ports",
    "plan_serve",
    "run_in_loop",
    "run_serve",
    "sandbox_settings",
    "simulator_router",
]


_SECRET_QUERY = re.compile(r"(secret|js_code)=[^&\s]*")


def _redact_query_secrets(record: logging.LogRecord) -> bool:
    if isinstance(record.args, tuple):
        record.args = tuple(_SECRET_QUERY.sub(r"\1=<redacted>", a) if isinstance(a, str) else a for a in record.args)
    return True


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_ports() -> Container[int]:
    """The ports the kernel hands to outgoing connections (Linux's default when it cannot be read)."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` now, for servers another process is about to start.

    A port the kernel picks (bind to port 0) comes from its ephemeral range, the range it also
    gives every outgoing connection: in the second or two before the other process binds it, any
    connection made on the machine can take it, and the server fails with "address already in
    use". These are picked outside that range, checked bindable while held together, and never
    handed out twice by this process.
    """
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(1024, 65536) if p not in ephemeral and p not in _handed_out]
    random.shuffle(candidates)
    held: list[socket.socket] = []
    try:
        for port in candidates:
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        while len(held) < count:  # every port is ephemeral on this machine: the kernel's pick is all there is
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            held.append(sock)
        ports = [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()
    _handed_out.update(ports)
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One port from :func:`free_ports`."""
    return free_ports(1, host)[0]


@dataclass(frozen=True)
class SandboxWorld:
    """The dev credentials of sandbox mode (what ``--credentials-out`` writes)."""

    service_url: str
    sandbox_url: str
    admin_api_key: str
    sub_merchants: list[dict[str, str]]

    def to_json(self) -> dict[str, Any]:
        return {
            "service_url": self.service_url,
            "sandbox_url": self.sandbox_url,
            "admin_api_key": self.admin_api_key,
            "sub_merchants": self.sub_merchants,
        }


def _dev_keys(state_dir: Path, sub_mch_ids: Sequence[str]) -> dict[str, str]:
    """Stable dev keys: generated once, then read back (they belong with the local database)."""
    path = state_dir / "dev-credentials.json"
    keys: dict[str, str] = {}
    if path.is_file():
        keys = json.loads(path.read_text())
    changed = False
    for name in ["admin", *sub_mch_ids]:
        if name not in keys:
            keys[name] = ("adm_" if name == "admin" else "sk_") + secrets.token_hex(20)
            changed = True
    if changed:
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(keys, indent=2))
        path.chmod(0o600)
    return keys


def sandbox_settings(
    config: Any,
    *,
    sandbox_url: str,
    service_url: str,
    database_url: str,
    keys: dict[str, str],
    tls: Any = None,
) -> Settings:
    """Service settings matching a sandbox world (``minipay.sandbox.SandboxConfig``).

    ``tls`` (a ``minipay.sandbox.TLSMaterial``; ``sandbox_url`` then its HTTPS listener): the first
    institution trusts the sandbox's CA and sends its client certificate (``.p12``), so refunds go
    over mutual TLS as they do live."""
    institutions = []
    subs = []
    for index, inst in enumerate(config.institutions):
        name = "sandbox" if index == 0 else f"sandbox{index}"
        entry: dict[str, Any] = {
            "name": name,
            "appid": inst.appid,
            "mch_id": inst.mch_id,
            "api_key": inst.api_key,
            "sign_type": "MD5",
            "base_url": sandbox_url,
            "login_base_url": sandbox_url,
        }
        if tls is not None:
            entry["ca_cert"] = tls.ca_cert
            if index == 0:
                entry.update(p12=tls.client_p12, p12_password=tls.client_p12_password)
        institutions.append(entry)
        for sub in inst.sub_merchants:
            subs.append(
                {
                    "institution": name,
                    "sub_mch_id": sub.sub_mch_id,
                    "sub_appid": sub.sub_appid,
                    "app_secret": sub.app_secret,
                    "currency": sub.settlement_currency,
                    "api_keys": [keys[sub.sub_mch_id]],
                }
            )
    return Settings(
        database_url=database_url,
        public_base_url=service_url,
        admin_api_keys=[keys["admin"]],
        institutions=institutions,
        sub_merchants=subs,
        allow_local_notify_url=True,
        allow_private_webhook_urls=True,
    )


@dataclass
class ServePlan:
    """What ``minipay serve`` will run: the service settings, and in sandbox mode the sandbox app."""

    settings: Settings
    sandbox_app: Any = None
    sandbox_port: int | None = None
    world: SandboxWorld | None = None
    #: In sandbox mode the sandbox's virtual clock: the service's clock port reads it, so
    #: ``POST /sandbox/clock`` moves the service's expiries, active queries and bill days too.
    clock: Any = None
    #: In sandbox mode (strict): the sandbox's HTTPS listener (mutual TLS for ``/secapi``).
    sandbox_tls_port: int | None = None
    sandbox_tls: Any = None


def plan_serve(
    settings: Settings | None,
    *,
    port: int = 8000,
    sandbox_port: int = 8001,
    sandbox_tls_port: int | None = None,
    state_dir: Path = Path(".minipay"),
    credentials_out: Path | None = None,
    echo: Any = print,
) -> ServePlan:
    """Decide the mode; in sandbox mode build the sandbox and the matching settings, print the keys."""
    if settings is not None and settings.configured:
        return ServePlan(settings=settings)
    from minipay.sandbox import SandboxConfig, load_or_generate_tls_material
    from minipay.sandbox import create_app as create_sandbox_app

    config = SandboxConfig.default().with_profile("strict")
    config = config.replace(clock={**config.clock.model_dump(), "realtime": True})
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    service_url = f"http://127.0.0.1:{port}"
    sub_ids = [s.sub_mch_id for i in config.institutions for s in i.sub_merchants]
    keys = _dev_keys(state_dir, sub_ids)
    state_dir.mkdir(parents=True, exist_ok=True)
    material = None
    tls_port = None
    if config.effective.require_client_cert:
        # Every WeChat call of the service goes to the sandbox's HTTPS listener, refunds with the
        # institution's client certificate; the control API stays on plain HTTP (curl, the README).
        tls_port = sandbox_tls_port or sandbox_port + 1
        material = load_or_generate_tls_material(state_dir / "tls", mch_id=config.institutions[0].mch_id)
    default_url = Settings.model_fields["database_url"].default
    database_url = (
        settings.database_url
        if settings is not None and settings.database_url != default_url
        else f"sqlite+aiosqlite:///{(state_dir / 'minipay.db').as_posix()}"
    )
    service_settings = sandbox_settings(
        config,
        sandbox_url=f"https://127.0.0.1:{tls_port}" if material is not None else sandbox_url,
        service_url=service_url,
        database_url=database_url,
        keys=keys,
        tls=material,
    )
    world = SandboxWorld(
        service_url=service_url,
        sandbox_url=sandbox_url,
        admin_api_key=keys["admin"],
        sub_merchants=[
            {
                "sub_mch_id": s.sub_mch_id,
                "sub_appid": s.sub_appid,
                "currency": s.currency,
                "api_key": keys[s.sub_mch_id],
            }
            for s in service_settings.sub_merchants
        ],
    )
    echo("Minipay is running in SANDBOX MODE (no configuration found).")
    echo(f"  service:  {service_url}   (OpenAPI: {service_url}/docs)")
    echo(f"  try it:   {service_url}/try   (a mini program in your browser: log in, buy, pay, refund)")
    echo(f"  sandbox:  {sandbox_url}   (dashboard: {sandbox_url}/sandbox/)")
    if material is not None:
        echo(f"  WeChat:   https://127.0.0.1:{tls_port}   (the service's WeChat calls; mutual TLS on /secapi)")
        echo(f"    CA {material.ca_cert}; institution client certificate {material.client_p12}")
    echo(f"  profile:  {config.effective.profile} (docs/sandbox.md)")
    echo(f"  database: {database_url}")
    echo(f"  sandbox state: {state_dir / 'sandbox.sqlite3'}")
    echo(f"  admin API key: {world.admin_api_key}")
    for sub in world.sub_merchants:
        echo(f"  sub-merchant {sub['sub_mch_id']} ({sub['currency']}, app {sub['sub_appid']}): {sub['api_key']}")
    if credentials_out is not None:
        credentials_out.write_text(json.dumps(world.to_json(), indent=2))
        credentials_out.chmod(0o600)
        echo(f"  credentials written to {credentials_out}")
    # The sandbox's world and orders survive a restart next to the service's database, so a
    # restarted serve still knows the orders the database holds as pending.
    sandbox_app = create_sandbox_app(config, state_file=state_dir / "sandbox.sqlite3")
    if material is not None:
        sandbox_app.state.sandbox.tls_files = material.to_json()  # shown by GET /sandbox/merchants
    return ServePlan(
        settings=service_settings,
        sandbox_app=sandbox_app,
        sandbox_port=sandbox_port,
        world=world,
        clock=sandbox_app.state.sandbox.clock,
        sandbox_tls_port=tls_port,
        sandbox_tls=material,
    )


def simulator_router(plan: ServePlan, **transports: Any) -> Any:
    """Sandbox mode's ``/try``: the mini program simulator and its shop backend, which holds the dev
    API keys and reaches the service and the sandbox over loopback HTTP (``transports``:
    ``service_transport`` / ``sandbox_transport`` replace the network in tests)."""
    from minipay.simulator import Shop, ShopBackend, build_router

    assert plan.world is not None
    assert plan.sandbox_app is not None
    names = {
        sub.sub_mch_id: sub.name or f"Merchant {sub.sub_mch_id}"
        for inst in plan.sandbox_app.state.sandbox.config.institutions
        for sub in inst.sub_merchants
    }
    shops = [
        Shop(
            sub_mch_id=sub["sub_mch_id"],
            sub_appid=sub["sub_appid"],
            currency=sub["currency"],
            name=names.get(sub["sub_mch_id"], sub["sub_mch_id"]),
            api_key=sub["api_key"],
        )
        for sub in plan.world.sub_merchants
    ]
    backend = ShopBackend(
        shops,
        service_url=plan.world.service_url,
        sandbox_url=plan.world.sandbox_url,
        webhook_url=f"{plan.world.service_url}/try/webhook",
        **transports,
    )
    return build_router(backend)


def run_in_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the event loop uvicorn itself would pick (uvloop when installed, as it is with
    ``uvicorn[standard]``): ``uvicorn.Server.serve`` only ever uses the loop it is started in."""
    from uvicorn.loops.auto import auto_loop_factory

    with asyncio.Runner(loop_factory=auto_loop_factory(use_subprocess=False)) as runner:
        runner.run(main)


async def run_serve(
    plan: ServePlan, *, host: str = "127.0.0.1", port: int = 8000, worker: bool = True, access_log: bool = True
) -> None:
    """Run the service (and in sandbox mode the sandbox, on loopback) until interrupted.

    The service writes its own access log (``minipay.access``: route-aware, no query strings);
    ``access_log=False`` leaves it off, and then no line is formatted at all. Every log line goes to
    stderr in the format of the ``log_format`` setting (:func:`minipay.server.logs.configure_logging`).
    """
    import uvicorn

    from minipay._web import freeze_startup_heap
    from minipay._web._transport import HttpProtocol
    from minipay.server.api import create_app
    from minipay.server.logs import configure_logging

    settings = plan.settings
    servers: list[uvicorn.Server] = []
    if plan.sandbox_app is not None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("sandbox mode listens on loopback only")
        from minipay.sandbox import build_server

        # The sandbox's own server: its protocol can really drop connections (faults) over TCP.
        servers.append(build_server(plan.sandbox_app, host="127.0.0.1", port=plan.sandbox_port or 8001))
        if plan.sandbox_tls is not None and plan.sandbox_tls_port is not None:
            # The same app over HTTPS (the service's WeChat calls; mutual TLS on /secapi).
            tls_server = build_server(
                plan.sandbox_app, host="127.0.0.1", port=plan.sandbox_tls_port, tls=plan.sandbox_tls, lifespan="off"
            )
            servers.append(tls_server)
    from minipay.server.worker.api import build_router, worker_task

    background = []
    if worker:
        background.append(worker_task())
        settings = settings.model_copy(update={"webhook_dispatch": False})  # the worker delivers webhooks
    routers = [build_router()]
    if plan.world is not None:
        routers.append(simulator_router(plan))
    app = create_app(settings, background=background, routers=routers, clock=plan.clock)
    # HttpProtocol: uvicorn's httptools protocol sending each response's head and body in one write.
    config = uvicorn.Config(
        app, host=host, port=port, http=HttpProtocol, log_level="info", access_log=False, log_config=None
    )
    servers.append(uvicorn.Server(config))
    # After every uvicorn.Config (each one configures uvicorn's loggers): one handler, one format.
    configure_logging(settings.log_format, settings.log_level, access_log=access_log)
    # The access log is one logger for both servers; the sandbox's login URL carries the app secret.
    logging.getLogger("uvicorn.access").addFilter(_redact_query_secrets)
    freeze_startup_heap()  # the app is built: keep its objects out of the full collections' walk
    await asyncio.gather(*(server.serve() for server in servers))
