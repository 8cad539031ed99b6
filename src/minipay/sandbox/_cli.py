"""``minipay sandbox``: build the app from the options, print the base URL and credentials, serve."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from pathlib import Path

from minipay._web import freeze_startup_heap
from minipay.protocol import ConfigurationError
from minipay.sandbox._app import create_app
from minipay.sandbox._config import SandboxConfig
from minipay.sandbox._server import build_server
from minipay.sandbox._tls import TLSMaterial, load_or_generate_tls_material

__all__ = ["banner", "prepare", "sandbox_main"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(
    *,
    config_path: str | None,
    seed: int | None,
    tls: bool,
    tls_dir: str,
    speed: float,
    frozen: bool,
    profile: str | None = None,
) -> tuple[SandboxConfig, TLSMaterial | None]:
    """The config for a CLI run: real-time clock (unless ``frozen``), TLS material when asked, the
    ``profile`` given, else the file's ``[rules] profile``, else strict."""
    config = SandboxConfig.from_toml(config_path) if config_path else SandboxConfig.default()
    config = config.with_profile(profile)
    # replace() validates again (model_copy would not: --speed 0 or nan slipped through).
    updates: dict[str, object] = {"clock": {**config.clock.model_dump(), "realtime": not frozen, "speed": speed}}
    if seed is not None:
        updates["seed"] = seed
    if tls:
        updates["tls"] = {**config.tls.model_dump(), "require_client_cert": True}
    config = config.replace(**updates)
    # Mutual TLS (--tls, or the strict profile) needs the certificates: made once, then reused.
    needed = tls or config.effective.require_client_cert
    material = load_or_generate_tls_material(tls_dir, mch_id=config.institutions[0].mch_id) if needed else None
    return config, material


def banner(
    config: SandboxConfig,
    base_url: str,
    material: TLSMaterial | None,
    state: str | None,
    tls_url: str | None = None,
) -> str:
    """What ``minipay sandbox`` prints: where it listens and the test credentials (test values only).
    ``tls_url``: the HTTPS listener next to a plain ``base_url`` (strict profile)."""
    lines = [
        "Minipay sandbox: a local WeChat Pay Global v2 simulator (test credentials only, never real money)",
        f"  base URL    {base_url}   (use it instead of https://apihk.mch.weixin.qq.com and https://api.weixin.qq.com)",
    ]
    if tls_url is not None:
        lines.append(
            f"  HTTPS       {tls_url}   (same paths; /secapi/* needs it: mutual TLS with the client certificate)"
        )
    lines += [
        f"  dashboard   {base_url}/sandbox/",
        f"  world JSON  {base_url}/sandbox/merchants",
    ]
    for inst in config.institutions:
        lines.append(f"  institution appid={inst.appid} mch_id={inst.mch_id} api_key={inst.api_key}")
        for sub in inst.sub_merchants:
            lines.append(
                f"    sub_mch_id={sub.sub_mch_id} settlement={sub.settlement_currency} "
                f"sub_appid={sub.sub_appid} app_secret={sub.app_secret}"
            )
    clock = "real time" if config.clock.realtime else "frozen (POST /sandbox/clock moves it)"
    if config.clock.realtime and config.clock.speed != 1:
        clock += f" x{config.clock.speed:g}"
    lines.append(f"  clock       {clock}; seed={config.seed}")
    lines.append(f"  profile     {config.effective.profile} (rules: docs/sandbox.md)")
    if state:
        lines.append(f"  state file  {state}")
    if material is not None:
        lines += [
            "  mutual TLS  /secapi/* requires the institution client certificate:",
            f"    CA (trust it)     {material.ca_cert}",
            f"    client cert/key   {material.client_cert}  {material.client_key}",
            f"    client .p12       {material.client_p12}  (password: {material.client_p12_password})",
        ]
    return "\n".join(lines)


def sandbox_main(
    *,
    host: str,
    port: int,
    config_path: str | None,
    seed: int | None,
    state: str | None,
    tls: bool,
    tls_dir: str,
    speed: float,
    frozen: bool,
    echo: Callable[[str], None],
    profile: str | None = None,
    tls_port: int | None = None,
) -> None:
    if not _is_loopback(host):
        echo(f"warning: listening on {host}, not loopback: anyone who reaches it can use the test credentials")
    try:
        config, material = prepare(
            config_path=config_path, seed=seed, tls=tls, tls_dir=tls_dir, speed=speed, frozen=frozen, profile=profile
        )
    except (ConfigurationError, OSError) as exc:
        echo(f"error: {exc}")
        raise SystemExit(2) from None
    app = create_app(config, state_file=Path(state) if state else None)
    if material is not None:
        app.state.sandbox.tls_files = material.to_json()
    shown = f"[{host}]" if ":" in host else host
    freeze_startup_heap()  # the app is built: its objects stay out of the full collections' walk
    if tls or material is None:
        # --tls: everything over HTTPS on one port; lenient without --tls: plain HTTP only.
        server = build_server(app, host=host, port=port, tls=material, log_level="info")
        echo(banner(config, f"{'https' if tls else 'http'}://{shown}:{port}", material, state))
        server.run()
        return
    # Strict: plain HTTP stays for every path (a third-party client changes only its base URL; its
    # /secapi calls are refused there as WeChat refuses them without the certificate), and the
    # same app over HTTPS on --tls-port, asking for the client certificate.
    secure_port = tls_port or port + 1
    servers = [
        build_server(app, host=host, port=port, log_level="info"),
        build_server(app, host=host, port=secure_port, tls=material, log_level="info", lifespan="off"),
    ]
    echo(banner(config, f"http://{shown}:{port}", material, state, tls_url=f"https://{shown}:{secure_port}"))

    async def serve_both() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(serve_both())
