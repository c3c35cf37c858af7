"""What comes in by the clock: the provider's market data and news, and the market-hours
schedule (the open's SessionStartRequested, then a ClockTicked a minute). Each hands its
events to `publish` (the sequencer, or the log among services)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from adapters.runtime.simulation import XnysCalendar
from domain.calendar import NEW_YORK as XNYS_TZ
from domain.events import BarReceived, ClockTicked, Event, NewsReceived, SessionStartRequested
from domain.values import Bar, Headline

log = logging.getLogger("catalyst.services")

Publish = Callable[[Sequence[Event]], Awaitable[Any]]
Clock = Callable[[], datetime]


async def pump_market_data(market_data: Any, symbols: list[str], clock: Clock,
                           publish: Publish) -> None:
    """Daily history first, then minute bars as they close, news polled beside them."""
    now = clock()
    daily = await market_data.get_bars(symbols, "1Day", now - timedelta(days=60), now)
    await publish([bar_event(b, b.timestamp + timedelta(days=1), "md")
                   for b in daily if b.timestamp.date() < now.date()])
    news_task = asyncio.create_task(poll_news(market_data, symbols, clock, publish))
    try:
        async for b in market_data.stream_bars(symbols):
            await publish([bar_event(b, b.timestamp + timedelta(minutes=1), "md")])
    finally:
        news_task.cancel()


async def poll_news(market_data: Any, symbols: list[str], clock: Clock,
                    publish: Publish) -> None:
    since = clock() - timedelta(hours=12)
    while True:
        now = clock()
        try:
            for h in await market_data.get_news(symbols, since, now):
                await publish(news_events(h, "md"))
            since = now
        except Exception as e:  # noqa: BLE001 - news is best effort; retry next minute
            log.warning("news poll failed: %s", e)
        await asyncio.sleep(60)


async def run_schedule(clock: Clock, sleep: Callable[[float], Awaitable[Any]],
                       publish: Publish) -> None:
    """09:30 New York: SessionStartRequested; then a ClockTicked every minute."""
    cal = XnysCalendar()
    while True:
        now = clock()
        day = now.astimezone(XNYS_TZ).date()
        session = cal.session(day)
        if session is None or now >= session.close:
            await sleep(min(300.0, _seconds_to_next_day(now)))
            continue
        if now < session.open:
            log.warning("waiting for the open at %s", session.open.astimezone(XNYS_TZ))
            await sleep(min(60.0, (session.open - now).total_seconds()))
            continue
        await publish([SessionStartRequested(
            event_id=uuid5(NAMESPACE_URL, f"scheduler:start:{day}"),
            type="SessionStartRequested", occurred_at=max(now, session.open),
            correlation_id=f"session-{day}", requested_by="scheduler", session_date=day)])
        # Tick from the next minute on: started (or restarted) late, the minutes already
        # gone are not replayed as if they were now (no burst of stale scans).
        minute = max(session.open + timedelta(minutes=1), _next_minute(clock()))
        while minute <= session.close:
            wait = (minute - clock()).total_seconds()
            if wait > 0:
                await sleep(wait)
            await publish([ClockTicked(
                event_id=uuid5(NAMESPACE_URL, f"scheduler:tick:{minute.isoformat()}"),
                type="ClockTicked", occurred_at=minute, correlation_id=f"session-{day}",
                session_date=day)])
            minute += timedelta(minutes=1)


def _next_minute(now: datetime) -> datetime:
    floor = now.replace(second=0, microsecond=0)
    return floor if floor == now else floor + timedelta(minutes=1)


def _seconds_to_next_day(now: datetime) -> float:
    local = now.astimezone(XNYS_TZ)
    nxt = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), XNYS_TZ)
    return max(1.0, (nxt - local).total_seconds())


def bar_event(b: Bar, at: datetime, correlation: str) -> BarReceived:
    return BarReceived(
        event_id=uuid5(NAMESPACE_URL, f"md:bar:{b.symbol}:{b.timeframe}:{b.timestamp}"),
        type="BarReceived", occurred_at=at, correlation_id=correlation, symbol=b.symbol, bar=b)


def news_events(h: Headline, correlation: str) -> list[NewsReceived]:
    return [NewsReceived(
        event_id=uuid5(NAMESPACE_URL, f"md:news:{h.id}:{s}"), type="NewsReceived",
        occurred_at=h.created_at, correlation_id=correlation, symbol=s, headline=h)
        for s in h.symbols]
