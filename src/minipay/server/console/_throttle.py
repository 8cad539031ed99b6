"""Failed console sign-ins per client address: guessing API keys at ``/console/login`` is slowed.

After ``limit`` failed sign-ins from one address within ``window`` seconds, that address gets
``429`` with ``Retry-After`` (the seconds until its oldest counted failure leaves the window) and
its key is not even compared; a successful sign-in clears its count. The count lives in the
process (each replica counts on its own) and at most ``max_clients`` addresses are remembered
(the least recently failing are forgotten first), so a flood of addresses cannot exhaust memory.

Behind a reverse proxy the client address is the proxy's unless uvicorn is told to trust its
``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``): otherwise every person shares one count.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["SignInThrottle"]


class SignInThrottle:
    """>>> throttle = SignInThrottle(limit=2, window=60.0)
    >>> throttle.failed("10.0.0.1"); throttle.failed("10.0.0.1")
    >>> 0 < (throttle.retry_after("10.0.0.1") or 0) <= 60
    True
    """

    def __init__(
        self,
        *,
        limit: int = 10,
        window: float = 300.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str) -> int | None:
        """Whole seconds ``client`` must wait before its next attempt, or None if it may try now."""
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._recent(client, now) or deque(maxlen=self.limit)
        failures.append(now)
        self._failures[client] = failures
        self._failures.move_to_end(client)
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
