"""What ``minipay worker`` and ``minipay reconcile`` do (the typer wrappers live in ``minipay.cli``)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from minipay.protocol import CHINA_TZ
from minipay.server.settings import Settings
from minipay.server.worker._worker import Worker, WorkerConfig

__all__ = ["reconcile_main", "render_report", "worker_main"]


class UsageError(Exception):
    """A wrong command line or configuration: printed as is, exit status 2."""


def _require_configured(settings: Settings, command: str) -> None:
    if not settings.configured:
        raise UsageError(
            f"`minipay {command}` needs a configuration with at least one institution "
            "(--config FILE or $MINIPAY_CONFIG). In sandbox mode `minipay serve` runs the worker in-process."
        )


async def worker_main(
    settings: Settings,
    *,
    config: WorkerConfig,
    once: bool = False,
    name: str | None = None,
    migrate: bool = True,
    revive_dead: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the worker until SIGINT/SIGTERM (or one pass with ``once``). Returns the exit status.

    ``revive_dead`` first gives every ``dead`` job a fresh start (after the cause was fixed).
    """
    _require_configured(settings, "worker")
    from minipay.server import tracing
    from minipay.server.bootstrap import build_container

    container = build_container(settings)
    if tracing.setup(settings.tracing):
        observers = getattr(container.gateway, "observers", None)
        if isinstance(observers, list):
            observers.append(tracing.wechat_observer)
    try:
        if migrate:
            from minipay.server.migrations import upgrade

            await upgrade(container.engine)
        worker = Worker.from_container(container, config=config, name=name)
        try:
            if revive_dead:
                echo(f"revived {await worker.queue.revive_dead()} dead job(s)")
            if once:
                summaries = await worker.run_until_idle()
                total = {
                    key: sum(getattr(s, key) for s in summaries)
                    for key in ("scheduled", "ran", "completed", "retried", "failed", "lost", "webhooks")
                }
                echo(json.dumps(total))
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            echo(f"minipay worker {worker.name} running (database {_safe_url(settings.database_url)}); Ctrl+C stops it")
            import anyio

            done = anyio.Event()

            async def relay() -> None:
                await stop.wait()
                done.set()

            relay_task = asyncio.create_task(relay())
            try:
                await worker.run_forever(done)
            finally:
                relay_task.cancel()
            return 0
        finally:
            await worker.aclose()
    finally:
        await container.aclose()


def _safe_url(url: str) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"


async def reconcile_main(
    settings: Settings,
    *,
    day: date,
    sub_mch_ids: Sequence[str] = (),
    download: bool = True,
    as_json: bool = False,
    migrate: bool = True,
    force: bool = False,
    now: datetime | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Reconcile one China-time day (replacing an earlier run of it) and print the report.

    Exit status: 0 when every run is clean, 1 when there are discrepancies (like ``diff``).
    A day whose bill WeChat has not published yet (before 10:00 China time on the next day) is
    refused unless ``force``: WeChat answers "No Bill Exist" then, and every payment would look missing.
    """
    _require_configured(settings, "reconcile")
    ready = datetime.combine(day + timedelta(days=1), WorkerConfig().bill_ready_time, tzinfo=CHINA_TZ)
    if download and not force and (now or datetime.now(CHINA_TZ)) < ready:
        raise UsageError(
            f"the bill of {day} is published from {ready:%Y-%m-%d %H:%M} China time; "
            "reconciling earlier would report every payment as missing (--force to do it anyway)"
        )
    from minipay.server.bootstrap import build_container

    known = {s.sub_mch_id for s in settings.sub_merchants}
    unknown = [s for s in sub_mch_ids if s not in known]
    if unknown:
        raise UsageError(f"unknown sub_mch_id: {', '.join(unknown)}")
    container = build_container(settings)
    worker = Worker.from_container(container)
    try:
        if migrate:
            from minipay.server.migrations import upgrade

            await upgrade(container.engine)
        chosen = [s for s in settings.sub_merchants if not sub_mch_ids or s.sub_mch_id in sub_mch_ids]
        if download:
            for sub in chosen:
                run = await worker.reconciler.reconcile(sub, day, replace=True)
                if run.status == "not_ready":
                    echo(f"{sub.sub_mch_id}: WeChat is still creating the bill of {day}; try again later")
        report = await worker.reconciler.report(day, [s.sub_mch_id for s in chosen])
    finally:
        await worker.aclose()
        await container.aclose()
    if as_json:
        echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render_report(report)
    return 1 if report["discrepancies"] else 0


def render_report(report: dict[str, Any]) -> None:
    """Print a reconciliation report with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    runs = Table(title=f"Reconciliation of {report['date']} (China time)")
    for column in ("sub_mch_id", "status", "bill rows", "ledger rows", "discrepancies"):
        runs.add_column(column)
    for run in report["runs"]:
        style = "green" if run["status"] == "ok" else "red"
        runs.add_row(
            run["sub_mch_id"],
            f"[{style}]{run['status']}[/{style}]",
            str(run["bill_rows"]),
            str(run["ledger_rows"]),
            str(run["discrepancies"]),
        )
    console.print(runs)
    if not report["runs"]:
        console.print("[yellow]no reconciliation run stored for that day[/yellow]")
    if report["discrepancies"]:
        table = Table(title="Discrepancies (nothing was changed: each needs a decision)")
        for column in ("sub_mch_id", "kind", "out_trade_no", "out_refund_no", "detail"):
            table.add_column(column)
        for d in report["discrepancies"]:
            table.add_row(d["sub_mch_id"], d["kind"], d["out_trade_no"] or "", d["out_refund_no"] or "", d["detail"])
        console.print(table)


logging.getLogger("minipay.worker").addHandler(logging.NullHandler())
