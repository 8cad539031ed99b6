"""Writes sent at commit, in one statement (PostgreSQL): a payment's conditional save, the event-log rows
and the outbox event with its deliveries.

A unit of work that reads nothing inside its transaction (it decided on a row read before, and its
save is conditional on that row's version) does not need a transaction of its own: on PostgreSQL one
statement is atomic. :class:`WriteBatch` collects those writes, and ``UnitOfWork.commit`` sends them
as one statement of data-modifying CTEs (:func:`batch_statement`), in autocommit: no ``BEGIN``, no
``COMMIT``, one round trip where a transaction takes five. Every insert is gated on the save
(``WHERE EXISTS (SELECT FROM saved)``): when another writer changed the row since it was read,
nothing is written and the caller gets :class:`ConcurrentUpdate`, as from the save itself.

Shapes beyond one save, a few event rows and one outbox event are not built: they are written one
statement after the other in a transaction, as any unit of work does (:meth:`WriteBatch.fits`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, exists, func, insert, literal, select, union_all, update
from sqlalchemy.dialects import postgresql as postgresql_dialect

from minipay.server import db
from minipay.server.domain import Payment
from minipay.server.repositories._base import PAYMENT_SAVED_FIELDS
from minipay.server.repositories._log import deliveries_for
from minipay.server.repositories._pg import PgStatement

__all__ = ["MAX_EVENT_ROWS", "WriteBatch", "batch_statement"]

#: The most event-log rows one batched statement carries (a notification logs two or three).
MAX_EVENT_ROWS = 6

_EVENT_COLUMNS = ("payment_id", "refund_id", "sub_mch_id", "type", "source", "data", "created_at")
_OUTBOX_COLUMNS = tuple(c.name for c in db.outbox_events.columns)


@dataclass
class WriteBatch:
    """What a unit of work will write at its commit: at most one payment save (its values, the
    version it read), event-log rows, outbox events (each with the sub-merchant its deliveries are for)."""

    saves: list[tuple[Payment, dict[str, Any]]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def fits(self, event_rows: int) -> bool:
        """Whether these writes (with ``event_rows`` log rows) go in one statement."""
        return len(self.saves) <= 1 and len(self.outbox) <= 1 and event_rows <= MAX_EVENT_ROWS

    def parameters(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The bound values of :func:`batch_statement` for these writes."""
        params: dict[str, Any] = {}
        for _, values in self.saves:
            params.update({f"p_{name}": value for name, value in values.items()})
        for i, row in enumerate(events):
            params.update({f"e{i}_{name}": row[name] for name in _EVENT_COLUMNS})
        for row in self.outbox:
            params.update({f"o_{name}": row[name] for name in _OUTBOX_COLUMNS})
            params["o_sub"] = row["sub_mch_id"]
        return params


_STATEMENTS: dict[tuple[bool, int, bool], PgStatement] = {}


def batch_statement(*, save: bool, event_rows: int, publish: bool) -> PgStatement:
    """The one statement for a batch of that shape (built once per shape), run on the driver
    (``repositories._pg``): it returns one row, ``saved``, the number of payment rows saved (0 when
    the version check failed, and then nothing was written; 1 when there was no save)."""
    key = (save, event_rows, publish)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = PgStatement(_build(save=save, event_rows=event_rows, publish=publish))
    return statement


def _build(*, save: bool, event_rows: int, publish: bool) -> Select[Any]:
    p, e, o = db.payments, db.payment_events, db.outbox_events
    ctes: list[Any] = []
    gate: Any = None
    saved: Any = None
    if save:
        saved = (
            update(p)
            .where(p.c.id == bindparam("p_b_id"), p.c.version == bindparam("p_b_version"))
            .values({name: bindparam(f"p_{name}", type_=p.c[name].type) for name in PAYMENT_SAVED_FIELDS})
            .returning(p.c.id)
            .cte("saved")
        )
        gate = exists(select(saved.c.id))

    def gated(query: Select[Any]) -> Select[Any]:
        return query if gate is None else query.where(gate)

    if event_rows:
        rows = [
            gated(select(*(bindparam(f"e{i}_{name}", type_=e.c[name].type) for name in _EVENT_COLUMNS)))
            for i in range(event_rows)
        ]
        source = rows[0] if event_rows == 1 else union_all(*rows)
        ctes.append(insert(e).from_select(_EVENT_COLUMNS, source).cte("logged"))
    if publish:
        event = (
            postgresql_dialect.insert(o)
            .from_select(_OUTBOX_COLUMNS, gated(select(*(bindparam(f"o_{c.name}", type_=c.type) for c in o.columns))))
            .on_conflict_do_nothing(index_elements=["event_key"])
            .returning(o.c.id)
            .cte("event")
        )
        ctes.append(event)
        ctes.append(deliveries_for(event, created_at="o_created_at", sub="o_sub"))
    saved_rows = select(func.count()).select_from(saved).scalar_subquery() if saved is not None else literal(1)
    return select(saved_rows.label("saved")).add_cte(*ctes)
