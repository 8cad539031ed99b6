"""What every repository shares: the transaction it runs in (and the writes it may send at commit,
:class:`WriteBatch`), the ``ConcurrentUpdate`` signal, and the
row mappers that turn ``payments`` and ``refunds`` rows into domain entities."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from minipay.server import db
from minipay.server.domain import PAYMENT_FIXED_FIELDS, Payment, PaymentStatus, Refund, RefundStatus
from minipay.server.repositories._pg import PgStatement

if TYPE_CHECKING:
    from minipay.server.repositories._gather import GatheredLookups

__all__ = [
    "BATCH_EVENT_COLUMNS",
    "BATCH_OUTBOX_COLUMNS",
    "MAX_EVENT_ROWS",
    "PAYMENT_FIELDS",
    "PAYMENT_SAVED_FIELDS",
    "REFUND_FIELDS",
    "ConcurrentUpdate",
    "Repository",
    "Transaction",
    "WriteBatch",
    "payment_from_row",
    "refund_from_row",
]


class ConcurrentUpdate(Exception):
    """The row changed under us (version check failed, unique race, serialization failure): retry."""


#: The columns of ``payments`` / ``refunds``: every field of the entity but its pending events.
PAYMENT_FIELDS = [f.name for f in dataclasses.fields(Payment) if f.name != "events"]
#: The columns a payment's save writes: all but what it never changes (``domain.PAYMENT_FIXED_FIELDS``).
PAYMENT_SAVED_FIELDS = [name for name in PAYMENT_FIELDS if name not in PAYMENT_FIXED_FIELDS]
REFUND_FIELDS = [f.name for f in dataclasses.fields(Refund) if f.name != "events"]


def payment_from_row(row: Mapping[Any, Any]) -> Payment:
    """A :class:`Payment` from a ``payments`` row (every column selected)."""
    # A row of exactly the payment's columns is copied whole (in C); any other shape is picked
    # column by column, so a column the entity does not know is left out, a missing one a KeyError.
    values = dict(row) if len(row) == len(PAYMENT_FIELDS) else {name: row[name] for name in PAYMENT_FIELDS}
    values["status"] = PaymentStatus(values["status"])
    values["metadata"] = dict(values["metadata"] or {})
    return Payment(**values)


def refund_from_row(row: Mapping[Any, Any]) -> Refund:
    """A :class:`Refund` from a ``refunds`` row (every column selected)."""
    values = {name: row[name] for name in REFUND_FIELDS}
    values["status"] = RefundStatus(values["status"])
    return Refund(**values)


#: The most event-log rows one batched statement carries (a notification logs two or three).
MAX_EVENT_ROWS = 6
#: The columns of the rows a batch writes: event-log rows, outbox events.
BATCH_EVENT_COLUMNS = ("payment_id", "refund_id", "sub_mch_id", "type", "source", "data", "created_at")
BATCH_OUTBOX_COLUMNS = tuple(c.name for c in db.outbox_events.columns)


@dataclass
class WriteBatch:
    """What a unit of work will write at its commit: at most one new payment (its row) or one payment
    save (its values, the version it read), event-log rows, outbox events (each with the sub-merchant
    its deliveries are for)."""

    saves: list[tuple[Payment, dict[str, Any]]] = field(default_factory=list)
    adds: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def fits(self, event_rows: int) -> bool:
        """Whether these writes (with ``event_rows`` log rows) go in one statement."""
        return len(self.saves) + len(self.adds) <= 1 and len(self.outbox) <= 1 and event_rows <= MAX_EVENT_ROWS

    def parameters(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The bound values of ``repositories._batch.batch_statement`` for these writes."""
        params: dict[str, Any] = {}
        for _, values in self.saves:
            params.update({f"p_{name}": value for name, value in values.items()})
        for values in self.adds:
            params.update({f"a_{name}": value for name, value in values.items()})
        for i, row in enumerate(events):
            params.update({f"e{i}_{name}": row[name] for name in BATCH_EVENT_COLUMNS})
        for row in self.outbox:
            params.update({f"o_{name}": row[name] for name in BATCH_OUTBOX_COLUMNS})
            params["o_sub"] = row["sub_mch_id"]
        return params


class Transaction(Protocol):
    """What a repository needs of its unit of work: the connection of the transaction, which
    database it is, and the writes waiting for the commit (``uow.writing_at_commit()``), if any."""

    @property
    def conn(self) -> AsyncConnection: ...

    @property
    def batch(self) -> WriteBatch | None: ...

    @property
    def autocommit(self) -> bool:
        """Each statement commits on its own, outside any transaction of SQLAlchemy's (a read-only
        unit of work on PostgreSQL): statements may run on the driver itself (``repositories._pg``)."""
        ...

    @property
    def is_postgres(self) -> bool: ...

    @property
    def lookups_only(self) -> bool:
        """A unit of work of key lookups (``uow_factory().looking_up()``): no connection; each lookup
        runs through :meth:`lookup`."""
        ...

    async def lookup(
        self, statement: PgStatement, params: Mapping[str, Any], *, gathered: GatheredLookups | None = None
    ) -> Mapping[Any, Any] | None:
        """The first row of a lookup statement, on a connection taken for it alone; on PostgreSQL,
        with ``gathered`` (the same lookup by key, gathered), read with the keys asked for at the
        same time (``repositories._gather``)."""
        ...


class Repository:
    """A repository runs its statements on the connection of its unit of work's transaction."""

    def __init__(self, uow: Transaction) -> None:
        self._uow = uow

    @property
    def conn(self) -> AsyncConnection:
        return self._uow.conn

    @property
    def transaction(self) -> Transaction:
        return self._uow
