"""``--state FILE``: the sandbox state as a JSON document, written on shutdown and every few
seconds, read back on start (so a restarted sandbox still knows its orders and notifications).

JSON, not pickle: loading a state file must never run code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import types
import typing
from datetime import date, datetime
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
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, target)


def load_state(backend: Backend, path: str | Path) -> None:
    """Replace the backend's state with the one saved in ``path``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            raise ConfigurationError(f"{path}: unsupported state version {data.get('version')!r}")
        backend.reset()
        backend.clock.set(datetime.fromisoformat(data["now"]))
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
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"cannot read sandbox state from {path}: {exc}") from None
