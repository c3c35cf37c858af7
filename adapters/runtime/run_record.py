"""What a run records about itself: its start record (handlers, broker, config in force)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from domain.events import (
    RunStarted,
)
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings


def run_started(run_id: str, kind: str, settings: Settings, handlers: Iterable[Handler],
                broker: str, at: datetime) -> RunStarted:
    """The fact a runtime records first: its handler set, broker and config (redacted).

    `at` should be the run's own clock (a simulation's first simulated instant), so the
    event sits with the data it precedes; its id derives from the run id."""
    from uuid import NAMESPACE_URL, uuid5

    from config.loader import redacted

    return RunStarted(
        event_id=uuid5(NAMESPACE_URL, f"catalyst:{run_id}:run_started"), type="RunStarted",
        occurred_at=at, correlation_id=run_id, run_id=run_id, kind=kind, broker=broker,
        handlers=tuple(h.name for h in handlers), config=redacted(settings),
    )
