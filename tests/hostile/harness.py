"""Hostile harness: the acceptance test's recorded paper day, with pluggable disruptions.

`run_session(..., actions={minute: coroutine_fn(ctx)})` runs the bundled day through the
real-time runtime against the fake Alpaca; at each listed minute the action runs instead of
the plain venue trade. Returns a Result with the log's events, the verify result and the
broker-side facts to compare.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.audit.settings_history import plan_for_nats
from adapters.audit.verify import verify
from adapters.nats.event_log import EventLog
from adapters.nats.log_source import NatsSource
from adapters.runtime.app import bundled_tape, default_session
from adapters.runtime.composition import build_handlers
from adapters.runtime.realtime import Services
from adapters.runtime.run_record import run_started
from adapters.runtime.simulation import MarketTape, SimulatedClock
from config.settings import Settings
from domain.events import (
    ClockTicked,
    Event,
    OrderFilled,
    OrderPartiallyFilled,
    ReconciliationDiscrepancyFound,
)
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_alpaca_runtime import fresh_log
from tests.integration.test_paper_session_verifies import LiveFeed, Venue, _quiet, _start

log = logging.getLogger("hostile")


@dataclass
class Ctx:
    nats_url: str
    names: Any
    settings: Settings
    fake: FakeAlpaca
    feed: LiveFeed
    venue: Venue
    current: dict[str, Any]
    root_log: EventLog
    notes: list[str] = field(default_factory=list)
    tick: Any = None
    start: Callable[..., Awaitable[Any]] = _start

    @property
    def services(self) -> Services:
        return self.current["services"]

    async def quiet(self) -> None:
        await _quiet(self.current["services"], self.current["log"], self.fake)

    async def restart(self, graceful: bool = True) -> None:
        if graceful:
            await self.current["services"].stop()
            await self.current["log"].close()
        else:
            await hard_kill(self.current["services"], self.current["log"])
        await self.relaunch()

    async def relaunch(self) -> None:
        services, new_log = await self.start(self.nats_url, self.names, self.settings,
                                             self.fake, self.feed.clock)
        self.current.update(services=services, log=new_log)
        self.feed.services = services


async def hard_kill(services: Services, event_log: EventLog) -> None:
    """As close to kill -9 as in-process gets: every task of the runtime cancelled where it
    stands (no orderly stop, no acks, no unsubscribe), the NATS socket closed, the broker's
    stream dropped."""
    tasks = [t for t in services.tasks]
    for c in services.consumers + services.sequencer.consumers:
        if c._task is not None:
            tasks.append(c._task)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(t, 5)
    services.sequencer.running = False
    nc = event_log.nc
    # Abort the transport: what is in the client's buffer is lost, as with kill -9.
    with contextlib.suppress(Exception):
        nc._pending = []  # type: ignore[attr-defined]
        nc._pending_data_size = 0  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        if nc._transport is not None:  # type: ignore[attr-defined]
            nc._transport.close()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(services.broker.close(), 5)


@dataclass
class Result:
    events: list[Event]
    verify: Any
    broker_fills: list[Event]
    venue_fills: list[dict[str, Any]]
    discrepancies: list[Event]
    notes: list[str]
    fake: FakeAlpaca
    recorded_positions: dict[str, Decimal]

    def problems(self) -> list[str]:
        out = []
        if self.verify.divergences:
            out.append(f"verify: {self.verify.divergences} divergences: "
                       f"{[d.__dict__ for d in self.verify.reported[:3]]}")
        ids = Counter(f.fill_id for f in self.broker_fills)  # type: ignore[attr-defined]
        dup = {k: v for k, v in ids.items() if v > 1}
        if dup:
            out.append(f"fills recorded twice: {dup}")
        if len(ids) != len(self.venue_fills):
            out.append(f"venue made {len(self.venue_fills)} fills, log has {len(ids)} distinct")
        broker_pos = {s: p.qty for s, p in self.fake.positions.items()}
        rec = {s: q for s, q in self.recorded_positions.items() if q}
        if {s: Decimal(q) for s, q in broker_pos.items()} != rec:
            out.append(f"positions differ: broker {broker_pos} vs log {rec}")
        return out


async def run_session(fake: FakeAlpaca, nats_url: str, tmp_path: Path,
                      actions: dict[int, Callable[[Ctx], Awaitable[None]]],
                      settings: Settings | None = None,
                      start: Callable[..., Awaitable[Any]] = _start,
                      max_minutes: int | None = None) -> Result:
    settings = settings or Settings.model_validate(
        {"trading": {"alerts": {"mailbox_dir": str(tmp_path / "mail")}}})
    tape: MarketTape = bundled_tape(settings)
    day = default_session(settings) or tape.dates[-1]
    async with fresh_log(nats_url) as root:
        current: dict[str, Any] = {}
        first_tick: list[datetime] = []
        ctx: Ctx

        async def on_minute(tick: ClockTicked) -> None:
            if not first_tick:
                first_tick.append(tick.occurred_at)
            minute = int((tick.occurred_at - first_tick[0]).total_seconds() // 60)
            act = actions.get(minute)
            ctx.tick = tick
            if act is not None:
                await act(ctx)
                return
            await venue.trade()

        feed = HostileFeed(on_minute)
        venue = Venue(fake, feed)
        fake.clock = lambda: feed.now + timedelta(seconds=1)
        market_open = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=13)
        feed.now = market_open
        ctx = Ctx(nats_url, root.names, settings, fake, feed, venue, current, root,
                  start=start)
        feed.ctx = ctx
        await root.publish(run_started("paper-hostile", "paper", settings,
                                       build_handlers(settings, "paper"), "paper",
                                       market_open))
        services, first_log = await start(nats_url, root.names, settings, fake, feed.clock)
        current.update(services=services, log=first_log)
        feed.services = services
        try:
            await SimulatedClock(feed, tape, "paper-hostile").run([day])  # type: ignore[arg-type]
            await _quiet(current["services"], current["log"], fake)
        finally:
            with contextlib.suppress(Exception):
                await current["services"].stop()
            with contextlib.suppress(Exception):
                await current["log"].close()
        events = [s.event async for s in root.read()]
        result = await verify(await NatsSource(root).open(), await plan_for_nats(root, settings),
                              jobs=1)
    from projections.positions import PositionsProjection
    pos = PositionsProjection()
    pos.rebuild(events)
    recorded = {v.symbol: v.qty for v in pos.snapshot()}
    broker_fills = [e for e in events if isinstance(e, OrderFilled | OrderPartiallyFilled)
                    and e.broker_order_id]
    venue_fills = [u for u in fake.sent_updates if u["event"] in ("fill", "partial_fill")]
    return Result(events, result, broker_fills, venue_fills,
                  [e for e in events if isinstance(e, ReconciliationDiscrepancyFound)],
                  ctx.notes, fake, recorded)


class HostileFeed(LiveFeed):
    """A LiveFeed that survives a hard kill of the runtime it feeds: an input in flight when
    the runtime dies is lost (as a bar sent to a dead process is), and the next input finds a
    new runtime (started after the venue traded while it was down)."""

    ctx: Ctx | None = None
    killing: asyncio.Event | None = None
    killed: asyncio.Event | None = None
    lost: int = 0

    async def _relaunch_if_killed(self) -> None:
        if self.killing is not None and self.killing.is_set():
            assert self.killed is not None and self.ctx is not None
            await self.killed.wait()
            self.killing = self.killed = None
            await self.ctx.venue.trade()
            await self.ctx.relaunch()

    async def submit(self, ev: Event) -> None:  # type: ignore[override]
        await self._relaunch_if_killed()
        if self.killing is None:
            await super().submit(ev)
            return
        killing = self.killing
        task = asyncio.ensure_future(super().submit(ev))
        waiter = asyncio.ensure_future(killing.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done and (task.exception() is None or not killing.is_set()):
            task.result()
            return
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        self.lost += 1
        await self._relaunch_if_killed()


def kill_soon(delay: float):
    """Trade, then let the minute's tick go in; the runtime is killed `delay` s later,
    wherever it is."""
    async def act(ctx: Ctx) -> None:
        feed = ctx.feed
        assert isinstance(feed, HostileFeed)
        await ctx.venue.trade()
        killing, killed = asyncio.Event(), asyncio.Event()
        feed.killing, feed.killed = killing, killed
        services, lg = ctx.current["services"], ctx.current["log"]

        async def later() -> None:
            await asyncio.sleep(delay)
            killing.set()
            await hard_kill(services, lg)
            killed.set()
            ctx.notes.append(f"killed after {delay}s")
        ctx.current.setdefault("bg", []).append(asyncio.ensure_future(later()))
    return act
