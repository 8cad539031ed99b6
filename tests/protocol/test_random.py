"""``random_hex``: the OS's random bytes read in blocks, each byte handed out once, in threads and
across a fork."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from minipay.protocol import new_nonce, random_hex


def test_random_hex_is_lower_case_hex_of_twice_the_bytes_asked_for() -> None:
    for nbytes in (0, 1, 12, 16, 4096, 5000):
        value = random_hex(nbytes)
        assert re.fullmatch(r"[0-9a-f]*", value)
        assert len(value) == 2 * nbytes
    with pytest.raises(ValueError, match="negative"):
        random_hex(-1)


def test_values_never_repeat_across_blocks() -> None:
    values = [random_hex(16) for _ in range(2000)]  # several 4 KiB blocks
    assert len(set(values)) == len(values)
    nonces = [new_nonce() for _ in range(500)]
    assert len(set(nonces)) == len(nonces)
    assert all(re.fullmatch(r"[0-9a-f]{32}", n) for n in nonces)


def test_threads_never_get_the_same_bytes() -> None:
    found: list[list[str]] = []

    def take() -> None:
        found.append([random_hex(16) for _ in range(1000)])

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = [v for chunk in found for v in chunk]
    assert len(values) == 8000
    assert len(set(values)) == 8000


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="no fork on this platform")
def test_a_forked_child_never_hands_out_its_parents_bytes() -> None:
    random_hex(8)  # the parent holds a block with bytes left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next value, to the parent
        try:
            os.write(write, random_hex(16).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_hex(16)  # the parent's next value is not the child's
