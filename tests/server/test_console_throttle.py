"""The console's sign-in throttle on its own, with a clock the test moves (no sleeping)."""

from __future__ import annotations

from minipay.server.console._throttle import SignInThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_leave_the_window_and_a_success_clears_the_count() -> None:
    clock = Clock()
    throttle = SignInThrottle(limit=3, window=60.0, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") is None  # two of three
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 40  # the first failure (t=1000) leaves at t=1060
    assert throttle.retry_after("10.0.0.2") is None
    clock.now += 40
    assert throttle.retry_after("10.0.0.1") is None  # one failure fewer in the window: may try again
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 10
    throttle.succeeded("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None


def test_it_remembers_a_bounded_number_of_addresses() -> None:
    throttle = SignInThrottle(limit=1, window=60.0, max_clients=100, clock=Clock())
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert throttle.retry_after("10.0.3.231") is not None  # the most recent is kept
    assert throttle.retry_after("10.0.0.0") is None  # the oldest were forgotten
    assert len(throttle._failures) == 100
