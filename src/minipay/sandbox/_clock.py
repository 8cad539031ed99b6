"""The virtual clock: everything time-based in the sandbox reads it (expiry, retries, bills...).

Frozen by default (it moves only through :meth:`set` / :meth:`advance`); in real-time mode it
follows the machine's monotonic clock times ``speed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from minipay.protocol import require_aware

__all__ = ["VirtualClock"]


class VirtualClock:
    """A settable clock returning aware UTC datetimes.

    >>> c = VirtualClock(datetime(2024, 1, 1, tzinfo=UTC))
    >>> c.advance(90).isoformat()
    '2024-01-01T00:01:30+00:00'
    """

    def __init__(
        self,
        start: datetime,
        *,
        realtime: bool = False,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._base = require_aware(start, "start").astimezone(UTC)
        self._monotonic = monotonic
        self._base_mono = monotonic()
        self.realtime = realtime
        self.speed = speed

    def now(self) -> datetime:
        if not self.realtime:
            return self._base
        elapsed = (self._monotonic() - self._base_mono) * self.speed
        return self._base + timedelta(seconds=elapsed)

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (aware). Going backwards is allowed: tests may need it."""
        self._base = require_aware(when, "set").astimezone(UTC)
        self._base_mono = self._monotonic()
        return self._base

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("advance takes a non-negative number of seconds")
        return self.set(self.now() + timedelta(seconds=seconds))
