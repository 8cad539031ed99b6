"""Writes sent at commit, in one statement (PostgreSQL): a payment's conditional save or a new payment's
insert, the event-log rows and the outbox event with its deliveries.

A unit of work that reads nothing inside its transaction (it decided on a row read before, and its
save is conditional on that row's version) does not need a transaction of its own: on PostgreSQL one
statement is atomic. :class:`WriteBatch` collects those writes, and ``UnitOfWork.commit`` sends them
as one statement of data-modifying CTEs (:func:`batch_statement`), in autocommit: no ``BEGIN``, no
``COMMIT``, one round trip where a transaction takes five. Every insert is gated on the save
(``WHERE EXISTS (SELECT FROM saved)``): when another writer changed the row since it was read,
nothing is written and the caller gets :class:`ConcurrentUpdate`, as from the save itself. A new
payment's insert needs no read at all: a unique key it breaks fails the whole statement
(``IntegrityError``), as the insert alone would.

Shapes beyond one save, a few event rows and one outbox event are not built: they are written one
statement after the other in a transaction, as any unit of work does (:meth:`WriteBatch.fits`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, exists, func, insert, literal, select, union_all, update
from sqlalchemy.dialects import postgresql as postgresql_dialect

from minipay.server import db
from minipay.server.repositories._base import (
    BATCH_EVENT_COLUMNS,
    BATCH_OUTBOX_COLUMNS,
    PAYMENT_FIELDS,
    PAYMENT_SAVED_FIELDS,
    WriteBatch,
)
from minipay.server.repositories._log import deliveries_for
from minipay.server.repositories._pg import PgStatement

__all__ = ["WriteBatch", "batch_statement"]


_STATEMENTS: dict[tuple[bool, int, bool, bool], PgStatement] = {}


def batch_statement(*, save: bool, event_rows: int, publish: bool, add: bool = False) -> PgStatement:
    """The one statement for a batch of that shape (built once per shape), run on the driver
    (``repositories._pg``): it returns one row, ``saved``, the number of payment rows saved or added
    (0 when the version check failed, and then nothing was written; 1 when there was neither)."""
    key = (save, event_rows, publish, add)
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = PgStatement(_build(save=save, event_rows=event_rows, publish=publish, add=add))
    return statement


def _build(*, save: bool, event_rows: int, publish: bool, add: bool = False) -> Select[Any]:
    p, e, o = db.payments, db.payment_events, db.outbox_events
    ctes: list[Any] = []
    saved: Any = None
    if add:
        saved = (
            insert(p)
            .values({name: bindparam(f"a_{name}", type_=p.c[name].type) for name in PAYMENT_FIELDS})
            .returning(p.c.id)
            .cte("added")
        )
    elif save:
        saved = (
            update(p)
            .where(p.c.id == bindparam("p_b_id"), p.c.version == bindparam("p_b_version"))
            .values({name: bindparam(f"p_{name}", type_=p.c[name].type) for name in PAYMENT_SAVED_FIELDS})
            .returning(p.c.id)
            .cte("saved")
        )
    # Every insert below waits on the payment's own row: written only when it was added or saved.
    gate = None if saved is None else exists(select(saved.c.id))

    def gated(query: Select[Any]) -> Select[Any]:
        return query if gate is None else query.where(gate)

    if event_rows:
        rows = [
            gated(select(*(bindparam(f"e{i}_{name}", type_=e.c[name].type) for name in BATCH_EVENT_COLUMNS)))
            for i in range(event_rows)
        ]
        source = rows[0] if event_rows == 1 else union_all(*rows)
        ctes.append(insert(e).from_select(BATCH_EVENT_COLUMNS, source).cte("logged"))
    if publish:
        event = (
            postgresql_dialect.insert(o)
            .from_select(
                BATCH_OUTBOX_COLUMNS, gated(select(*(bindparam(f"o_{c.name}", type_=c.type) for c in o.columns)))
            )
            .on_conflict_do_nothing(index_elements=["event_key"])
            .returning(o.c.id)
            .cte("event")
        )
        ctes.append(event)
        ctes.append(deliveries_for(event, created_at="o_created_at", sub="o_sub"))
    saved_rows = select(func.count()).select_from(saved).scalar_subquery() if saved is not None else literal(1)
    return select(saved_rows.label("saved")).add_cte(*ctes)
