"""What every repository shares: the transaction it runs in, the ``ConcurrentUpdate`` signal, and the
row mappers that turn ``payments`` and ``refunds`` rows into domain entities."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from minipay.server.domain import PAYMENT_FIXED_FIELDS, Payment, PaymentStatus, Refund, RefundStatus

if TYPE_CHECKING:
    from minipay.server.repositories._batch import WriteBatch

__all__ = [
    "PAYMENT_FIELDS",
    "PAYMENT_SAVED_FIELDS",
    "REFUND_FIELDS",
    "ConcurrentUpdate",
    "Repository",
    "Transaction",
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
    values = {name: row[name] for name in PAYMENT_FIELDS}
    values["status"] = PaymentStatus(values["status"])
    values["metadata"] = dict(values["metadata"] or {})
    return Payment(**values)


def refund_from_row(row: RowMapping) -> Refund:
    """A :class:`Refund` from a ``refunds`` row (every column selected)."""
    values = {name: row[name] for name in REFUND_FIELDS}
    values["status"] = RefundStatus(values["status"])
    return Refund(**values)


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


class Repository:
    """A repository runs its statements on the connection of its unit of work's transaction."""

    def __init__(self, uow: Transaction) -> None:
        self._uow = uow

    @property
    def conn(self) -> AsyncConnection:
        return self._uow.conn
