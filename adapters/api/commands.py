"""The API's POSTs as events, and where those events go.

- A simulated run (`catalyst run --serve`) dispatches everything in one process, in a fixed
  order, so an event from the API must enter the same pipeline, between two simulated
  minutes, never in the middle of another event's dispatch: `PipelineSink` hands it to the
  clock's next minute (SimulatedClock.extra_events) and answers once it was dispatched (or
  after two seconds, when the next simulated minute is further away than that).
  Its time is the simulated "now" (the latest event's), which keeps the log replayable:
  `replay --verify` feeds it as an input, like a CLI command.
- Paper, live and the standalone API hand it to the running sequencer's inbox (`LogSink`,
  adapters.nats.inbox), as `catalyst session start` and `resume` do: it is recorded at its
  dispatch position. With no real-time system answering, it goes to the log.

The events carry no causation id: they are inputs (a person's act), not decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from adapters.nats.event_log import EventLog
from adapters.nats.inbox import submit_command
from config.settings import Settings
from domain.calendar import session_date
from domain.events import (
    EmergencyStopTriggered,
    Event,
    SessionStartRequested,
    TradingResumed,
)


class Sink(Protocol):
    def now(self) -> datetime: ...

    async def submit(self, event: Event) -> None: ...


class LogSink:
    """Publish to the event log; wall-clock time."""

    def __init__(self, event_log: EventLog, clock: Callable[[], datetime] | None = None) -> None:
        self.log = event_log
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self._clock()

    async def submit(self, event: Event) -> None:
        # Through the running sequencer's inbox (recorded at its dispatch position), or
        # straight to the log when no real-time system answers.
        await submit_command(self.log, event)


class PipelineSink:
    """Into an in-process simulated run, between two minutes of its clock."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.clock: Any = None  # the SimulatedClock, once it runs
        self.sim_now = datetime(1970, 1, 1, tzinfo=UTC)
        self.finished = False
        self._queued: list[Event] = []
        self._waiting: dict[UUID, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self.answer_within = 2.0  # seconds a POST waits for its event's dispatch

    def now(self) -> datetime:
        return self.sim_now

    def observe(self, ev: Event) -> None:
        """A pipeline observer: the simulated time, and the dispatch of our own events."""
        if ev.occurred_at > self.sim_now:
            self.sim_now = ev.occurred_at
        fut = self._waiting.pop(ev.event_id, None) if self._waiting else None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def on_minute(self, closed_at: datetime) -> None:
        """SimulatedClock.on_minute: what arrived goes in at the start of the next minute."""
        if self._queued and self.clock is not None:
            self.clock.extra_events.setdefault(closed_at, []).extend(self._queued)
            self._queued = []

    async def submit(self, event: Event) -> None:
        async with self._lock:
            if self.finished:
                # The day is over and nothing else dispatches: straight in, and recorded now.
                await self.pipeline.submit(event)
                await self.pipeline.recorder.flush()
                return
            fut = asyncio.get_running_loop().create_future()
            self._waiting[event.event_id] = fut
            self._queued.append(event)
        # Answer once it is dispatched, or after a couple of seconds: at `--speed 1` the next
        # simulated minute is a real minute away, and it goes in then all the same.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), self.answer_within)

    async def finish(self) -> None:
        """The clock has stopped: whatever is still queued (or was handed to a minute that
        never came) is dispatched now, in the order it arrived."""
        async with self._lock:
            self.finished = True
            left: list[Event] = []
            if self.clock is not None:
                for evs in self.clock.extra_events.values():
                    left += [e for e in evs if e.event_id in self._waiting]
            left += self._queued
            self._queued = []
            for ev in left:
                await self.pipeline.submit(ev)
            await self.pipeline.recorder.flush()


def start_event_id(day: date, idempotency_key: str) -> UUID:
    """One id per (session date, Idempotency-Key): the same request twice is one event."""
    return uuid5(NAMESPACE_URL, f"catalyst:api:session-start:{day.isoformat()}:"
                                f"{idempotency_key}")


def start_requested(now: datetime, who: str, day: date | None,
                    idempotency_key: str | None) -> SessionStartRequested:
    day = day or session_date(now)
    eid = start_event_id(day, idempotency_key) if idempotency_key else uuid4()
    return SessionStartRequested(event_id=eid, type="SessionStartRequested", occurred_at=now,
                                 correlation_id=f"api-{day.isoformat()}", requested_by=who,
                                 session_date=day)


def resumed(now: datetime, who: str, reason: str) -> TradingResumed:
    return TradingResumed(event_id=uuid4(), type="TradingResumed", occurred_at=now,
                          correlation_id="api", resumed_by=who, reason=reason)


def manual_stop(now: datetime, who: str, settings: Settings, pnl: Decimal,
                day: date | None = None) -> EmergencyStopTriggered:
    """The manual kill switch: the same event the risk guard emits at the limit, with reason
    `manual` and the configured actions, so the executor cancels and closes everything and
    the guard and session handler halt exactly as they do for the automatic stop."""
    return EmergencyStopTriggered(
        event_id=uuid4(), type="EmergencyStopTriggered", occurred_at=now,
        correlation_id="api", session_date=day or session_date(now), pnl=pnl,
        limit=settings.limits.max_daily_loss_usd, reason="manual",
        actions=settings.emergency.model_dump(), triggered_by=who)
