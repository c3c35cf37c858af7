"""A runtime (`Services` on the Alpaca adapter) in a process of its own, for tests that kill
it with SIGKILL: `python -m tests.integration.hard_stop_runner NATS_URL RECORD MD ALPACA_URL
KEY SECRET MAILDIR`. Prints "started" once its consumers run, then runs until killed."""

from __future__ import annotations

import asyncio
import sys

from pydantic import SecretStr

from adapters.broker.alpaca import AlpacaBroker
from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.settings import Broker, Settings


async def main(nats_url: str, record: str, md: str, url: str, key: str, secret: str,
               mail: str) -> None:
    settings = Settings.model_validate({"trading": {"alerts": {"mailbox_dir": mail}}})
    log = await EventLog.connect(nats_url, names=StreamNames(record, md))
    broker = AlpacaBroker(Broker.model_validate({
        "kind": "alpaca", "mode": "paper", "api_key": SecretStr(key),
        "secret_key": SecretStr(secret), "paper_url": url, "timeout_seconds": 30.0,
        "max_retries": 0}), backoff_initial=0.01, backoff_max=0.05, stream_reconnect_min=0.05)
    services = Services(SettingsHolder(settings), log, broker,
                        build_handlers(settings, broker.name), schedule=False, reconcile=False)
    await services.start()
    print("started", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
