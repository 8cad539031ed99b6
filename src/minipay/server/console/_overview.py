"""The console's overview: payment volume and success rate per hour (24 h) and per day (30 days) as
SQL aggregates, and the counters that need attention; charts are inline SVG drawn here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from minipay.server import db
from minipay.server.worker._tables import reconciliation_discrepancies, reconciliation_runs

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


def _bucket_expr(engine: AsyncEngine, hourly: bool) -> Any:
    column = db.payments.c.created_at
    if engine.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24" if hourly else "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d %H" if hourly else "%Y-%m-%d", column)  # SQLite keeps UTC, naive


async def buckets(engine: AsyncEngine, *, scope: str | None, now: datetime, hourly: bool) -> list[Bucket]:
    """Every hour of the last 24 (or day of the last 30), oldest first, empty ones included."""
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    count = 24 if hourly else 30
    if hourly:
        last = now.replace(minute=0, second=0, microsecond=0)
    else:
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = last - step * (count - 1)
    t = db.payments
    bucket = _bucket_expr(engine, hourly).label("bucket")
    query = (
        select(
            bucket, func.count().label("total"), func.sum(case((t.c.paid_at.is_not(None), 1), else_=0)).label("paid")
        )
        .where(t.c.created_at >= first)
        .group_by(bucket)
    )
    if scope is not None:
        query = query.where(t.c.sub_mch_id == scope)
    async with engine.connect() as conn:
        found = {row.bucket: (int(row.total), int(row.paid or 0)) for row in await conn.execute(query)}
    fmt = "%Y-%m-%d %H" if hourly else "%Y-%m-%d"
    out = []
    for i in range(count):
        label = (first + step * i).strftime(fmt)
        total, paid = found.get(label, (0, 0))
        out.append(Bucket(label, total, paid))
    return out


async def attention(engine: AsyncEngine, *, scope: str | None, now: datetime) -> dict[str, Any]:
    """Refunds not final yet, discrepancies of the last 30 days, and paid volume per currency (30 days)."""
    r, p, d = db.refunds, db.payments, reconciliation_discrepancies
    refunds_q = select(func.count()).select_from(r).where(r.c.status.in_(["pending", "processing"]))
    disc_q = select(func.count()).select_from(d).where(d.c.bill_date >= (now - timedelta(days=30)).date())
    volume_q = (
        select(p.c.currency, func.count(), func.sum(p.c.amount))
        .where(p.c.paid_at.is_not(None), p.c.created_at >= now - timedelta(days=30))
        .group_by(p.c.currency)
        .order_by(p.c.currency)
    )
    if scope is not None:
        refunds_q = refunds_q.where(r.c.sub_mch_id == scope)
        disc_q = disc_q.where(d.c.sub_mch_id == scope)
        volume_q = volume_q.where(p.c.sub_mch_id == scope)
    async with engine.connect() as conn:
        refunds_pending = int((await conn.execute(refunds_q)).scalar_one())
        discrepancies = int((await conn.execute(disc_q)).scalar_one())
        volume = [(c, int(n), int(s or 0)) for c, n, s in await conn.execute(volume_q)]
    return {"refunds_pending": refunds_pending, "discrepancies": discrepancies, "volume": volume}


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


async def recent_runs(engine: AsyncEngine, *, scope: str | None, days: int = 30) -> list[dict[str, Any]]:
    """Bill runs of the last ``days`` bill days, newest day first."""
    runs = reconciliation_runs
    query = select(runs).order_by(runs.c.bill_date.desc(), runs.c.sub_mch_id).limit(days * 20)
    if scope is not None:
        query = query.where(runs.c.sub_mch_id == scope)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def day_report(engine: AsyncEngine, day: date, *, scope: str | None) -> dict[str, Any]:
    """One bill day: its runs and every discrepancy, each with the id of its payment when known."""
    runs, disc, p = reconciliation_runs, reconciliation_discrepancies, db.payments
    run_q = select(runs).where(runs.c.bill_date == day).order_by(runs.c.sub_mch_id)
    disc_q = (
        select(disc, p.c.id.label("payment_id"))
        .select_from(
            disc.outerjoin(p, (p.c.out_trade_no == disc.c.out_trade_no) & (p.c.sub_mch_id == disc.c.sub_mch_id))
        )
        .where(disc.c.bill_date == day)
        .order_by(disc.c.sub_mch_id, disc.c.id)
    )
    if scope is not None:
        run_q = run_q.where(runs.c.sub_mch_id == scope)
        disc_q = disc_q.where(disc.c.sub_mch_id == scope)
    async with engine.connect() as conn:
        return {
            "runs": [dict(r) for r in (await conn.execute(run_q)).mappings().all()],
            "discrepancies": [dict(r) for r in (await conn.execute(disc_q)).mappings().all()],
        }


async def recent_deliveries(engine: AsyncEngine, *, scope: str | None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest webhook deliveries with their event, endpoint and last attempt."""
    d, e, w = db.webhook_deliveries, db.outbox_events, db.webhook_endpoints
    query = (
        select(
            d.c.id,
            d.c.status,
            d.c.attempts,
            d.c.last_status_code,
            d.c.next_attempt_at,
            d.c.updated_at,
            e.c.type,
            e.c.payment_id,
            w.c.url,
            w.c.sub_mch_id,
        )
        .select_from(d.join(e, e.c.id == d.c.event_id).join(w, w.c.id == d.c.endpoint_id))
        .order_by(d.c.id.desc())
        .limit(limit)
    )
    if scope is not None:
        query = query.where(w.c.sub_mch_id == scope)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def retry_delivery(engine: AsyncEngine, delivery_id: int, *, scope: str | None, now: datetime) -> bool:
    """A failed delivery (given up) is scheduled again now; False when there is none for this caller."""
    d, w = db.webhook_deliveries, db.webhook_endpoints
    endpoint_ids = select(w.c.id)
    if scope is not None:
        endpoint_ids = endpoint_ids.where(w.c.sub_mch_id == scope)
    query = (
        update(d)
        .where(d.c.id == delivery_id, d.c.status == "failed", d.c.endpoint_id.in_(endpoint_ids))
        .values(status="pending", next_attempt_at=now, locked_until=None, updated_at=now)
    )
    async with engine.begin() as conn:
        return bool((await conn.execute(query)).rowcount)
