"""How the API's events enter a simulated run (adapters.api.commands.PipelineSink): at the
start of the next simulated minute, never in the middle of a dispatch, in arrival order,
stamped with the simulated time; straight in once the day is over. A real Pipeline (no
handlers, no log) and a real SimulatedClock's `extra_events` hand-off."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from adapters.api.commands import PipelineSink, resumed
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.pipeline import Pipeline
from adapters.runtime.simulation import MarketTape, SimulatedClock
from config.settings import Settings
from domain.events import ClockTicked, Event
from tests.builders import T0, make


def rig() -> tuple[Pipeline, PipelineSink, SimulatedClock, list[Event]]:
    seen: list[Event] = []
    pipeline = Pipeline(SettingsHolder(Settings()), [], observers=[seen.append])
    sink = PipelineSink(pipeline)
    pipeline.observers.append(sink.observe)
    clock = SimulatedClock(pipeline, MarketTape(), "run")
    sink.clock = clock
    return pipeline, sink, clock, seen


async def test_an_event_waits_for_the_next_minute_and_takes_the_simulated_time() -> None:
    pipeline, sink, clock, seen = rig()
    await pipeline.submit(make(ClockTicked, "tick", T0, session_date=T0.date()))
    assert sink.now() == T0
    posted = asyncio.create_task(sink.submit(resumed(sink.now(), "api:alice", "ok")))
    await asyncio.sleep(0.05)
    assert not posted.done() and len(seen) == 1  # not dispatched mid-minute
    sink.on_minute(T0)  # the clock finished the minute: hand over to the next one
    for ev in clock.extra_events.pop(T0):  # what SimulatedClock.run does at minute T0
        await pipeline.submit(ev)
    await asyncio.wait_for(posted, 1)
    assert [e.type for e in seen] == ["ClockTicked", "TradingResumed"]
    assert seen[1].occurred_at == T0


async def test_a_post_is_answered_even_when_the_next_minute_is_far_away() -> None:
    pipeline, sink, clock, seen = rig()
    sink.answer_within = 0.05
    await asyncio.wait_for(sink.submit(resumed(T0, "api:alice", "first")), 1)
    await asyncio.wait_for(sink.submit(resumed(T0, "api:alice", "second")), 1)
    assert seen == []  # answered, still queued for the next minute
    sink.on_minute(T0 + timedelta(minutes=1))
    # The clock stopped before that minute came: finish dispatches them, in order.
    await sink.finish()
    assert [e.reason for e in seen] == ["first", "second"]  # type: ignore[attr-defined]
    await sink.submit(resumed(T0, "api:alice", "after the day"))
    assert [e.reason for e in seen][-1] == "after the day"  # type: ignore[attr-defined]

