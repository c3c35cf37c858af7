"""At-least-once alerts through the running system: SMTP down for a while, the alert
delivery killed and restarted mid-outage, then SMTP back: every alert arrives exactly once.

The queue is the log: a failed delivery records AlertFailed and leaves the AlertRaised
unacked, so JetStream redelivers it; a restart resumes from the consumer's ack floor.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import uuid4

from adapters.broker.sim import SimulatedBroker
from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
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


CHILD = '''
import asyncio, json, sys
from adapters.runtime.app import build_handlers
from adapters.broker.sim import SimulatedBroker
from adapters.runtime.config_watcher import SettingsHolder
from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.realtime import Services
from config.settings import Settings

async def main():
    args = json.loads(sys.argv[1])
    settings = Settings.model_validate(args["settings"])
    log = await EventLog.connect(args["url"], names=StreamNames(*args["names"]))
    services = Services(SettingsHolder(settings), log,
                        SimulatedBroker.from_settings(settings.trading.broker.sim),
                        build_handlers(settings, "sim"), schedule=False, reconcile=False)
    await services.start()
    print("started", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


async def test_kill_9_while_one_channel_retries_then_restart_sends_nothing_twice(
    nats_url: str, tmp_path: Path,
) -> None:
    """SMTP took the alert, the webhook is down and retrying; the process is killed -9.
    After the restart the webhook gets it once it is back, and SMTP does not get it again
    (the AlertSent past the consumer's ack floor is read back)."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from aiohttp import web

    names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
    log = await EventLog.connect(nats_url, names=names)
    inbox, smtp_port, hook_port = Inbox(), free_port(), free_port()
    controller = start_smtp(inbox, smtp_port)
    raw = {"trading": {"alerts": {
        "channels": ["smtp", "webhook"],
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                 "timeout_seconds": 2},
        "webhook": {"url": f"http://127.0.0.1:{hook_port}/hook", "timeout_seconds": 1},
        "recipients": {"warning": ["warn@example.com"]},
        "retry_max_seconds": 0.5,
    }}}
    settings = Settings.model_validate(raw)
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps({"settings": raw, "url": nats_url,
                                                  "names": [names.record, names.market_data]})],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE,
    )
    services: Services | None = None
    runner: web.AppRunner | None = None
    try:
        assert child.stdout is not None
        await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        await log.publish(make(DailyLossWarningIssued, "warn-k9", T0, session_date=T0.date(),
                               pnl="-1600", limit="2000", pct_used=0.8, open_positions=2))

        async def smtp_sent_webhook_retrying() -> bool:
            evs = await alert_events(log)
            sent = any(e.type == "AlertSent" and e.channel == "smtp" for e in evs)
            fails = sum(1 for e in evs if e.type == "AlertFailed" and e.channel == "webhook")
            return sent and fails >= 2

        await until(smtp_sent_webhook_retrying)
        os.kill(child.pid, signal.SIGKILL)  # no goodbye, no ack
        child.wait(10)
        assert len(inbox.envelopes) == 1

        received: list[dict[str, Any]] = []

        async def hook(request: web.Request) -> web.Response:
            received.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()  # the webhook is back
        services = await start(log, settings)  # the restart

        async def webhook_sent() -> bool:
            return any(e.type == "AlertSent" and e.channel == "webhook"
                       for e in await alert_events(log))

        await until(webhook_sent)
        await asyncio.sleep(1.5)  # room for a wrong resend to show up
        assert len(received) == 1
        ids = Counter(e.content.split(b"Message-ID: ")[1].split(b"\r\n")[0]  # type: ignore[union-attr]
                      for e in inbox.envelopes)
        assert list(ids.values()) == [1], ids  # SMTP got it once, before the kill
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        if services is not None:
            await services.stop()
        if runner is not None:
            await runner.cleanup()
        controller.stop()
        for s in (names.record, names.market_data):
            await log.js.delete_stream(s)
        await log.close()
