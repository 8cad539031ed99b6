"""Random hex strings from the operating system's CSPRNG, read in blocks: :func:`random_hex`.

``secrets.token_hex`` makes one ``getrandom`` system call per token. A service signs ``wx.requestPayment``
parameters (a fresh ``nonceStr``) and names each request (a request id) on every payment read, and on
a virtual machine that system call costs several times the rest of making the token. The bytes here
are the same :func:`os.urandom` bytes, read 4 KiB at a time and each handed out once: under a lock
(threads may share the process), and forgotten in a forked child, which must never hand out its
parent's bytes.
"""

from __future__ import annotations

import os
import threading
from typing import Final

__all__ = ["random_hex"]

_BLOCK: Final = 4096


class _Pool:
    __slots__ = ("_block", "_lock", "_pos")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._pos = 0

    def take(self, nbytes: int) -> bytes:
        if nbytes > _BLOCK:
            return os.urandom(nbytes)
        with self._lock:
            start = self._pos
            end = start + nbytes
            if end > len(self._block):
                self._block = os.urandom(_BLOCK)
                start, end = 0, nbytes
            self._pos = end
            return self._block[start:end]

    def forget(self) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork), no bytes."""
        self._lock = threading.Lock()
        self._block = b""
        self._pos = 0


_pool = _Pool()
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_pool.forget)


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as ``2 * nbytes`` lower-case hex digits (what ``secrets.token_hex`` gives).

    >>> len(random_hex(16))
    32
    """
    if nbytes < 0:
        raise ValueError("nbytes must not be negative")
    return _pool.take(nbytes).hex()
