"""The documented NATS-subscriber alert handler works as written (docs/examples)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from adapters.nats.event_log import EventLog
from domain.events import AlertRaised
from tests.builders import make

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "nats_alert_subscriber.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("nats_alert_subscriber", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_subscriber_receives_every_alert(nats_url: str) -> None:
    example = load_example()
    log = await EventLog.connect(nats_url)  # the system's streams, as a running Catalyst has
    got: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def handle(alert: dict[str, Any]) -> None:
        got.append(alert)
        if len(got) == 2:
            stop.set()

    for i, severity in enumerate(("CRITICAL", "INFO")):
        await log.publish(make(AlertRaised, f"alert-{i}", alert_id=f"a{i}", kind="test",
                               severity=severity, title=f"alert {i}"))
    await asyncio.wait_for(example.follow_alerts(nats_url, handle, stop=stop), 20)
    assert [(a["severity"], a["title"]) for a in got] == [("CRITICAL", "alert 0"),
                                                          ("INFO", "alert 1")]
    await log.close()
