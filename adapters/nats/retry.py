"""The one retry policy (tenacity): exponential backoff, capped, with optional jitter.

    async for attempt in retrying(retry_on=is_transient, initial=0.05, maximum=1.0,
                                  jitter=0.05, seconds=120):
        with attempt:
            return await call()

Waits are `initial`, 2x, 4x ... up to `maximum`, plus up to `jitter` seconds at random (so
clients that failed together do not come back together). It stops after `attempts` attempts
or `seconds` seconds, whichever is given, and then re-raises the last error for the caller
to name. `backoff_delay` is the same curve for a caller that waits between polls rather than
between failures. The NATS calls (`event_log.with_retry`), the Alpaca HTTP calls and the
execution service's broker steps all use it; only their figures differ.

It lives beside the event log, its first user, because every adapter role may import
`adapters.nats` (docs/architecture.md, the arrows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)
from tenacity.wait import wait_base, wait_exponential, wait_random

__all__ = ["backoff", "backoff_delay", "retrying"]


def backoff(initial: float, maximum: float, jitter: float = 0.0) -> wait_base:
    wait: wait_base = wait_exponential(multiplier=initial, max=maximum)
    if jitter:
        # `+` of two waits: spelled so it works on tenacity 8 and 9.
        wait = wait + wait_random(0, jitter)
    return wait


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """The wait after `attempt` (1, 2, ...) without jitter: what `backoff` waits."""
    return min(maximum, initial * 2 ** (attempt - 1))


def retrying(
    *,
    retry_on: Callable[[BaseException], bool],
    initial: float,
    maximum: float,
    jitter: float = 0.0,
    attempts: int | None = None,
    seconds: float | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    if (attempts is None) == (seconds is None):
        raise ValueError("give attempts or seconds, one of them")
    stop = stop_after_attempt(attempts) if attempts is not None else stop_after_delay(seconds)
    extra: dict[str, Any] = {}
    if sleep is not None:  # tests and simulations pass a sleep that does not wait
        extra["sleep"] = sleep
    if before_sleep is not None:
        extra["before_sleep"] = before_sleep
    return AsyncRetrying(retry=retry_if_exception(retry_on), stop=stop,
                         wait=backoff(initial, maximum, jitter), reraise=True, **extra)
