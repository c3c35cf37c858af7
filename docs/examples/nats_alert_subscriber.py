"""Your own alert handler as a plain NATS subscriber: no Catalyst code needed, only nats-py.

Every alert the system decides is an `AlertRaised` event on `catalyst.alert.raised` (its
JSON Schema: `catalyst events schema AlertRaised`). This example follows them with a
durable JetStream consumer, so it resumes where it stopped and misses nothing while down,
and hands each one to `handle` (replace it with a pager, a chat message, ...).

    python docs/examples/nats_alert_subscriber.py nats://127.0.0.1:PORT

With the embedded server, the URL of a running Catalyst is in var/nats/server.url.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig

SUBJECT = "catalyst.alert.raised"


async def follow_alerts(url: str, handle: Callable[[dict[str, Any]], Awaitable[None]],
                        durable: str = "my_alert_handler",
                        stop: asyncio.Event | None = None) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        SUBJECT, durable=durable, stream="CATALYST",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(10, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await handle(json.loads(msg.data))
                await msg.ack()  # only after it was handled: at least once
    finally:
        await nc.drain()


async def print_alert(alert: dict[str, Any]) -> None:
    print(f"[{alert['severity']}] {alert['title']} ({alert['kind']}, {alert['occurred_at']})")


if __name__ == "__main__":
    asyncio.run(follow_alerts(sys.argv[1], print_alert))
