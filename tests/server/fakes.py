"""An in-memory unit of work: the storage port of the service layer (``ports.UnitOfWorkPort``) without
a database, for the tests whose subject is the service's rules.

::

    database = FakeDatabase()
    services = Services(settings=..., uow_factory=database.unit_of_work, gateway=..., clock=...)
    database.count("payment_events", type="succeeded")

It keeps the rules of the SQL unit of work that the service layer leans on, and
``tests/server/test_unit_of_work.py`` runs the same checks on it, SQLite and PostgreSQL:

* the tables are ``db.metadata``'s: primary keys, unique constraints, foreign keys, NOT NULL and
  column defaults are enforced from it; a duplicate key raises SQLAlchemy's ``IntegrityError`` (at
  the insert, and again at commit: the first committer wins), so ``uow.retrying`` retries it;
* storage is as strict as the stricter database (PostgreSQL): string lengths, 32/64-bit integers,
  NUL characters and lone surrogates raise ``DBAPIError``; datetimes must be aware and come back in
  UTC; JSON columns come back as a JSON round trip of what was written;
* work that is not committed is seen by no other unit of work and is gone when the block ends;
  ``commit()`` in the middle starts a new transaction, as on the database;
* ``save`` is conditional on the version read (``ConcurrentUpdate``); a row two units of work both
  changed is a ``ConcurrentUpdate`` for the one that commits second;
* ``reading()`` units of work see the latest committed state and cannot write or commit.

Its methods never wait, so a unit of work runs to its end without another one interleaving (as
SQLite's single writer runs them): races are tested on the real databases, not here.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import JSON, BigInteger, Integer, String, Table, UniqueConstraint
from sqlalchemy.exc import DBAPIError, IntegrityError

from minipay.server import db
from minipay.server.domain import (
    MONEY_OUT_FAILURES,
    PAYMENT_FIXED_FIELDS,
    DomainEvent,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    new_id,
)
from minipay.server.logs import bind
from minipay.server.ports import StoredRow, UnitOfWorkPort
from minipay.server.uow import ConcurrentUpdate, record_events

__all__ = ["FakeDatabase", "FakeUnitOfWork"]

Row = dict[str, Any]
_INT_RANGES: dict[type[Any], int] = {BigInteger: 2**63, Integer: 2**31}


class _Schema:
    """What the fake enforces of one ``db.metadata`` table."""

    def __init__(self, table: Table) -> None:
        self.name = table.name
        self.columns = [c.name for c in table.columns]
        self.primary_key = tuple(c.name for c in table.primary_key.columns)
        self.autoincrement = table.autoincrement_column.name if table.autoincrement_column is not None else None
        self.required = {c.name for c in table.columns if not c.nullable and c.name != self.autoincrement}
        self.defaults = {
            c.name: c.default.arg  # type: ignore[attr-defined]
            for c in table.columns
            if c.default is not None and not callable(c.default.arg)  # type: ignore[attr-defined]
        }
        self.uniques = [
            tuple(col.name for col in c.columns) for c in table.constraints if isinstance(c, UniqueConstraint)
        ]
        self.uniques += [(c.name,) for c in table.columns if c.unique and (c.name,) not in self.uniques]
        self.foreign_keys = [
            (c.name, fk.column.table.name, fk.column.name) for c in table.columns for fk in c.foreign_keys
        ]
        self.types = {c.name: c.type for c in table.columns}

    def key(self, row: Mapping[str, Any]) -> Any:
        return tuple(row[name] for name in self.primary_key)

    def check(self, values: Mapping[str, Any]) -> Row:
        """The row as the database would store it (defaults, types, limits), or the database's error."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"{self.name} has no column(s) {sorted(unknown)}")
        row: Row = {}
        for name in self.columns:
            value = values[name] if name in values else self.defaults.get(name)
            row[name] = self._stored(name, value)
        for name in self.required:
            if row[name] is None:
                raise _integrity(f"NOT NULL constraint failed: {self.name}.{name}")
        return row

    def _stored(self, name: str, value: Any) -> Any:
        if value is None:
            return None
        kind = self.types[name]
        if isinstance(kind, db.UTCDateTime):
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValueError("naive datetime refused: times are timezone-aware")
            return value.astimezone(UTC)
        if isinstance(kind, JSON):
            return json.loads(json.dumps(value))
        if isinstance(kind, String):
            text = str(value)
            if kind.length is not None and len(text) > kind.length:
                raise _data_error(f"value too long for {self.name}.{name} (varchar({kind.length}))")
            if "\x00" in text:
                raise _data_error(f"NUL character in {self.name}.{name}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise _data_error(f"invalid UTF-8 (a lone surrogate) in {self.name}.{name}") from None
            return text
        bound = _INT_RANGES.get(type(kind))
        if bound is not None and isinstance(value, int) and not -bound <= value < bound:
            raise _data_error(f"{self.name}.{name} out of range")
        return value


def _integrity(message: str) -> IntegrityError:
    return IntegrityError("(fake unit of work)", None, Exception(message))


def _data_error(message: str) -> DBAPIError:
    return DBAPIError("(fake unit of work)", None, Exception(message))


SCHEMAS = {name: _Schema(table) for name, table in db.metadata.tables.items()}


class FakeDatabase:
    """The committed state: every table of ``db.metadata`` as rows by primary key."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Row]] = {name: {} for name in SCHEMAS}
        self.revisions: dict[tuple[str, Any], int] = {}
        self.sequences = {name: itertools.count(1) for name, s in SCHEMAS.items() if s.autoincrement}

    def unit_of_work(self) -> FakeUnitOfWork:
        """The factory the service layer is given (``uow_factory=database.unit_of_work``)."""
        return FakeUnitOfWork(self)

    def rows(self, table: str) -> list[Row]:
        """The committed rows of ``table`` in primary-key order (copies)."""
        return [copy.deepcopy(r) for _, r in sorted(self.tables[table].items(), key=lambda item: _sortable(item[0]))]

    def count(self, table: str, **where: Any) -> int:
        return sum(all(row[k] == v for k, v in where.items()) for row in self.tables[table].values())

    def snapshot(self, tables: Iterable[str]) -> dict[str, list[tuple[Any, ...]]]:
        """Every committed row of the given tables, as tuples in column order (like ``World.snapshot``)."""
        return {name: [tuple(row[c] for c in SCHEMAS[name].columns) for row in self.rows(name)] for name in tables}


def _sortable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, v) for v in key)


class FakeUnitOfWork:
    """One transaction on a :class:`FakeDatabase`: its writes stay its own until ``commit()``."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self.read_only = False
        self._active = False
        self._writes: dict[str, dict[Any, Row]] = {}
        self._base: dict[tuple[str, Any], int | None] = {}  # the committed revision a write started from
        self._payments = _Payments(self)
        self._refunds = _Refunds(self)
        self._events = _Events(self)
        self._outbox = _Outbox(self)
        self._idempotency = _IdempotencyKeys(self)
        self._webhooks = _Webhooks(self)

    # -- the port

    @property
    def payments(self) -> _Payments:
        return self._payments

    @property
    def refunds(self) -> _Refunds:
        return self._refunds

    @property
    def events(self) -> _Events:
        return self._events

    @property
    def outbox(self) -> _Outbox:
        return self._outbox

    @property
    def idempotency(self) -> _IdempotencyKeys:
        return self._idempotency

    @property
    def webhooks(self) -> _Webhooks:
        return self._webhooks

    def reading(self) -> Self:
        self.read_only = True
        return self

    def looking_up(self) -> Self:
        return self.reading()

    def writing_at_commit(self) -> Self:
        return self  # its writes are its own until commit() anyway

    async def __aenter__(self) -> Self:
        self._active = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._discard()
        self._active = False

    async def commit(self) -> None:
        if self.read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        self._check_active()
        committed = self.database.tables
        for (table, key), base in self._base.items():
            if base is None:  # an insert: its keys must still be free
                self._check_unique(table, self._writes[table][key], committed[table])
            elif self.database.revisions.get((table, key), 0) != base:
                raise ConcurrentUpdate(f"{table} {key} changed concurrently")
        for table, key in self._base:
            committed[table][key] = self._writes[table][key]
            self.database.revisions[table, key] = self.database.revisions.get((table, key), 0) + 1
        self._discard()

    async def rollback(self) -> None:
        self._discard()

    async def record(
        self,
        events: list[DomainEvent],
        *,
        source: str,
        sub_mch_id: str,
        now: datetime,
        payment_id: str | None,
        refund_id: str | None = None,
        webhook_data: dict[str, Any] | None = None,
    ) -> None:
        await record_events(
            self,
            events,
            source=source,
            sub_mch_id=sub_mch_id,
            now=now,
            payment_id=payment_id,
            refund_id=refund_id,
            webhook_data=webhook_data,
        )

    # -- rows, for the repositories

    def select(self, table: str, where: Callable[[Row], bool] = lambda _: True) -> list[Row]:
        """Rows visible to this unit of work (committed, then its own writes), copies, in key order."""
        self._check_active()
        visible = {**self.database.tables[table], **self._writes.get(table, {})}
        return [
            copy.deepcopy(row) for _, row in sorted(visible.items(), key=lambda item: _sortable(item[0])) if where(row)
        ]

    def insert(self, table: str, values: Mapping[str, Any]) -> None:
        self._check_writable()
        schema = SCHEMAS[table]
        values = dict(values)
        if schema.autoincrement is not None and values.get(schema.autoincrement) is None:
            values[schema.autoincrement] = next(self.database.sequences[table])  # like a sequence: not rolled back
        row = schema.check(values)
        key = schema.key(row)
        visible = {**self.database.tables[table], **self._writes.get(table, {})}
        self._check_unique(table, row, visible)
        for column, target, target_column in schema.foreign_keys:
            if row[column] is not None and not self.select(target, lambda r: r[target_column] == row[column]):  # noqa: B023
                raise _integrity(f"FOREIGN KEY constraint failed: {table}.{column}")
        self._writes.setdefault(table, {})[key] = row
        self._base[table, key] = None

    def update(self, table: str, where: Callable[[Row], bool], values: Mapping[str, Any]) -> int:
        """Change the visible rows ``where`` selects; returns how many (the statement's rowcount)."""
        self._check_writable()
        schema = SCHEMAS[table]
        changed = 0
        for row in self.select(table, where):
            key = schema.key(row)
            new = schema.check({**row, **values})
            if schema.key(new) != key:
                raise ValueError("the fake does not change primary keys")
            others = {**self.database.tables[table], **self._writes.get(table, {})}
            others.pop(key)
            self._check_unique(table, new, others)
            self._writes.setdefault(table, {})[key] = new
            self._base.setdefault((table, key), self.database.revisions.get((table, key), 0))
            changed += 1
        return changed

    def _check_unique(self, table: str, row: Row, existing: Mapping[Any, Row]) -> None:
        schema = SCHEMAS[table]
        key = schema.key(row)
        if key in existing:
            raise _integrity(f"UNIQUE constraint failed: {table} primary key {key}")
        for columns in schema.uniques:
            values = tuple(row[c] for c in columns)
            if None in values:
                continue
            for other_key, other in existing.items():
                if other_key != key and tuple(other[c] for c in columns) == values:
                    raise _integrity(f"UNIQUE constraint failed: {table} {columns}")

    def _check_active(self) -> None:
        if not self._active:
            raise RuntimeError("the unit of work is not active: use `async with uow:`")

    def _check_writable(self) -> None:
        self._check_active()
        if self.read_only:
            raise RuntimeError("a read-only unit of work cannot write")

    def _discard(self) -> None:
        self._writes.clear()
        self._base.clear()


# -- the repositories -------------------------------------------------------------------------------


class _Repo:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow


def _fields(entity: Payment | Refund) -> Row:
    row = {f.name: getattr(entity, f.name) for f in dataclasses.fields(entity) if f.name != "events"}
    row["status"] = str(row["status"])
    return row


def _payment(row: Row) -> Payment:
    names = {f.name for f in dataclasses.fields(Payment)} - {"events"}
    values = {name: row[name] for name in names}
    values["status"] = PaymentStatus(values["status"])
    values["metadata"] = dict(values["metadata"] or {})
    bind(payment_id=row["id"], out_trade_no=row["out_trade_no"])
    return Payment(**values)


def _refund(row: Row) -> Refund:
    names = {f.name for f in dataclasses.fields(Refund)} - {"events"}
    values = {name: row[name] for name in names}
    values["status"] = RefundStatus(values["status"])
    bind(refund_id=row["id"], out_refund_no=row["out_refund_no"], payment_id=row["payment_id"])
    return Refund(**values)


def _one(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


def _owned(row: Row, sub_mch_id: str | None) -> bool:
    return sub_mch_id is None or row["sub_mch_id"] == sub_mch_id


class _Payments(_Repo):
    async def add(self, payment: Payment) -> None:
        self._uow.insert("payments", _fields(payment))
        bind(payment_id=payment.id, out_trade_no=payment.out_trade_no)

    async def get(self, payment_id: str, *, sub_mch_id: str | None = None, for_update: bool = False) -> Payment | None:
        row = _one(self._uow.select("payments", lambda r: r["id"] == payment_id and _owned(r, sub_mch_id)))
        return None if row is None else _payment(row)

    async def get_by_out_trade_no(
        self, mch_id: str, out_trade_no: str, *, sub_mch_id: str, for_update: bool = False
    ) -> Payment | None:
        row = _one(
            self._uow.select(
                "payments",
                lambda r: (r["mch_id"], r["out_trade_no"], r["sub_mch_id"]) == (mch_id, out_trade_no, sub_mch_id),
            )
        )
        return None if row is None else _payment(row)

    async def save(self, payment: Payment) -> None:
        values = {k: v for k, v in _fields(payment).items() if k not in PAYMENT_FIXED_FIELDS}
        values["version"] = payment.version + 1
        matched = self._uow.update(
            "payments", lambda r: r["id"] == payment.id and r["version"] == payment.version, values
        )
        if matched != 1:
            raise ConcurrentUpdate(f"payment {payment.id} changed concurrently")
        payment.version += 1

    async def search(
        self,
        *,
        sub_mch_id: str | None,
        status: str | None = None,
        out_trade_no: str | None = None,
        transaction_id: str | None = None,
        created_gte: datetime | None = None,
        created_lt: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 20,
    ) -> list[Payment]:
        def wanted(r: Row) -> bool:
            return (
                _owned(r, sub_mch_id)
                and (status is None or r["status"] == status)
                and (out_trade_no is None or r["out_trade_no"] == out_trade_no)
                and (transaction_id is None or r["transaction_id"] == transaction_id)
                and (created_gte is None or r["created_at"] >= created_gte)
                and (created_lt is None or r["created_at"] < created_lt)
                and (after is None or (r["created_at"], r["id"]) < after)
            )

        rows = sorted(self._uow.select("payments", wanted), key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return [_payment(r) for r in rows[:limit]]


class _Refunds(_Repo):
    async def add(self, refund: Refund) -> None:
        self._uow.insert("refunds", _fields(refund))
        bind(refund_id=refund.id, out_refund_no=refund.out_refund_no, payment_id=refund.payment_id)

    async def get(self, refund_id: str, *, sub_mch_id: str | None = None, for_update: bool = False) -> Refund | None:
        row = _one(self._uow.select("refunds", lambda r: r["id"] == refund_id and _owned(r, sub_mch_id)))
        return None if row is None else _refund(row)

    async def get_by_out_refund_no(self, mch_id: str, out_refund_no: str, *, for_update: bool = False) -> Refund | None:
        row = _one(self._uow.select("refunds", lambda r: (r["mch_id"], r["out_refund_no"]) == (mch_id, out_refund_no)))
        return None if row is None else _refund(row)

    async def for_payment(self, payment_id: str) -> list[Refund]:
        rows = self._uow.select("refunds", lambda r: r["payment_id"] == payment_id)
        return [_refund(r) for r in sorted(rows, key=lambda r: r["created_at"])]

    async def reserved_amount(self, payment_id: str) -> int:
        rows = self._uow.select(
            "refunds",
            lambda r: (
                r["payment_id"] == payment_id
                and (r["status"] != str(RefundStatus.FAILED) or r["failure_code"] in MONEY_OUT_FAILURES)
            ),
        )
        return sum(r["amount"] for r in rows)

    async def save(self, refund: Refund) -> None:
        values = _fields(refund)
        values["version"] = refund.version + 1
        matched = self._uow.update("refunds", lambda r: r["id"] == refund.id and r["version"] == refund.version, values)
        if matched != 1:
            raise ConcurrentUpdate(f"refund {refund.id} changed concurrently")
        refund.version += 1


class _Events(_Repo):
    async def append(
        self,
        *,
        type: str,
        source: str,
        data: dict[str, Any],
        now: datetime,
        payment_id: str | None = None,
        refund_id: str | None = None,
        sub_mch_id: str | None = None,
    ) -> None:
        self._uow.insert(
            "payment_events",
            {
                "payment_id": payment_id,
                "refund_id": refund_id,
                "sub_mch_id": sub_mch_id,
                "type": type,
                "source": source,
                "data": data,
                "created_at": now,
            },
        )


class _Outbox(_Repo):
    async def publish(
        self,
        *,
        key: str,
        type: str,
        sub_mch_id: str,
        data: dict[str, Any],
        now: datetime,
        payment_id: str | None = None,
        refund_id: str | None = None,
    ) -> str | None:
        if self._uow.select("outbox_events", lambda r: r["event_key"] == key):
            return None  # ON CONFLICT (event_key) DO NOTHING
        event_id = new_id("evt")
        self._uow.insert(
            "outbox_events",
            {
                "id": event_id,
                "event_key": key,
                "type": type,
                "sub_mch_id": sub_mch_id,
                "payment_id": payment_id,
                "refund_id": refund_id,
                "data": data,
                "created_at": now,
            },
        )
        endpoints = self._uow.select(
            "webhook_endpoints",
            lambda r: r["deleted_at"] is None and (r["sub_mch_id"] is None or r["sub_mch_id"] == sub_mch_id),
        )
        for endpoint in endpoints:
            self._uow.insert(
                "webhook_deliveries",
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint["id"],
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        return event_id


class _IdempotencyKeys(_Repo):
    async def get(self, scope: str, key: str) -> StoredRow | None:
        return _one(self._uow.select("idempotency_keys", lambda r: (r["scope"], r["key"]) == (scope, key)))

    async def add(self, scope: str, key: str, request_hash: str, resource_id: str, now: datetime) -> None:
        self._uow.insert(
            "idempotency_keys",
            {"scope": scope, "key": key, "request_hash": request_hash, "resource_id": resource_id, "created_at": now},
        )


def _live(sub_mch_id: str | None) -> Callable[[Row], bool]:
    """Endpoints not deleted, of ``sub_mch_id`` (every key's, for the admin's None)."""
    return lambda r: r["deleted_at"] is None and _owned(r, sub_mch_id)


class _Webhooks(_Repo):
    async def count_endpoints(self, sub_mch_id: str | None) -> int:
        return len(
            self._uow.select("webhook_endpoints", lambda r: r["sub_mch_id"] == sub_mch_id and r["deleted_at"] is None)
        )

    async def add_endpoint(self, values: dict[str, Any]) -> None:
        self._uow.insert("webhook_endpoints", values)

    async def endpoints(self, sub_mch_id: str | None) -> Sequence[StoredRow]:
        return sorted(self._uow.select("webhook_endpoints", _live(sub_mch_id)), key=lambda r: r["created_at"])

    async def delete_endpoint(self, endpoint_id: str, *, sub_mch_id: str | None, now: datetime) -> bool:
        live = _live(sub_mch_id)
        return (
            self._uow.update("webhook_endpoints", lambda r: r["id"] == endpoint_id and live(r), {"deleted_at": now})
            == 1
        )

    async def event(self, event_id: str, *, sub_mch_id: str | None) -> StoredRow | None:
        return _one(self._uow.select("outbox_events", lambda r: r["id"] == event_id and _owned(r, sub_mch_id)))

    async def events(self, *, sub_mch_id: str | None, payment_id: str | None, limit: int) -> Sequence[StoredRow]:
        rows = self._uow.select(
            "outbox_events",
            lambda r: _owned(r, sub_mch_id) and (payment_id is None or r["payment_id"] == payment_id),
        )
        return sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)[:limit]

    async def deliveries(
        self, event_id: str, *, sub_mch_id: str | None
    ) -> Sequence[tuple[StoredRow, Sequence[StoredRow]]]:
        owners = {r["id"]: r["sub_mch_id"] for r in self._uow.select("webhook_endpoints")}
        rows = self._uow.select(
            "webhook_deliveries",
            lambda r: r["event_id"] == event_id and (sub_mch_id is None or owners.get(r["endpoint_id"]) == sub_mch_id),
        )
        return [
            (row, self._uow.select("webhook_attempts", lambda a: a["delivery_id"] == row["id"]))  # noqa: B023
            for row in rows
        ]

    async def claim(
        self,
        now: datetime,
        limit: int,
        until: datetime,
        *,
        per_endpoint: int | None = None,
        room: Mapping[str, int] | None = None,
    ) -> Sequence[StoredRow]:
        room = room or {}
        full = {endpoint for endpoint, free in room.items() if free <= 0}
        endpoints = {r["id"]: r for r in self._uow.select("webhook_endpoints")}

        def due(r: Row) -> bool:
            return (
                r["status"] == "pending"
                and r["next_attempt_at"] is not None
                and r["next_attempt_at"] <= now
                and (r["locked_until"] is None or r["locked_until"] <= now)
            )

        def closed_breaker(r: Row) -> bool:
            open_until = endpoints[r["endpoint_id"]]["open_until"]
            return open_until is None or open_until <= now

        candidates = sorted(
            self._uow.select(
                "webhook_deliveries", lambda r: due(r) and closed_breaker(r) and r["endpoint_id"] not in full
            ),
            key=lambda r: (r["next_attempt_at"], r["id"]),
        )[: limit if per_endpoint is None else max(limit * 4, 100)]
        chosen: list[int] = []
        taken: dict[str, int] = {}
        for row in candidates:
            endpoint_id = row["endpoint_id"]
            if per_endpoint is not None and taken.get(endpoint_id, 0) >= min(
                per_endpoint, room.get(endpoint_id, per_endpoint)
            ):
                continue
            taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
            chosen.append(row["id"])
            if len(chosen) >= limit:
                break
        self._uow.update("webhook_deliveries", lambda r: r["id"] in chosen, {"locked_until": until, "updated_at": now})
        events = {r["id"]: r for r in self._uow.select("outbox_events")}
        claimed = sorted(
            self._uow.select("webhook_deliveries", lambda r: r["id"] in chosen),
            key=lambda r: (r["next_attempt_at"], r["id"]),
        )
        out: list[StoredRow] = []
        for d in claimed:
            event, endpoint = events[d["event_id"]], endpoints[d["endpoint_id"]]
            out.append(
                {
                    "id": d["id"],
                    "endpoint_id": d["endpoint_id"],
                    "attempts": d["attempts"],
                    "event_id": event["id"],
                    "type": event["type"],
                    "created_at": event["created_at"],
                    "data": event["data"],
                    "url": endpoint["url"],
                    "secret": endpoint["secret"],
                    "deleted_at": endpoint["deleted_at"],
                }
            )
        return out

    async def finish_attempt(self, delivery_id: int, lease: datetime, values: dict[str, Any]) -> bool:
        fenced = lambda r: r["id"] == delivery_id and r["locked_until"] == lease  # noqa: E731
        return self._uow.update("webhook_deliveries", fenced, values) == 1

    async def log_attempt(
        self, delivery_id: int, *, at: datetime, status_code: int | None, error: str | None, duration_ms: int
    ) -> None:
        self._uow.insert(
            "webhook_attempts",
            {
                "delivery_id": delivery_id,
                "attempted_at": at,
                "status_code": status_code,
                "error": error,
                "duration_ms": duration_ms,
            },
        )

    async def close_breaker(self, endpoint_id: str) -> None:
        self._uow.update(
            "webhook_endpoints", lambda r: r["id"] == endpoint_id, {"failure_streak": 0, "open_until": None}
        )

    async def count_failure(self, endpoint_id: str) -> int:
        [row] = self._uow.select("webhook_endpoints", lambda r: r["id"] == endpoint_id)
        self._uow.update(
            "webhook_endpoints", lambda r: r["id"] == endpoint_id, {"failure_streak": row["failure_streak"] + 1}
        )
        return int(row["failure_streak"]) + 1

    async def open_breaker(self, endpoint_id: str, until: datetime) -> None:
        self._uow.update("webhook_endpoints", lambda r: r["id"] == endpoint_id, {"open_until": until})


if TYPE_CHECKING:
    _implements_the_port: type[UnitOfWorkPort] = FakeUnitOfWork  # mypy checks the fake against the port
