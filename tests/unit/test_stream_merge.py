"""The two streams in one order: by dispatch position where both carry one, else by time
with market data first on a tie, and run/role markers (wall clock) at once. The log reader
and the sequencer's rebuild merge alike."""

from __future__ import annotations

from datetime import timedelta

from adapters.nats.event_log import StoredEvent
from adapters.nats.log_source import LogEntry, md_goes_first
from adapters.runtime.sequencer import merge_streams
from domain.events import ClockTicked, RunStarted
from tests.builders import T0, make
from tests.unit.risk_builders import bar


def stored(stream: str, seq: int, ev: object, order: int | None = None) -> StoredEvent:
    return StoredEvent(seq, stream, ev.subject, ev, order)  # type: ignore[attr-defined]


def test_merge_by_position_then_time_then_markers_first() -> None:
    b1 = bar("AAPL", 100, when=T0 + timedelta(minutes=1))
    tick = make(ClockTicked, "t1", T0 + timedelta(minutes=1), session_date=T0.date())
    marker = make(RunStarted, "run", T0 + timedelta(days=400), run_id="r", kind="service",
                  broker="paper", handlers=[])
    record = [stored("record", 1, marker), stored("record", 2, tick)]
    md = [stored("market_data", 1, b1)]
    assert [s.event for s in merge_streams(record, md)] == [marker, b1, tick]
    # Stamped: the positions decide, whatever the times say.
    record = [stored("record", 1, tick, order=1)]
    md = [stored("market_data", 1, b1, order=2)]
    assert [s.event for s in merge_streams(record, md)] == [tick, b1]
    assert not md_goes_first(LogEntry("market_data", 1, b1.subject, b1),
                             LogEntry("record", 1, marker.subject, marker))
