"""The handler shell: evolve once per event, decide, and never lose a decision."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

import pytest

from config.settings import Settings
from domain.events import Event, TradingResumed
from handlers.base import Handler

S = Settings()


def resumed(label: str) -> TradingResumed:
    return TradingResumed(
        event_id=uuid5(NAMESPACE_URL, f"catalyst-test:base:{label}"), type="TradingResumed",
        occurred_at=datetime(2024, 3, 4, 14, 30, tzinfo=UTC), correlation_id="base-test",
        resumed_by="operator", reason=label,
    )


class FlakyHandler(Handler):
    """Counts evolves; its decide raises once, then echoes a marker event."""

    name = "flaky"

    def __init__(self, failures: int = 1) -> None:
        super().__init__()
        self.evolved: list[str] = []
        self.decided = 0
        self.failures = failures

    def evolve(self, event: Event) -> None:
        self.evolved.append(event.reason)

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        self.decided += 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError("decide failed")
        if event.reason.startswith("out:"):
            return []
        return [resumed(f"out:{event.reason}")]


def test_a_redelivered_event_whose_decide_failed_is_decided_again_not_evolved_again():
    h = FlakyHandler()
    ev = resumed("a")
    with pytest.raises(RuntimeError):
        h.handle(ev, S)
    [out] = h.handle(ev, S)  # redelivered after the failure: the decision is made now
    assert out.reason == "out:a"
    assert h.evolved == ["a", "out:a"]  # the event evolved once; its output applied at once
    assert h.handle(ev, S) == []  # decided: a further redelivery is a duplicate again
    assert h.decided == 2


def test_a_redelivered_event_that_was_decided_is_skipped():
    h = FlakyHandler(failures=0)
    ev = resumed("b")
    assert len(h.handle(ev, S)) == 1
    assert h.handle(ev, S) == []
    assert h.evolved == ["b", "out:b"] and h.decided == 1
