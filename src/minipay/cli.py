"""The ``minipay`` command line.

Each part registers its commands here; the heavy imports happen inside the commands so that
``minipay --version`` stays instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from minipay._version import __version__

app = typer.Typer(
    name="minipay",
    help="WeChat Pay Global Mini Program payments for institutions: SDK, service and sandbox.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Options several commands take, declared once.
ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="TOML configuration (default: $MINIPAY_CONFIG).")
]
DatabaseUrlOption = Annotated[str | None, typer.Option("--database-url", help="Overrides the configured database URL.")]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="The 32-character API key (visible to other users of this machine: prefer --key-env or the prompt).",
    ),
]
KeyEnvOption = Annotated[str | None, typer.Option("--key-env", help="Read the API key from this environment variable.")]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"minipay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Minipay command line."""


# -- service (minipay serve, minipay db) ------------------------------------------------------------

db_app = typer.Typer(help="Database of the payment service (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command("serve")
def serve_command(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="TOML configuration (default: $MINIPAY_CONFIG; none = sandbox mode)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the service.")] = 8000,
    sandbox_port: Annotated[int, typer.Option(help="Port of the sandbox (sandbox mode only).")] = 8001,
    sandbox_tls_port: Annotated[
        int | None,
        typer.Option(
            help="HTTPS port of the sandbox, mutual TLS for /secapi (sandbox mode; default: sandbox port + 1)."
        ),
    ] = None,
    credentials_out: Annotated[
        str | None, typer.Option("--credentials-out", help="Write the sandbox-mode URLs and dev API keys as JSON here.")
    ] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run the worker in-process.")] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log one line a request (stderr).")
    ] = True,
    state_dir: Annotated[str, typer.Option(help="Sandbox mode: folder of the SQLite file and dev keys.")] = ".minipay",
) -> None:
    """Run the payment service; with no configuration, in sandbox mode (sandbox on a second port)."""
    from pathlib import Path

    from minipay.serve import plan_serve, run_in_loop, run_serve
    from minipay.server.settings import load_settings

    plan = plan_serve(
        load_settings(config),
        port=port,
        sandbox_port=sandbox_port,
        sandbox_tls_port=sandbox_tls_port,
        state_dir=Path(state_dir),
        credentials_out=Path(credentials_out) if credentials_out else None,
        echo=typer.echo,
    )
    run_in_loop(run_serve(plan, host=host, port=port, worker=not no_worker, access_log=access_log))


@db_app.command("upgrade")
def db_upgrade_command(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "heads",
) -> None:
    """Apply the service's migrations (SQLite or PostgreSQL)."""
    import asyncio

    from minipay.server.db import create_engine
    from minipay.server.migrations import current_revision, upgrade
    from minipay.server.settings import load_settings

    url = database_url or load_settings(config).database_url

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            await upgrade(engine, revision)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(f"database at revision {asyncio.run(run())}")


@db_app.command("current")
def db_current_command(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print the database's current migration revision."""
    import asyncio

    from minipay.server.db import create_engine
    from minipay.server.migrations import current_revision
    from minipay.server.settings import load_settings

    url = database_url or load_settings(config).database_url

    async def run() -> str | None:
        engine = create_engine(url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(run()) or "(empty database)")


# -- worker (minipay worker, minipay reconcile, minipay demo) --------------------------------------------


@app.command("worker")
def worker_command(
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    once: Annotated[bool, typer.Option("--once", help="Run every due job once, print a summary, exit.")] = False,
    name: Annotated[str | None, typer.Option(help="Worker name in the job leases (default: host:pid).")] = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between two passes.")] = 1.0,
    lease: Annotated[float, typer.Option(help="Seconds a claimed job belongs to this worker.")] = 120.0,
    query_delay: Annotated[float, typer.Option(help="Seconds before the first active query of a payment.")] = 60.0,
    no_bills: Annotated[bool, typer.Option("--no-bills", help="Do not download and reconcile bills.")] = False,
    no_webhooks: Annotated[bool, typer.Option("--no-webhooks", help="Do not deliver webhooks.")] = False,
    revive_dead: Annotated[
        bool, typer.Option("--revive-dead", help="First give every dead job (see GET /v1/worker/jobs) a fresh start.")
    ] = False,
) -> None:
    """Run the worker: active queries, expiry, refund follow-up, webhooks, daily bills. Any number may run."""
    import asyncio
    import logging
    from datetime import timedelta

    from minipay.server.logs import configure_logging
    from minipay.server.settings import load_settings
    from minipay.server.worker import WorkerConfig
    from minipay.server.worker._cli import UsageError, worker_main

    overrides = {"database_url": database_url} if database_url else {}
    settings = load_settings(config, **overrides)
    if not logging.getLogger().handlers:  # like basicConfig: an embedding program's logging stays
        configure_logging(settings.log_format, settings.log_level)  # the service's format and context
    worker_config = WorkerConfig(
        poll_interval=poll_interval,
        lease=timedelta(seconds=lease),
        query_delay=timedelta(seconds=query_delay),
        bills=not no_bills,
        webhooks=not no_webhooks,
    )
    try:
        status = asyncio.run(
            worker_main(settings, config=worker_config, once=once, name=name, revive_dead=revive_dead, echo=typer.echo)
        )
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(status)


@app.command("reconcile")
def reconcile_command(
    date: Annotated[str, typer.Option("--date", help="The China-time bill day, YYYY-MM-DD.")],
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    sub_mch_id: Annotated[
        list[str] | None, typer.Option("--sub-mch-id", help="Only this sub-merchant (repeatable).")
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the stored result; download nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (as GET /v1/reconciliation/{date}).")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Reconcile even before WeChat publishes the bill (10:00 China time, T+1).")
    ] = False,
) -> None:
    """Download a day's bills, compare them with the ledger, store and print the discrepancies.

    Exit status 0 when the day is clean, 1 when there are discrepancies, 2 on a usage error.
    """
    import asyncio
    import datetime as dt

    from minipay.server.settings import load_settings
    from minipay.server.worker._cli import UsageError, reconcile_main

    try:
        day = dt.date.fromisoformat(date)
        if len(date) != 10:
            raise ValueError(date)
    except ValueError:
        typer.echo("error: --date must be YYYY-MM-DD", err=True)
        raise typer.Exit(2) from None
    overrides = {"database_url": database_url} if database_url else {}
    try:
        status = asyncio.run(
            reconcile_main(
                load_settings(config, **overrides),
                day=day,
                sub_mch_ids=sub_mch_id or (),
                download=not show,
                as_json=as_json,
                force=force,
                echo=typer.echo,
            )
        )
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(status)


# -- sandbox (minipay sandbox) ------------------------------------------------------------------------


@app.command("sandbox")
def sandbox_command(
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8801,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Sandbox world TOML (default: the built-in world).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for ids and nonces (same seed, same ids).")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="JSON file the state is loaded from and saved to.")
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="HTTPS with generated certificates; /secapi/* demands the client cert.")
    ] = False,
    tls_dir: Annotated[
        str, typer.Option(help="Where the CA, server and client certificate files are written (--tls, strict).")
    ] = ".minipay/tls",
    tls_port: Annotated[
        int | None,
        typer.Option(help="Strict profile without --tls: the HTTPS port for /secapi (default: --port + 1)."),
    ] = None,
    speed: Annotated[float, typer.Option(help="Virtual seconds per real second (retries, expiry...).")] = 1.0,
    frozen: Annotated[
        bool, typer.Option("--frozen", help="Do not run the clock; only POST /sandbox/clock moves it.")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="strict (default; as WeChat behaves live) or lenient (quick experiments); "
            "overrides [rules] profile of the config file. See docs/sandbox.md.",
        ),
    ] = None,
) -> None:
    """Run the local WeChat Pay Global sandbox; prints its base URL and the test credentials."""
    from minipay.sandbox._cli import sandbox_main

    sandbox_main(
        host=host,
        port=port,
        config_path=config,
        seed=seed,
        state=state,
        tls=tls,
        tls_dir=tls_dir,
        speed=speed,
        frozen=frozen,
        profile=profile,
        tls_port=tls_port,
        echo=typer.echo,
    )


@app.command("demo")
def demo_command(
    seed: Annotated[int, typer.Option(help="Seed of the sandbox (ids and nonces repeat with it).")] = 42,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault", help="Script a sandbox fault first, ENDPOINT:FAULT[:TIMES] (e.g. orderquery:SYSTEMERROR:2)."
        ),
    ] = None,
) -> None:
    """Play the whole flow against the sandbox in one process; exit 0 only when every check held."""
    import asyncio

    from minipay.demo import run_demo

    faults = []
    for item in fault or []:
        parts = item.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
            typer.echo(f"error: --fault takes ENDPOINT:FAULT[:TIMES], not {item!r}", err=True)
            raise typer.Exit(2)
        faults.append({"endpoint": parts[0], "fault": parts[1], "times": int(parts[2]) if len(parts) == 3 else 1})
    ok = asyncio.run(run_demo(seed=seed, faults=faults))
    raise typer.Exit(0 if ok else 1)


# -- protocol tools (minipay sign, minipay verify) ----------------------------------------------------


@app.command("sign")
def sign_command(
    fields: Annotated[list[str] | None, typer.Argument(help="Fields as NAME=VALUE (values may contain '=').")] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="An <xml> body or a JSON object of fields ('-' = stdin).")
    ] = None,
    key: KeyOption = None,
    key_env: KeyEnvOption = None,
    sign_type: Annotated[
        str | None, typer.Option("--sign-type", help="MD5 or HMAC-SHA256 (default: the sign_type field, else MD5).")
    ] = None,
    xml: Annotated[bool, typer.Option("--xml", help="Also print the signed <xml> body.")] = False,
) -> None:
    """Sign fields: print the string-to-sign (key redacted) and the signature (WeChat's "签名错误")."""
    import os
    import sys

    from minipay._signcli import read_key, run, sign_main

    def action() -> int:
        api_key = read_key(key, key_env, lambda: typer.prompt("API key", hide_input=True), os.environ)
        return sign_main(
            pairs=fields or [],
            file=file,
            key=api_key,
            sign_type=sign_type,
            xml=xml,
            echo=typer.echo,
            stdin=sys.stdin.buffer.read,
        )

    raise typer.Exit(run(action, typer.echo))


@app.command("verify")
def verify_command(
    file: Annotated[str, typer.Argument(help="The body of a response or notification ('-' = stdin).")],
    key: KeyOption = None,
    key_env: KeyEnvOption = None,
    sign_type: Annotated[
        str | None, typer.Option("--sign-type", help="Force MD5 or HMAC-SHA256 (default: sign_type field or length).")
    ] = None,
    pin_hmac: Annotated[bool, typer.Option("--pin-hmac", help="Refuse MD5 signatures (no downgrade).")] = False,
) -> None:
    """Check a body's signature (or a refund notification's req_info) against the key; explain a mismatch.

    Exit status 0 when it holds, 1 on a mismatch, 2 when the body or the key cannot be used.
    """
    import os
    import sys

    from minipay._signcli import read_key, run, verify_main

    def action() -> int:
        api_key = read_key(key, key_env, lambda: typer.prompt("API key", hide_input=True), os.environ)
        return verify_main(
            file=file, key=api_key, sign_type=sign_type, pin_hmac=pin_hmac, echo=typer.echo, stdin=sys.stdin.buffer.read
        )

    raise typer.Exit(run(action, typer.echo))


def main() -> None:
    app()
