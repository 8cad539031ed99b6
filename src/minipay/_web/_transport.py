"""One TCP write per response: uvicorn's httptools protocol over a transport that gathers writes.

uvicorn writes a response's status line and headers (``http.response.start``) and its body
(``http.response.body``) in two ``transport.write`` calls, and uvloop sends each at once: two
``send`` system calls and two TCP segments (``TCP_NODELAY`` is on) for every small response. On a
loaded service those sends are a large share of the CPU (each one also runs the receiver's side of
the loopback or NIC path), and the second segment costs the client a second wake-up.

:class:`CoalescingTransport` holds the small writes made while one event-loop callback runs and sends
them as one write just after it (``loop.call_soon``), so a response written in one go leaves in one
segment. Order is kept (every write goes through the same buffer), and so is flow control: a write
of :data:`HOLD_LIMIT` bytes or more goes to the real transport at once (after what is held), and so
does everything when the held bytes reach it, so a large or streamed body reaches the real
transport, and its ``pause_writing``, as soon as it is written; at most ``HOLD_LIMIT`` bytes wait
on top of the real transport's own buffer. ``close`` and ``write_eof`` send what is held first;
``set_protocol`` (an upgrade to another protocol) sends it and passes every later write straight
through; ``abort`` drops it, as the real transport drops its buffer.

:class:`HttpProtocol` is uvicorn's ``HttpToolsProtocol`` on such a transport: ``uvicorn --http
minipay.server.asgi:HttpProtocol`` (``minipay serve`` uses it by default). It also sends what is
held when the client half-closes (``eof_received``): uvloop then closes the real transport itself,
under the wrapper, and the held response would be lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HOLD_LIMIT", "CoalescingTransport", "HttpProtocol"]

#: Bytes held for one event-loop turn at most; a write past it is sent at once (with what is held).
HOLD_LIMIT = 64 * 1024

_log = logging.getLogger("minipay.http")


class CoalescingTransport(asyncio.Transport):
    """``transport`` with the writes of one event-loop turn sent as one (see the module's docstring)."""

    __slots__ = ("_held", "_held_size", "_loop", "_passthrough", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._held_size = 0
        self._passthrough = False  # after set_protocol: the new protocol writes straight through

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        size = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        if self._passthrough or size >= HOLD_LIMIT:
            if held is not None:
                self.flush()  # what was written before goes first
            self._transport.write(data)  # passed on as it is: no copy of a large body
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # a bytearray or memoryview: the caller may reuse its buffer after write()
        if held is None:
            if self._transport.is_closing():
                self._transport.write(data)  # what the real transport does with it, as without this one
                return
            self._held = [data]
            self._held_size = len(data)
            self._loop.call_soon(self._flush_soon)
            return
        held.append(data)
        self._held_size += len(data)
        if self._held_size >= HOLD_LIMIT:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held now."""
        held = self._held
        if held is None:
            return
        self._held = None
        self._held_size = 0
        if self._transport.is_closing():
            # The real transport was closed under what is held without going through this one (the
            # connection was lost or aborted; HttpProtocol sends first on a half-close): the bytes
            # have nowhere to go, and uvloop raises on a closed handle.
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def _flush_soon(self) -> None:
        # The loop's callback after the turn that wrote: a failure here reaches no caller (the app's
        # send() returned), so the connection is dropped rather than left waiting for bytes that
        # will not come, as uvicorn drops it when a write fails inside send().
        try:
            self.flush()
        except Exception:
            _log.exception("sending a response failed; the connection is aborted")
            self._transport.abort()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._transport.close()

    def write_eof(self) -> None:
        try:
            self.flush()
        finally:
            self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._held = None
        self._held_size = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._held_size + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._passthrough = True
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __repr__(self) -> str:
        return f"<CoalescingTransport held={self._held_size} {self._transport!r}>"


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its methods.
        super().connection_made(CoalescingTransport(transport, self.loop))

    def eof_received(self) -> None:
        # The client half-closed. uvicorn answers None, and the loop then closes the real transport
        # itself (not through the wrapper): what is held must go now, or a response the app already
        # sent is lost (uvloop runs the flush callback only after the read that brought the EOF).
        if isinstance(self.transport, CoalescingTransport):
            self.transport.flush()
        super().eof_received()
