"""The one place that decides whether a failed attempt is tried again (style habit 1).

Pure: the shells call :func:`decide` after every failed attempt and do what it says (sleep, switch
host, send again with a fresh nonce and signature, or raise). Rules:

* :class:`ConnectError` (WeChat never reached): fail over to the next host of the ordered list at once;
  when every host has refused the connection, back off and start again from the first host. Each
  round over the hosts counts as one retry.
* ``err_code`` values the protocol's error table marks ``auto_retry`` (``SYSTEMERROR``,
  ``BIZERR_NEED_RETRY``: WeChat asks for the same request again) and login
  ``errcode=-1``: back off and retry on the same host.
* :class:`ReadTimeoutError` and answers that break the protocol (HTTP 5xx, not XML): the request may
  have been processed. Queries (idempotent reads) are retried; anything that changes state
  (``orders.create``, ``refunds.create``, ``orders.close``) is **not**: the error is raised with
  ``outcome_unknown=True`` and the caller must query.
* Everything else is raised at once.

Business identifiers (``out_trade_no``, ``out_refund_no``) never change between attempts: the
shells re-send the same fields; only ``nonce_str`` and ``sign`` are new each time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from minipay.protocol import (
    BusinessError,
    ConnectError,
    LoginError,
    MinipayError,
    ReadTimeoutError,
    UnexpectedResponseError,
    describe_code,
)

__all__ = ["AUTO_RETRY_LOGIN_CODES", "Backoff", "RetryDecision", "decide"]

#: jscode2session ``errcode`` retried automatically (-1: system busy). 45011 (rate limit) is
#: ``retryable`` but only after the minute is over, so it is raised.
AUTO_RETRY_LOGIN_CODES: Final[frozenset[int]] = frozenset({-1})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``min(cap, initial * factor**n)``, scaled into ``[1-jitter, 1]``."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff needs initial >= 0, factor >= 1, cap >= 0 and 0 <= jitter <= 1")

    def delay(self, retry_number: int, random: Callable[[], float]) -> float:
        """The sleep before retry number ``retry_number`` (0-based)."""
        base = min(self.cap, self.initial * self.factor**retry_number)
        return base * (1.0 - self.jitter * random())


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt."""

    action: Literal["raise", "retry"]
    delay: float = 0.0
    host_index: int = 0
    retries_used: int = 0
    reason: str = ""


def decide(
    error: MinipayError,
    *,
    idempotent: bool,
    retries_used: int,
    max_retries: int,
    host_index: int,
    host_count: int,
    backoff: Backoff,
    random: Callable[[], float],
) -> RetryDecision:
    """Decide what follows a failed attempt (see the module docstring for the rules).

    ``idempotent`` is true for reads (queries, bill, rate, login); ``retries_used`` counts the retries
    already spent (fail-overs inside one round over the hosts are free); ``host_index`` is the host
    that just failed.
    """

    def back_off(reason: str, next_host: int) -> RetryDecision:
        if retries_used >= max_retries:
            return RetryDecision("raise", host_index=host_index, retries_used=retries_used, reason=reason)
        return RetryDecision(
            "retry",
            delay=backoff.delay(retries_used, random),
            host_index=next_host,
            retries_used=retries_used + 1,
            reason=reason,
        )

    if isinstance(error, ConnectError):
        if host_index + 1 < host_count:
            return RetryDecision("retry", host_index=host_index + 1, retries_used=retries_used, reason="failover")
        return back_off("connect", 0)
    if isinstance(error, BusinessError) and describe_code(error.operation, error.err_code).auto_retry:
        return back_off(error.err_code, host_index)
    if isinstance(error, LoginError) and error.errcode in AUTO_RETRY_LOGIN_CODES:
        return back_off(f"errcode {error.errcode}", host_index)
    if isinstance(error, ReadTimeoutError | UnexpectedResponseError) and idempotent:
        return back_off("outcome unknown on a read", host_index)
    return RetryDecision("raise", host_index=host_index, retries_used=retries_used, reason="final")
