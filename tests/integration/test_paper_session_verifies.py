"""A paper session verifies like a backtest: the real-time runtime (the sequencer, the
effects as consumers) against the fake Alpaca through the real alpaca-py client, on a
recorded day of the bundled data, with the broker's update stream dropped in the middle of
the session and the whole runtime restarted later in it. `replay --verify` on the log it
leaves finds 0 divergences."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.audit.settings_history import plan_for_nats
from adapters.audit.verify import verify
from adapters.broker.alpaca import AlpacaBroker
from adapters.nats.event_log import EventLog
from adapters.nats.log_source import NatsSource
from adapters.runtime.app import bundled_tape, default_session
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from adapters.runtime.run_record import run_started
from adapters.runtime.simulation import MarketTape, SimulatedClock
from config.settings import Settings
from domain.events import (
    BarReceived,
    ClockTicked,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderFilled,
    OrderPartiallyFilled,
)
from tests.fakes.alpaca_fixtures import broker_settings
from tests.fakes.alpaca_server import FakeAlpaca, FakeOrder
from tests.integration.test_alpaca_runtime import fresh_log

pytestmark = pytest.mark.integration


class _Recorder:
    async def flush(self) -> None:
        return None

    async def maybe_flush(self) -> None:
        return None


class LiveFeed:
    """What the runtime's market-data pump and scheduler do, for a recorded day: each input
    handed to the running sequencer. Between two minutes the venue trades (`on_minute`)."""

    def __init__(self, on_minute: Callable[[ClockTicked], Awaitable[None]]) -> None:
        self.services: Services | None = None
        self.on_minute = on_minute
        self.recorder = _Recorder()
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        self.last_close: dict[str, Decimal] = {}
        self.bars: dict[str, Any] = {}

    def clock(self) -> datetime:
        return self.now

    async def submit(self, ev: Event) -> None:
        self.now = max(self.now, ev.occurred_at)
        if isinstance(ev, BarReceived) and ev.bar.timeframe == "1Min":
            self.bars[ev.symbol] = ev.bar
        if isinstance(ev, ClockTicked):
            await self.on_minute(ev)
        assert self.services is not None
        await self.services.record([ev])


class Venue:
    """The fake Alpaca trading as a market would on the day's bars: entries (marketable
    limits) at their limit, stops and take-profits when a bar crosses them, market orders at
    the last price."""

    def __init__(self, fake: FakeAlpaca, feed: LiveFeed) -> None:
        self.fake, self.feed = fake, feed
        fake.auto_fill_market = True
        self.filled = 0

    async def trade(self) -> None:
        for symbol, bar in self.feed.bars.items():
            self.fake.set_price(symbol, bar.close)
        for o in list(self.fake.orders.values()):
            if not o.is_active:
                continue
            bar = self.feed.bars.get(o.symbol)
            if bar is None:
                continue
            price = self._execution_price(o, bar)
            if price is not None:
                await self.fake.fill(o.id, price, self._quantity(o))
                self.filled += 1

    def _quantity(self, o: FakeOrder) -> Decimal | None:
        """How much of `o` trades now (None: all of it)."""
        return None

    @staticmethod
    def _execution_price(o: FakeOrder, bar: Any) -> Decimal | None:
        buy = o.side == "buy"
        if o.type == "market":
            return Decimal(bar.close)
        if o.type == "limit" and o.limit_price is not None:
            if o.parent is None:  # an entry: marketable when sent
                return o.limit_price
            crossed = bar.low <= o.limit_price if buy else bar.high >= o.limit_price
            return o.limit_price if crossed else None
        if o.stop_price is not None:
            crossed = bar.high >= o.stop_price if buy else bar.low <= o.stop_price
            return o.stop_price if crossed else None
        return None


async def _start(nats_url: str, names: Any, settings: Settings, fake: FakeAlpaca,
                 clock: Callable[[], datetime]) -> tuple[Services, EventLog]:
    log = await EventLog.connect(nats_url, names=names)
    broker = AlpacaBroker(broker_settings(fake), backoff_initial=0.01, backoff_max=0.05,
                          stream_reconnect_min=0.05)
    services = Services(SettingsHolder(settings), log, broker,
                        build_handlers(settings, broker.name), clock=clock, schedule=False,
                        reconcile=True)
    await services.start()
    return services, log


async def _quiet(services: Services, log: EventLog, fake: FakeAlpaca) -> None:
    """Until every effect has taken what was recorded and the broker's updates are in."""
    for _ in range(3):
        await asyncio.sleep(0.3)
        for c in services.consumers + (services.sequencer.consumers if services.sequencer else []):
            async with asyncio.timeout(30):
                while (await c.info()).num_pending or (await c.info()).num_ack_pending:
                    await asyncio.sleep(0.05)


@pytest.mark.timeout(240)
async def test_a_paper_session_with_a_stream_drop_and_a_restart_verifies_with_0_divergences(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {"trading": {"alerts": {"mailbox_dir": str(tmp_path / "mail")}}})
    tape: MarketTape = bundled_tape(settings)
    day = default_session(settings) or tape.dates[-1]
    restarts: list[str] = []

    async with fresh_log(nats_url) as log:
        current: dict[str, Any] = {}

        async def on_minute(tick: ClockTicked) -> None:
            minute = int((tick.occurred_at - first_tick[0]).total_seconds() // 60) \
                if first_tick else 0
            if not first_tick:
                first_tick.append(tick.occurred_at)
            if minute == 40:
                # The update stream drops while the venue trades: the runtime's backfill
                # after the reconnect must record what it missed, once.
                listens = fake_alpaca.listen_count
                async with fake_alpaca.stream_outage():
                    await venue.trade()
                await fake_alpaca.wait_for_listen_count(listens + 1, timeout=20)
                await _quiet(current["services"], current["log"], fake_alpaca)
                restarts.append("stream")
                return
            if minute == 120:
                # The runtime stops; the venue trades while it is down; a new one starts on
                # the same log, rebuilds, backfills and goes on deciding.
                await _quiet(current["services"], current["log"], fake_alpaca)
                await current["services"].stop()
                await current["log"].close()
                await venue.trade()
                services, new_log = await _start(nats_url, log.names, settings, fake_alpaca,
                                                 feed.clock)
                current.update(services=services, log=new_log)
                feed.services = services
                restarts.append("process")
                return
            await venue.trade()

        first_tick: list[datetime] = []
        feed = LiveFeed(on_minute)
        venue = Venue(fake_alpaca, feed)
        fake_alpaca.clock = lambda: feed.now + timedelta(seconds=1)
        market_open = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=13)
        feed.now = market_open
        await log.publish(run_started("paper-verify", "paper", settings,
                                      build_handlers(settings, "paper"), "paper", market_open))
        services, first_log = await _start(nats_url, log.names, settings, fake_alpaca,
                                           feed.clock)
        current.update(services=services, log=first_log)
        feed.services = services
        try:
            await SimulatedClock(feed, tape, "paper-verify").run([day])  # type: ignore[arg-type]
            await _quiet(current["services"], current["log"], fake_alpaca)
        finally:
            await current["services"].stop()
            await current["log"].close()

        events = [s.event async for s in log.read()]
        result = await verify(await NatsSource(log).open(), await plan_for_nats(log, settings),
                              jobs=1)

    assert restarts == ["stream", "process"]
    broker_fills = [e for e in events if isinstance(e, OrderFilled | OrderPartiallyFilled)
                    and e.broker_order_id]
    venue_fills = [u for u in fake_alpaca.sent_updates if u["event"] in ("fill", "partial_fill")]
    assert any(isinstance(e, OrderApproved) for e in events)
    assert len(broker_fills) >= 2, "the session traded"
    # Every fill the venue made is recorded once (by its broker fill id), none invented.
    assert len({f.fill_id for f in broker_fills}) == len(broker_fills)  # type: ignore[attr-defined]
    assert len(broker_fills) == len(venue_fills)
    assert result.divergences == 0, [d.__dict__ for d in result.reported[:5]]
    assert result.derived > 0
    print(f"{len(events)} events, {len(broker_fills)} fills, "
          f"{sum(isinstance(e, EmergencyStopTriggered) for e in events)} emergency stops, "
          f"{result.summary()}")
