"""Backoff schedules: explicit gaps then the last one forever; exponential with a cap."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from minipay.server.worker import ACTIVE_QUERY, JOB_ERROR, REFUND_QUERY, Backoff, Schedule


def test_the_active_query_is_dense_first_then_every_ten_minutes() -> None:
    gaps = [ACTIVE_QUERY.gap(n).total_seconds() for n in range(9)]
    assert gaps == [10, 20, 30, 60, 120, 300, 600, 600, 600]


def test_refund_queries_stretch_to_six_hours() -> None:
    assert REFUND_QUERY.gap(0) == timedelta(seconds=30)
    assert REFUND_QUERY.gap(100) == timedelta(hours=6)


def test_job_errors_double_up_to_thirty_minutes() -> None:
    assert [JOB_ERROR.gap(n).total_seconds() for n in range(4)] == [5, 10, 20, 40]
    assert JOB_ERROR.gap(10_000) == timedelta(minutes=30)


def test_jitter_stays_within_its_fraction_and_repeats_with_the_seed() -> None:
    backoff = Backoff(timedelta(seconds=10), 2.0, timedelta(minutes=1), jitter=0.1)
    first = [backoff.gap(2, random.Random(7)) for _ in range(3)]
    assert first == [backoff.gap(2, random.Random(7)) for _ in range(3)]
    assert all(timedelta(seconds=36) <= g <= timedelta(seconds=44) for g in first)


def test_a_schedule_needs_positive_gaps() -> None:
    with pytest.raises(ValueError, match="positive gap"):
        Schedule(())
    with pytest.raises(ValueError, match="positive gap"):
        Schedule((timedelta(0),))
