"""``--state FILE``: the sandbox state as a JSON document, written on shutdown and every few
seconds, read back on start (so a restarted sandbox still knows its orders and notifications).

A file named ``*.sqlite3`` / ``*.sqlite`` / ``*.db`` keeps the document in an SQLite database
(one row, replaced in a transaction: ``minipay serve`` keeps ``.minipay/sandbox.sqlite3``);
any other name is a plain JSON file (written to a temporary file, then renamed).

JSON, not pickle: loading a state file must never run code.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import sqlite3
import types
import typing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from minipay.protocol import ConfigurationError
from minipay.sandbox._backend import Backend
from minipay.sandbox._models import Attempt, Fault, LoginCode, Notification, Order, Refund

__all__ = ["load_state", "save_state"]

VERSION = 1
T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _revive_value(value: Any, hint: Any) -> Any:
    if isinstance(value, dict) and "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    if isinstance(value, dict) and "$b" in value:
        return base64.b64decode(value["$b"])
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_revive_value(v, item) for v in value]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _revive(arg, value)
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _revive(hint, value)
    return value


def _revive(cls: type[T], data: dict[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {name: _revive_value(value, hints.get(name)) for name, value in data.items()}
    return cls(**kwargs)


def save_state(backend: Backend, path: str | Path) -> None:
    """Write the backend's state to ``path`` atomically (write + rename)."""
    rng_version, rng_internal, rng_gauss = backend.ids._rng.getstate()
    data = {
        "version": VERSION,
        "now": backend.now().isoformat(),
        "seq": backend._seq,
        "rng": [rng_version, list(rng_internal), rng_gauss],
        "orders": [_plain(o) for o in backend.orders.values()],
        "refunds": [_plain(r) for r in backend.refunds.values()],
        "codes": {code: _plain(c) for code, c in backend.codes.items()},
        "openids": {k: list(v) for k, v in backend.openids.items()},
        "wallets": backend.wallets,
        "pools": [[sub, day.isoformat(), amount] for (sub, day), amount in backend.pools.items()],
        "notifications": [_plain(n) for n in backend.notifications],
        "faults": [_plain(f) for f in backend.faults],
        "journal": backend.journal[-1000:],
        "notify_default": backend.notify_default,
        "notify_modes": backend.notify_modes,
        "refund_scripts": {k: list(v) for k, v in backend.refund_scripts.items()},
    }
    data["saved_at"] = datetime.now(UTC).isoformat()  # real time: a real-time clock resumes from it
    text = json.dumps(data, ensure_ascii=False)
    target = Path(path)
    if _is_sqlite(target):
        with contextlib.closing(sqlite3.connect(target)) as db, db:
            db.execute(_TABLE)
            db.execute(
                "INSERT INTO sandbox_state (id, document) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET document = excluded.document",
                (text,),
            )
        return
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


_SQLITE_SUFFIXES = frozenset({".sqlite3", ".sqlite", ".db"})
_TABLE = "CREATE TABLE IF NOT EXISTS sandbox_state (id INTEGER PRIMARY KEY CHECK (id = 1), document TEXT NOT NULL)"


def _is_sqlite(path: Path) -> bool:
    return path.suffix.lower() in _SQLITE_SUFFIXES


def _read(path: Path) -> str:
    if not _is_sqlite(path):
        return path.read_text(encoding="utf-8")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT document FROM sandbox_state WHERE id = 1").fetchone()
    if row is None:
        raise ValueError("no saved state in the database")
    return str(row[0])


def load_state(backend: Backend, path: str | Path) -> None:
    """Replace the backend's state with the one saved in ``path``."""
    try:
        data = json.loads(_read(Path(path)))
        if data.get("version") != VERSION:
            raise ConfigurationError(f"{path}: unsupported state version {data.get('version')!r}")
        backend.reset()
        now = datetime.fromisoformat(data["now"])
        if backend.clock.realtime and data.get("saved_at"):
            # A real-time clock resumes where it would be had the sandbox kept running (any
            # advance made through POST /sandbox/clock is kept, the downtime is not lost).
            down = datetime.now(UTC) - datetime.fromisoformat(data["saved_at"])
            now += max(down, timedelta(0)) * backend.clock.speed
        backend.clock.set(now)
        backend._seq = int(data["seq"])
        version, internal, gauss = data["rng"]
        backend.ids._rng.setstate((version, tuple(internal), gauss))
        for raw in data["orders"]:
            order = _revive(Order, raw)
            backend.orders[(order.sub_mch_id, order.out_trade_no)] = order
            backend.by_prepay[order.prepay_id] = order
            if order.transaction_id:
                backend.by_transaction[order.transaction_id] = order
        for raw in data["refunds"]:
            refund = _revive(Refund, raw)
            backend.refunds[(refund.sub_mch_id, refund.out_refund_no)] = refund
            backend.by_refund_id[refund.refund_id] = refund
        backend.codes = {code: _revive(LoginCode, raw) for code, raw in data["codes"].items()}
        backend.openids = {k: (v[0], v[1]) for k, v in data["openids"].items()}
        backend.wallets = {k: int(v) for k, v in data["wallets"].items()}
        backend.pools = {(sub, date.fromisoformat(day)): int(amount) for sub, day, amount in data["pools"]}
        backend.notifications = [_revive(Notification, raw) for raw in data["notifications"]]
        for n in backend.notifications:
            n.attempts = [a if isinstance(a, Attempt) else _revive(Attempt, a) for a in n.attempts]
        backend.faults = [_revive(Fault, raw) for raw in data["faults"]]
        backend.journal = list(data["journal"])
        backend.notify_default = data["notify_default"]
        backend.notify_modes = dict(data["notify_modes"])
        backend.refund_scripts = {k: (v[0], v[1]) for k, v in data["refund_scripts"].items()}
    except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as exc:
        raise ConfigurationError(f"cannot read sandbox state from {path}: {exc}") from None
