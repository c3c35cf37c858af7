"""A background loop that keeps failing is restarted, and a person hears about it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.settings import Settings
from domain.events import AlertRaised, AlertSent, HandlerCrashLooping


class StreamAlwaysFails:
    """A broker whose order-update stream breaks at once, every time (a hand-written fake)."""

    name = "paper"

    def __init__(self) -> None:
        self.attempts = 0

    async def trade_updates(self, since: object = None) -> AsyncIterator[object]:
        self.attempts += 1
        raise ConnectionError("stream refused")
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None


async def test_a_crash_looping_loop_raises_a_critical_alert(nats_url: str, tmp_path: Path) -> None:
    names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
    log = await EventLog.connect(nats_url, names=names)
    settings = Settings.model_validate({"trading": {"alerts": {"mailbox_dir": str(tmp_path)}}})
    broker = StreamAlwaysFails()
    services = Services(SettingsHolder(settings), log, broker,  # type: ignore[arg-type]
                        build_handlers(settings, "paper"), schedule=False, reconcile=False)
    await services.start()
    try:
        for _ in range(200):
            evs = [s.event async for s in log.read(["catalyst.ops.>", "catalyst.alert.>"])]
            if any(isinstance(e, AlertSent) for e in evs):
                break
            await asyncio.sleep(0.1)
        looping = [e for e in evs if isinstance(e, HandlerCrashLooping)]
        assert len(looping) == 1 and looping[0].handler == "broker_updates"
        assert "stream refused" in looping[0].error
        alert = next(e for e in evs if isinstance(e, AlertRaised))
        assert alert.severity == "CRITICAL"
        assert broker.attempts >= 3  # restarted, not given up
        assert list((tmp_path / "new").iterdir())  # the CRITICAL mail was delivered
    finally:
        await services.stop()
        for s in (names.record, names.market_data):
            await log.js.delete_stream(s)
        await log.close()
