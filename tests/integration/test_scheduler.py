"""The real-time scheduler, with a controlled clock: started late in the day it ticks from
now on (no burst of stale scans), and the session handler turns its ticks into the entry
cut-off, the flatten and the session end at the close."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from adapters.broker.sim import SimulatedBroker
from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.settings import Settings
from domain.events import ClockTicked, Event

# Monday 2026-03-02, 15:55:30 New York (20:55:30 UTC): five minutes before the close.
LATE = datetime(2026, 3, 2, 20, 55, 30, tzinfo=UTC)


class FakeTime:
    """Time moves only when the scheduler sleeps."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0.01)


async def test_started_late_it_ticks_from_now_to_the_close(nats_url: str, tmp_path: Path) -> None:
    names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
    log = await EventLog.connect(nats_url, names=names)
    settings = Settings.model_validate({"trading": {"alerts": {"mailbox_dir": str(tmp_path)}}})
    t = FakeTime(LATE)
    services = Services(SettingsHolder(settings), log,
                        SimulatedBroker.from_settings(settings.trading.broker.sim),
                        build_handlers(settings, "sim"), clock=t.clock, sleep=t.sleep,
                        reconcile=False)
    await services.start()
    try:
        events: list[Event] = []
        for _ in range(300):
            events = [s.event async for s in log.read(["catalyst.session.>"])]
            if any(e.type == "SessionEnded" for e in events):
                break
            await asyncio.sleep(0.05)
        ticks = [e.occurred_at for e in events if isinstance(e, ClockTicked)]
        assert ticks == [datetime(2026, 3, 2, 20, m, tzinfo=UTC) for m in range(56, 60)] + [
            datetime(2026, 3, 2, 21, 0, tzinfo=UTC)]
        types = [e.type for e in events if e.type != "ClockTicked"]
        assert types[:2] == ["SessionStartRequested", "SessionStarted"]
        # Past the entry cut-off and the flatten time at the first tick; ended at the close.
        assert "ScanRequested" not in types
        assert types.count("EntriesStopped") == 1 and types.count("FlattenRequested") == 1
        assert types[-1] == "SessionEnded"
    finally:
        await services.stop()
        for s in (names.record, names.market_data):
            await log.js.delete_stream(s)
        await log.close()
