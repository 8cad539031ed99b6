"""Log context and formats: follow one payment through the service's log lines.

Every log record written while a request, a notification or a worker job is being handled carries
that unit's ``request_id`` and, once known, the ids of the payment or refund it is about
(``payment_id``, ``out_trade_no``, ``refund_id``, ``out_refund_no``; a worker job adds ``job_id`` and
``job_kind``). They travel in :mod:`contextvars`, so no function has to pass them on:

- :class:`~minipay.server._http.ObserveMiddleware` opens a scope per HTTP request (the caller's
  ``X-Request-Id`` when it is well formed, see :func:`accept_request_id`, else a new one);
- the worker opens one per job (``job_…``), the webhook dispatcher one per pass (``wh_…``);
- the payment and refund repositories :func:`bind` the ids of what they load or insert;
- :class:`ContextFilter`, on a *handler*, copies them onto each record it is about to emit, so the
  SDK's own lines (``minipay.client``: one per WeChat call) carry the request id that caused them.

Nothing secret is ever bound: these are the merchant's identifiers, never keys, bodies or signatures.

Formats (:func:`configure_logging`, setting ``log_format``): ``text`` (one readable line) or ``json``
(one JSON object a line: ``time``, ``level``, ``logger``, ``message``, ``request_id``, the ids above,
and the record's other structured extras). Example, for a service embedded in another program::

    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal, TextIO

from minipay.protocol import random_hex

__all__ = [
    "CONTEXT_FIELDS",
    "REQUEST_ID_HEADER",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "accept_request_id",
    "bind",
    "configure_logging",
    "current_fields",
    "current_request_id",
    "log_context",
    "new_request_id",
]

LogFormat = Literal["text", "json"]

#: The HTTP header a caller may send its own request id in; every response carries it.
REQUEST_ID_HEADER: Final = "X-Request-Id"

#: The ids a log line can be bound to, in the order the text format prints them.
CONTEXT_FIELDS: Final = ("payment_id", "out_trade_no", "refund_id", "out_refund_no", "job_id", "job_kind")

_request_id: ContextVar[str | None] = ContextVar("minipay_request_id", default=None)
_fields: ContextVar[Mapping[str, str]] = ContextVar("minipay_log_fields", default={})  # noqa: B039 - never mutated

# Bounded and made of characters that are safe verbatim in a header, a JSON string and a text log
# line (no spaces, quotes, control characters): UUIDs, ULIDs, hex, base64 and dotted trace ids pass.
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


def new_request_id(prefix: str = "") -> str:
    """A fresh id: 24 random hex digits after ``prefix`` (``job_``, ``wh_``...)."""
    return prefix + random_hex(12)


def accept_request_id(value: bytes | None) -> str:
    """The caller's ``X-Request-Id`` if it is 1-128 characters of ``A-Z a-z 0-9 . _ : / + = @ -``,
    else a new id (the caller's value is then dropped, never logged: it could be anything)."""
    if value is not None and _ACCEPTED.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


def current_request_id() -> str | None:
    """The request id of the request (or job) being handled in this context, if any."""
    return _request_id.get()


def current_fields() -> Mapping[str, str]:
    """The ids bound in this context (payment, refund, job)."""
    return _fields.get()


def bind(**ids: str | int | None) -> None:
    """Attach ids to every later log line of the current request or job (``None`` values are skipped).

    The scope that opened the context (:func:`log_context`) drops them when it ends.
    """
    current = _fields.get()
    merged = dict(current)
    for key, value in ids.items():
        if value is not None:
            merged[key] = str(value)
    if merged != current:
        _fields.set(merged)


class log_context:
    """A scope with its own request id (a new one when ``None``) and no ids but ``ids``; yields the id.

    A class rather than a generator-based context manager: it is entered at every request."""

    __slots__ = ("_fields_token", "_ids", "_rid_token", "request_id")

    def __init__(self, request_id: str | None = None, **ids: str | int | None) -> None:
        self.request_id = request_id if request_id is not None else new_request_id()
        self._ids = ids

    def __enter__(self) -> str:
        self._rid_token = _request_id.set(self.request_id)
        self._fields_token = _fields.set({k: str(v) for k, v in self._ids.items() if v is not None})
        return self.request_id

    def __exit__(self, *_: object) -> None:
        _fields.reset(self._fields_token)
        _request_id.reset(self._rid_token)


class ContextFilter(logging.Filter):
    """Copies the context's ``request_id`` and bound ids onto each record (a value the call passed in
    ``extra=`` wins). Put it on a handler: a handler's filters see records of every logger below it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        for key, value in _fields.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


# Attributes every LogRecord has: everything else on a record came in through ``extra=``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``request_id``, the bound ids, the record's other extras, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [<request id>] <message> payment_id=… out_trade_no=…``: one line a
    record (a traceback follows on its own lines), the bound ids as ``key=value`` at the end."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or "-"
        line = f"{_time(record)} {record.levelname} {record.name} [{rid}] {record.getMessage()}"
        ids = " ".join(f"{k}={v}" for k in CONTEXT_FIELDS if (v := getattr(record, k, None)) is not None)
        if ids:
            line = f"{line} {ids}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def resolve_format(log_format: LogFormat | None, stream: IO[str]) -> LogFormat:
    """``log_format`` if set; else ``text`` on a terminal and ``json`` otherwise (a file, a pipe, a
    container's log collector)."""
    if log_format is not None:
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at each record (a replaced stderr is followed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(
    log_format: LogFormat | None = None,
    log_level: str = "INFO",
    *,
    access_log: bool = True,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log record (the service's, the SDK's, uvicorn's but its access log) to ``stream``
    (stderr) in one format.

    Replaces the root logger's handlers with one carrying :class:`ContextFilter`. The access log
    (``minipay.access``) is on at INFO whatever ``log_level`` is, unless ``access_log=False``: then it
    is disabled and not a line of it is formatted. Returns the handler.
    """
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    stream = stream if stream is not None else sys.stderr
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if resolve_format(log_format, stream) == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(log_level.upper())
    # uvicorn's loggers write to the root's handler, in the same format.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's own access log stays off: ``minipay.access`` replaces it (route-aware, no query string).
    # uvicorn writes it whenever the logger has a handler anywhere up its chain, so it is cut from the
    # root: with it on, every request was formatted and written twice, its query string included.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    # The HTTP client's own line per request (WeChat calls, webhook deliveries) at INFO would double
    # the SDK's per-attempt line, which is DEBUG (failures INFO): it is written at DEBUG only.
    client = logging.getLogger("httpx2")
    client.setLevel(logging.NOTSET if root.getEffectiveLevel() <= logging.DEBUG else logging.WARNING)
    access = logging.getLogger("minipay.access")
    access.handlers.clear()
    access.propagate = True
    access.setLevel(logging.INFO if access_log else logging.CRITICAL + 1)
    return handler
