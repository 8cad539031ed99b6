"""Backoff schedules of the worker's jobs (pure: no clock, no I/O).

A schedule maps the number of attempts already made to the gap before the next one. Gaps are
deterministic by default; jitter is opt-in and takes its randomness from the caller so tests repeat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "ACTIVE_QUERY",
    "JOB_ERROR",
    "REFUND_QUERY",
    "Backoff",
    "Schedule",
]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Explicit gaps, then the last gap repeated forever.

    >>> Schedule((timedelta(seconds=10), timedelta(seconds=30))).gap(5)
    datetime.timedelta(seconds=30)
    """

    gaps: tuple[timedelta, ...]

    def __post_init__(self) -> None:
        if not self.gaps or any(g <= timedelta(0) for g in self.gaps):
            raise ValueError("a schedule needs at least one positive gap")

    def gap(self, attempt: int) -> timedelta:
        """The gap after attempt number ``attempt`` (0-based: 0 is the gap after the first attempt)."""
        return self.gaps[min(max(attempt, 0), len(self.gaps) - 1)]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff ``base * factor**attempt`` capped at ``cap``, with optional jitter.

    >>> Backoff(timedelta(seconds=5), 2.0, timedelta(minutes=10)).gap(3)
    datetime.timedelta(seconds=40)
    """

    base: timedelta
    factor: float
    cap: timedelta
    jitter: float = 0.0  # fraction of the gap, e.g. 0.1 -> +-10%

    def gap(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        attempt = max(attempt, 0)
        # Cap the exponent so a job retried for days never overflows a float.
        raw = self.base.total_seconds() * self.factor ** min(attempt, 64)
        seconds = min(raw, self.cap.total_seconds())
        if self.jitter and rng is not None:
            seconds *= 1 + rng.uniform(-self.jitter, self.jitter)
        return timedelta(seconds=max(seconds, 0.001))


def _s(*seconds: int) -> tuple[timedelta, ...]:
    return tuple(timedelta(seconds=s) for s in seconds)


#: Active query of a pending payment, after the first check (WeChat's "business time 1"):
#: dense at first (most payments finish within seconds), then every 10 minutes until expiry.
ACTIVE_QUERY = Schedule(_s(10, 20, 30, 60, 120, 300, 600))

#: Refund follow-up: balance refunds finish within ~20 minutes, card refunds may take days
#: (spec 16.4), so the gaps grow to 6 hours.
REFUND_QUERY = Schedule(_s(30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600))

#: A job that raised (SYSTEMERROR, network down, a bug): retried with exponential backoff.
JOB_ERROR = Backoff(base=timedelta(seconds=5), factor=2.0, cap=timedelta(minutes=30))
