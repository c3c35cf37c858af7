"""A simulated clock over recorded bars: the scheduler of backtests and of the demo run.

For each session date it publishes, in this order and with event times from the data:
the daily history (for the universe filter), SessionStartRequested at the open, then for
every minute the bars that closed in it, the headlines that arrived in it, and a
ClockTicked; the session handler turns ticks into scans, the entry cut-off, the flatten
and the session end. Event ids derive from the data (uuid5), so the same data gives the
same log.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from hashlib import sha1
from uuid import NAMESPACE_URL, UUID

from adapters.market_data import calendar as xnys
from adapters.runtime.pipeline import Pipeline
from domain.calendar import MarketSession
from domain.events import (
    BarReceived,
    ClockTicked,
    Event,
    NewsReceived,
    SessionStartRequested,
)
from domain.values import Bar, Headline

MINUTE = timedelta(minutes=1)
_validate_bar_event: Callable[[dict[str, object]], BarReceived] = (
    BarReceived.__pydantic_validator__.validate_python
)


class XnysCalendar:
    """The MarketCalendar port answered by exchange-calendars (XNYS, half-days included)."""

    def session(self, day: date) -> MarketSession | None:
        try:
            s = xnys.session_for(day)
        except xnys.CalendarRangeError:
            return None
        if s is None:
            return None
        return MarketSession(s.date, s.open, s.close, s.early_close)


@dataclass
class MarketTape:
    """Recorded market data, grouped for the clock: minute bars by session date and minute."""

    minute_bars: dict[date, dict[datetime, list[Bar]]] = field(default_factory=dict)
    # For inputs too big to hold: the session dates, and a loader for one day's bars.
    days: list[date] = field(default_factory=list)
    loader: Callable[[date], dict[datetime, list[Bar]]] | None = None
    daily_bars: list[Bar] = field(default_factory=list)
    news: list[Headline] = field(default_factory=list)

    @classmethod
    def from_data(cls, minute_bars: Iterable[Bar], daily_bars: Iterable[Bar] = (),
                  news: Iterable[Headline] = ()) -> MarketTape:
        by_day: dict[date, dict[datetime, list[Bar]]] = defaultdict(lambda: defaultdict(list))
        for b in minute_bars:
            by_day[xnys.session_date(b.timestamp)][b.timestamp].append(b)
        tape = cls(
            minute_bars={d: dict(m) for d, m in sorted(by_day.items())},
            daily_bars=sorted(daily_bars, key=lambda b: (b.timestamp, b.symbol)),
            news=sorted(news, key=lambda h: (h.created_at, h.id)),
        )
        for minutes in tape.minute_bars.values():
            for bars in minutes.values():
                bars.sort(key=lambda b: b.symbol)
        return tape

    @property
    def dates(self) -> list[date]:
        return list(self.minute_bars) if self.minute_bars else list(self.days)

    def minutes_for(self, day: date) -> dict[datetime, list[Bar]]:
        if day in self.minute_bars:
            return self.minute_bars[day]
        return self.loader(day) if self.loader is not None else {}

    @property
    def symbols(self) -> list[str]:
        return sorted({b.symbol for m in self.minute_bars.values() for bs in m.values()
                       for b in bs})


_NS = NAMESPACE_URL.bytes


def data_event_id(kind: str, key: str, run: str) -> UUID:
    """uuid5(NAMESPACE_URL, "catalyst:<run>:<kind>:<key>"), spelled out: one per bar, and
    uuid.uuid5's own checks cost a third of building the bar's event."""
    digest = sha1(_NS + f"catalyst:{run}:{kind}:{key}".encode(), usedforsecurity=False).digest()
    return UUID(bytes=digest[:16], version=5)


@dataclass
class ClockProgress:
    day: date
    now: datetime
    minute: int
    minutes: int


@dataclass
class SimulatedClock:
    pipeline: Pipeline
    tape: MarketTape
    run_id: str
    speed: float | None = None  # None: as fast as the handlers keep up
    extra_events: dict[datetime, list[Event]] = field(default_factory=dict)
    on_progress: Callable[[ClockProgress], None] | None = None
    on_minute: Callable[[datetime], None] | None = None
    start_session: bool = True
    # Progress through the tape, kept across calls so `run` can go one day at a time.
    _news_i: int = 0
    _sent_daily: set[tuple[str, datetime]] = field(default_factory=set)
    _stamps: dict[datetime, str] = field(default_factory=dict)

    def _bar_event(self, bar: Bar, at: datetime) -> BarReceived:
        # str(datetime) is most of the id's cost, and every bar of a minute shares it.
        stamp = self._stamps.get(bar.timestamp)
        if stamp is None:
            if len(self._stamps) > 4096:
                self._stamps.clear()
            stamp = self._stamps[bar.timestamp] = str(bar.timestamp)
        # The model's own validator called directly: the same validation as BarReceived(...)
        # without BaseModel.__init__'s Python frame (a quarter of the cost, once per bar).
        return _validate_bar_event({
            "event_id": data_event_id("bar", f"{bar.symbol}:{bar.timeframe}:{stamp}",
                                      self.run_id),
            "type": "BarReceived", "occurred_at": at, "correlation_id": self.run_id,
            "symbol": bar.symbol, "bar": bar,
        })

    def _news_event(self, h: Headline, symbol: str) -> NewsReceived:
        return NewsReceived(
            event_id=data_event_id("news", f"{h.id}:{symbol}", self.run_id),
            type="NewsReceived", occurred_at=h.created_at, correlation_id=self.run_id,
            symbol=symbol, headline=h,
        )

    async def _news_until(self, until: datetime) -> None:
        news = self.tape.news
        while self._news_i < len(news) and news[self._news_i].created_at <= until:
            for sym in news[self._news_i].symbols:
                await self.pipeline.submit(self._news_event(news[self._news_i], sym))
            self._news_i += 1

    async def run(self, days: Sequence[date] | None = None) -> None:
        days = list(days) if days is not None else self.tape.dates
        cal = XnysCalendar()
        sent_daily = self._sent_daily
        for day in days:
            market = cal.session(day)
            if market is None:
                continue
            # Daily history known before the open (bars of earlier dates only).
            for b in self.tape.daily_bars:
                key = (b.symbol, b.timestamp)
                if xnys.session_date(b.timestamp) < day and key not in sent_daily:
                    sent_daily.add(key)
                    await self.pipeline.submit(self._bar_event(b, market.open - MINUTE))
            # Headlines from before the open are known at the open.
            await self._news_until(market.open)
            if self.start_session:
                await self.pipeline.submit(SessionStartRequested(
                    event_id=data_event_id("start", day.isoformat(), self.run_id),
                    type="SessionStartRequested", occurred_at=market.open,
                    correlation_id=self.run_id, requested_by="scheduler", session_date=day,
                ))
            minutes = self.tape.minutes_for(day)
            total = int((market.close - market.open) / MINUTE)
            t = market.open
            for i in range(total):
                closed_at = t + MINUTE
                for ev in self.extra_events.get(t, ()):
                    await self.pipeline.submit(ev)
                for b in minutes.get(t, ()):
                    await self.pipeline.submit(self._bar_event(b, closed_at))
                await self._news_until(closed_at)
                await self.pipeline.submit(ClockTicked(
                    event_id=data_event_id("tick", closed_at.isoformat(), self.run_id),
                    type="ClockTicked", occurred_at=closed_at, correlation_id=self.run_id,
                    session_date=day,
                ))
                if self.on_minute:
                    self.on_minute(closed_at)
                if self.on_progress:
                    self.on_progress(ClockProgress(day, closed_at, i + 1, total))
                if self.speed:
                    await self.pipeline.recorder.flush()
                    await asyncio.sleep(60.0 / self.speed)
                t = closed_at
            # Not a flush: the next day's events follow the same way, and whoever runs the
            # clock flushes at the end (waiting on the server every day cost ~15 ms a day).
            await self.pipeline.recorder.maybe_flush()


