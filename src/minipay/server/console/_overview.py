"""The console's overview, reconciliation and webhooks pages' reads: payment volume and success rate per
hour (24 h) and per day (30 days), the counters that need attention, bill runs, recent deliveries; the
charts are inline SVG drawn here. The queries are the console read model's (``uow.console``) and the
repositories'; ``scope`` None is the admin key (every sub-merchant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from minipay.server.repositories import Attention
from minipay.server.uow import UnitOfWorkFactory

__all__ = [
    "Bucket",
    "attention",
    "bar_chart",
    "buckets",
    "day_report",
    "recent_deliveries",
    "recent_runs",
    "retry_delivery",
]


@dataclass(frozen=True)
class Bucket:
    label: str  # "2026-03-02 04" (hour, UTC) or "2026-03-02" (day, UTC)
    total: int
    paid: int

    @property
    def rate(self) -> float | None:
        return self.paid / self.total if self.total else None


def _sub_mch_ids(scope: str | None) -> list[str] | None:
    return None if scope is None else [scope]


async def buckets(uow_factory: UnitOfWorkFactory, *, scope: str | None, now: datetime, hourly: bool) -> list[Bucket]:
    """Every hour of the last 24 (or day of the last 30), oldest first, empty ones included."""
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    count = 24 if hourly else 30
    if hourly:
        last = now.replace(minute=0, second=0, microsecond=0)
    else:
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = last - step * (count - 1)
    async with uow_factory().reading() as uow:
        found = await uow.console.payment_counts(scope=scope, created_gte=first, hourly=hourly)
    fmt = "%Y-%m-%d %H" if hourly else "%Y-%m-%d"
    out = []
    for i in range(count):
        label = (first + step * i).strftime(fmt)
        total, paid = found.get(label, (0, 0))
        out.append(Bucket(label, total, paid))
    return out


async def attention(uow_factory: UnitOfWorkFactory, *, scope: str | None, now: datetime) -> Attention:
    """Refunds not final yet, discrepancies of the last 30 days, and paid volume per currency (30 days)."""
    async with uow_factory().reading() as uow:
        return await uow.console.attention(scope=scope, now=now)


def bar_chart(data: list[Bucket], *, title: str, every: int) -> str:
    """An accessible inline SVG: bars = payments per bucket, a line = success rate (0-100 %).
    Only numbers and our own labels go in; nothing from outside is interpolated."""
    width, height, left, bottom, top = 640, 200, 34, 24, 10
    inner_w, inner_h = width - left - 34, height - bottom - top
    peak = max((b.total for b in data), default=0) or 1
    slot = inner_w / max(len(data), 1)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{title}</title>",
        f'<line class="axis" x1="{left}" y1="{top + inner_h}" x2="{left + inner_w}" y2="{top + inner_h}"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + inner_h}" text-anchor="end">0</text>',
        f'<text x="{left + inner_w + 4}" y="{top + 8}">100%</text>',
    ]
    points = []
    for i, b in enumerate(data):
        x = left + i * slot
        h = inner_h * b.total / peak
        parts.append(
            f'<rect class="bar" x="{x + slot * 0.15:.1f}" y="{top + inner_h - h:.1f}" width="{slot * 0.7:.1f}"'
            f' height="{h:.1f}"><title>{b.label}: {b.total} payments, {b.paid} paid</title></rect>'
        )
        if b.rate is not None:
            points.append(f"{x + slot / 2:.1f},{top + inner_h * (1 - b.rate):.1f}")
        if i % every == 0:
            short = b.label[-2:] + "h" if len(b.label) > 10 else b.label[5:]
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - 6}" text-anchor="middle">{short}</text>')
    if len(points) > 1:
        parts.append(f'<polyline class="rate" points="{" ".join(points)}"/>')
    elif points:
        cx, cy = points[0].split(",")
        parts.append(f'<circle class="rate" cx="{cx}" cy="{cy}" r="3"/>')
    parts.append("</svg>")
    return "".join(parts)


async def recent_runs(uow_factory: UnitOfWorkFactory, *, scope: str | None, days: int = 30) -> list[dict[str, Any]]:
    """Bill runs of the last ``days`` bill days, newest day first."""
    async with uow_factory().reading() as uow:
        rows = await uow.reconciliation.recent_runs(sub_mch_ids=_sub_mch_ids(scope), limit=days * 20)
    return [dict(r) for r in rows]


async def day_report(uow_factory: UnitOfWorkFactory, day: date, *, scope: str | None) -> dict[str, Any]:
    """One bill day: its runs and every discrepancy, each with the id of its payment when known."""
    async with uow_factory().reading() as uow:
        runs = await uow.reconciliation.runs_of_day(day, sub_mch_ids=_sub_mch_ids(scope))
        found = await uow.reconciliation.discrepancies_of_day(
            day, sub_mch_ids=_sub_mch_ids(scope), with_payment_id=True
        )
    return {"runs": [dict(r) for r in runs], "discrepancies": [dict(r) for r in found]}


async def recent_deliveries(
    uow_factory: UnitOfWorkFactory, *, scope: str | None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest webhook deliveries with their event, endpoint and last attempt."""
    async with uow_factory().reading() as uow:
        return await uow.webhooks.recent_deliveries(sub_mch_id=scope, limit=limit)


async def retry_delivery(uow_factory: UnitOfWorkFactory, delivery_id: int, *, scope: str | None, now: datetime) -> bool:
    """A failed delivery (given up) is scheduled again now; False when there is none for this caller."""
    async with uow_factory() as uow:
        retried = await uow.webhooks.retry_failed(delivery_id, sub_mch_id=scope, now=now)
        await uow.commit()
    return retried
