"""The one retry policy (adapters/nats/retry.py): its waits, its stops, what it retries."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from adapters.nats.retry import backoff, backoff_delay, retrying


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    wait = backoff(0.5, 3.0)
    waits = []
    for n in range(1, 6):
        state = RetryCallState(None, None, (), {})
        state.attempt_number = n
        waits.append(wait(state))
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert [backoff_delay(n, 0.5, 3.0) for n in range(1, 6)] == waits


async def test_it_retries_what_it_is_told_to_for_so_many_attempts_then_reraises() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    calls = 0
    with pytest.raises(TimeoutError):
        async for attempt in retrying(retry_on=lambda e: isinstance(e, TimeoutError),
                                      initial=0.1, maximum=1.0, attempts=3, sleep=sleep):
            with attempt:
                calls += 1
                raise TimeoutError("again")
    assert calls == 3 and slept == [0.1, 0.2]


async def test_other_errors_pass_at_once() -> None:
    calls = 0
    with pytest.raises(KeyError):
        async for attempt in retrying(retry_on=lambda e: isinstance(e, TimeoutError),
                                      initial=0.1, maximum=1.0, seconds=5):
            with attempt:
                calls += 1
                raise KeyError("no")
    assert calls == 1


def test_a_policy_says_when_it_stops() -> None:
    with pytest.raises(ValueError, match="attempts or seconds"):
        retrying(retry_on=bool, initial=0.1, maximum=1.0)
