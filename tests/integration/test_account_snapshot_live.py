"""Issue 14, item 6, live: with the Alpaca adapter (fake Alpaca server) the runtime publishes
the broker's account at start and the risk guard sizes against it, not against the simulated
$100,000."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.broker.alpaca import AlpacaBroker
from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.settings import Settings
from domain.events import AccountSnapshotted, Event, OrderApproved, SignalGenerated
from tests.builders import make
from tests.fakes.alpaca_fixtures import broker_settings
from tests.fakes.alpaca_server import FakeAlpaca

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def fresh_log(nats_url: str) -> AsyncIterator[EventLog]:
    names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
    log = await EventLog.connect(nats_url, names=names)
    try:
        yield log
    finally:
        for stream in (names.record, names.market_data):
            with contextlib.suppress(Exception):
                await log.js.delete_stream(stream)
        await log.close()


async def wait_for(log: EventLog, cls: type[Event], timeout: float = 20.0) -> list[Event]:
    async with asyncio.timeout(timeout):
        while True:
            found = [s.event async for s in log.read() if isinstance(s.event, cls)]
            if found:
                return found
            await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_the_risk_guard_sizes_against_the_alpaca_account(
    nats_url: str, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    fake_alpaca.cash = Decimal(3_000)  # a small cash account (multiplier 1)
    fake_alpaca.multiplier = Decimal(1)
    settings = Settings.model_validate({
        "trading": {"alerts": {"mailbox_dir": str(tmp_path / "mail")}},
        "risk": {"risk_limits": {"max_symbol_exposure_pct": 1.0}}})
    broker = AlpacaBroker(broker_settings(fake_alpaca), backoff_initial=0.01,
                          backoff_max=0.05, stream_reconnect_min=0.05)
    async with fresh_log(nats_url) as log:
        services = Services(SettingsHolder(settings), log, broker,
                            build_handlers(settings, broker.name), schedule=False,
                            reconcile=False)
        await services.start()
        try:
            (snap,) = await wait_for(log, AccountSnapshotted)
            assert (snap.cash, snap.equity, snap.buying_power) == (
                Decimal(3_000), Decimal(3_000), Decimal(3_000))
            assert snap.broker == broker.name
            await log.publish(make(
                SignalGenerated, "sig-live", datetime.now(UTC), signal_id="sig-live",
                symbol="AAPL", side="buy", entry=Decimal(100), stop_loss=Decimal(98),
                take_profit=Decimal(104)))
            (approval,) = await wait_for(log, OrderApproved)
        finally:
            await services.stop()
    # floor(3,000 / 101.00): the broker's buying power, not 10,000 / 101 = 99 shares
    assert approval.qty == 29
