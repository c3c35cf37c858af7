"""At-least-once alerts through the running system: SMTP down for a while, the alert
delivery killed and restarted mid-outage, then SMTP back: every alert arrives exactly once.

The queue is the log: a failed delivery records AlertFailed and leaves the AlertRaised
unacked, so JetStream redelivers it; a restart resumes from the consumer's ack floor.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from uuid import uuid4

from adapters.app import build_handlers
from adapters.broker.sim import SimulatedBroker
from adapters.config_watcher import SettingsHolder
from adapters.event_log import EventLog, StreamNames
from adapters.services import Services
from config.settings import Settings
from domain.events import DailyLossWarningIssued, Event, TradingResumed
from tests.builders import T0, make
from tests.integration.test_alert_delivery import Inbox, free_port, start_smtp


def smtp_settings(port: int) -> Settings:
    return Settings.model_validate({"trading": {"alerts": {
        "channels": ["smtp"],
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout_seconds": 2},
        "recipients": {"critical": ["crit@example.com"], "warning": ["warn@example.com"],
                       "info": ["info@example.com"]},
        "retry_max_seconds": 0.5,  # retry fast in the test; production backs off to 5 min
    }}})


async def alert_events(log: EventLog) -> list[Event]:
    return [s.event async for s in log.read(["catalyst.alert.>"])]


async def until(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.1)):
        if await cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not in time")


async def start(log: EventLog, settings: Settings) -> Services:
    services = Services(SettingsHolder(settings), log,
                        SimulatedBroker.from_settings(settings.trading.broker.sim),
                        build_handlers(settings, "sim"), schedule=False, reconcile=False)
    await services.start()
    return services


async def test_outage_then_restart_then_recovery_delivers_each_alert_once(
    nats_url: str, tmp_path: Path,
) -> None:
    names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
    log = await EventLog.connect(nats_url, names=names)
    port = free_port()  # nothing listens yet: SMTP is down
    settings = smtp_settings(port)
    services = await start(log, settings)
    try:
        await log.publish(make(DailyLossWarningIssued, "warn", T0, session_date=T0.date(),
                               pnl="-1600", limit="2000", pct_used=0.8, open_positions=2))
        await log.publish(make(TradingResumed, "resumed", T0, resumed_by="ops",
                               reason="checked"))

        async def failed_twice() -> bool:
            evs = await alert_events(log)
            return sum(1 for e in evs if e.type == "AlertFailed") >= 4

        await until(failed_twice)
    finally:
        await services.stop()  # killed mid-outage

    inbox = Inbox()
    services = await start(log, settings)  # restarted, SMTP still down for a moment
    await asyncio.sleep(1.0)
    controller = start_smtp(inbox, port)  # SMTP comes back
    try:
        async def both_sent() -> bool:
            evs = await alert_events(log)
            return sum(1 for e in evs if e.type == "AlertSent") >= 2

        await until(both_sent)
        await asyncio.sleep(1.5)  # room for any wrong resend to show up
        evs = await alert_events(log)
        raised = [e for e in evs if e.type == "AlertRaised"]
        sent = [e for e in evs if e.type == "AlertSent"]
        assert len(raised) == 2
        assert sorted(e.alert_id for e in sent) == sorted(e.alert_id for e in raised)
        ids = Counter(m["Message-ID"] for m in inbox.messages())
        assert len(ids) == 2 and set(ids.values()) == {1}, ids  # each exactly once
        to = sorted(a for e in inbox.envelopes for a in e.rcpt_tos)
        assert to == ["info@example.com", "warn@example.com"]
        assert any(e.type == "AlertFailed" and e.will_retry for e in evs)
    finally:
        await services.stop()
        controller.stop()
        for s in (names.record, names.market_data):
            await log.js.delete_stream(s)
        await log.close()
