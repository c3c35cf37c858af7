"""`BundledMarketData`: the market data port over a dataset directory on disk.

By default the synthetic dataset shipped in the package (`adapters/data/bundled/`); any
directory in the same format works (`catalyst data fetch` writes one).

Given a `clock`, it answers as the world looked at `clock()`: only bars that had completed,
a partial daily bar for the session in progress (as Alpaca does), only news already
published. That is what keeps a backtest from seeing the future. Without a clock, "now" is
the end of the dataset.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.market_data import calendar
from adapters.market_data.dataset import (
    BARS_1DAY,
    BARS_1MIN,
    NEWS_FILE,
    dataset_file,
    load_bars_csv,
    load_news_jsonl,
)
from adapters.market_data.port import TIMEFRAMES, Quote, Snapshot, Timeframe
from domain.values import Bar, Headline, ensure_utc, to_price

if TYPE_CHECKING:
    from config.settings import Settings

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "bundled"
MINUTE = timedelta(minutes=1)


class _Series:
    """One symbol's bars in time order, with their timestamps for bisection."""

    def __init__(self, bars: list[Bar]) -> None:
        self.bars = bars
        self.times = [b.timestamp for b in bars]

    def between(self, start: datetime, end: datetime) -> list[Bar]:
        return self.bars[bisect_left(self.times, start) : bisect_left(self.times, end)]

    def last_before(self, t: datetime) -> Bar | None:
        """The last bar stamped <= t."""
        i = bisect_right(self.times, t)
        return self.bars[i - 1] if i else None


def _index(bars: Iterable[Bar]) -> dict[str, _Series]:
    grouped: dict[str, list[Bar]] = defaultdict(list)
    for bar in bars:
        grouped[bar.symbol].append(bar)
    return {s: _Series(sorted(bs, key=lambda b: b.timestamp)) for s, bs in grouped.items()}


def _merge(parts: Iterable[list[Bar]]) -> list[Bar]:
    return sorted((b for part in parts for b in part), key=lambda b: (b.timestamp, b.symbol))


def _daily_available_at(bar: Bar) -> datetime:
    """A daily bar is known once its session has closed."""
    session = calendar.session_for(calendar.session_date(bar.timestamp))
    return session.close if session else bar.timestamp + timedelta(days=1)


def quote_from_bar(bar: Bar) -> Quote:
    """A synthetic top of book around a bar's close: a 1 bp half-spread, at least a cent."""
    half = max(Decimal("0.01"), to_price(bar.close * Decimal("0.0001")))
    size = min(5000, max(100, bar.volume // 50_000 * 100))
    return Quote(
        symbol=bar.symbol, timestamp=bar.timestamp + MINUTE, bid=bar.close - half,
        ask=bar.close + half, bid_size=size, ask_size=size,
    )


class BundledMarketData:
    """The dataset in memory (about 20k bars: small), indexed by symbol and time."""

    name = "bundled"

    def __init__(
        self,
        dataset_dir: Path | str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        pace_seconds: float = 0.0,
    ) -> None:
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else BUNDLED_DIR
        self._clock = clock
        self._pace = pace_seconds
        minute = list(
            load_bars_csv(dataset_file(self.dataset_dir, BARS_1MIN), "1Min", sessions_only=True)
        )
        daily = list(
            load_bars_csv(dataset_file(self.dataset_dir, BARS_1DAY), "1Day", sessions_only=True)
        )
        news_path = self.dataset_dir / NEWS_FILE
        news = list(load_news_jsonl(news_path)) if news_path.exists() else []
        self._minute = _index(minute)
        self._daily = _index(daily)
        self._news = sorted(news, key=lambda h: (h.created_at, h.id))
        self._news_times = [h.created_at for h in self._news]
        self.symbols: tuple[str, ...] = tuple(sorted(set(self._minute) | set(self._daily)))
        self.session_dates: tuple[date, ...] = tuple(
            sorted({calendar.session_date(b.timestamp) for b in minute})
        )
        self.daily_dates: tuple[date, ...] = tuple(
            sorted({calendar.session_date(b.timestamp) for b in daily})
        )
        ends = [s.bars[-1].timestamp + MINUTE for s in self._minute.values()]
        ends += [_daily_available_at(s.bars[-1]) for s in self._daily.values()]
        self._end: datetime = max(ends) if ends else datetime.max.replace(tzinfo=UTC)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Callable[[], datetime] | None = None,
        pace_seconds: float = 0.0,
    ) -> BundledMarketData:
        """`market_data.dataset_dir`, or the bundled dataset when it is unset."""
        return cls(settings.trading.market_data.dataset_dir, clock=clock, pace_seconds=pace_seconds)

    # --- synchronous access (backtests, the CLI) ---------------------------------------------

    def now(self) -> datetime:
        return ensure_utc(self._clock()) if self._clock is not None else self._end

    def sessions(self) -> list[calendar.Session]:
        """The sessions that have 1-minute bars, oldest first (half-days included)."""
        return [s for d in self.session_dates if (s := calendar.session_for(d)) is not None]

    def minute_bars(self, session_date: date, symbols: Sequence[str] | None = None) -> list[Bar]:
        """Every 1-minute bar of one session, sorted by (timestamp, symbol); ignores the clock
        (a backtest driver feeds these in order)."""
        session = calendar.session_for(session_date)
        if session is None:
            return []
        wanted = self.symbols if symbols is None else symbols
        return _merge(
            self._minute[s].between(session.open, session.close)
            for s in wanted if s in self._minute
        )

    def bars(
        self,
        symbols: Sequence[str],
        start: datetime,
        end: datetime,
        timeframe: Timeframe = "1Min",
    ) -> list[Bar]:
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe must be one of {TIMEFRAMES}, not {timeframe!r}")
        start, end, now = ensure_utc(start), ensure_utc(end), self.now()
        if timeframe == "1Min":
            # A minute bar is known once it has completed.
            end = min(end, now - MINUTE + timedelta(microseconds=1))
            return _merge(self._minute[s].between(start, end) for s in symbols if s in self._minute)
        out: list[Bar] = []
        for s in symbols:
            if s not in self._daily:
                continue
            out.extend(b for b in self._daily[s].between(start, end)
                       if _daily_available_at(b) <= now)
            partial = self._partial_daily(s, now)
            if partial is not None and start <= partial.timestamp < end:
                out.append(partial)
        return _merge([out])

    def _partial_daily(self, symbol: str, now: datetime) -> Bar | None:
        """Today's bar so far, while a session with minute data is in progress."""
        session = calendar.session_for(calendar.session_date(now))
        if session is None or not session.open < now < session.close:
            return None
        if symbol not in self._minute:
            return None
        done = self._minute[symbol].between(session.open, now - MINUTE + timedelta(microseconds=1))
        if not done:
            return None
        return Bar(
            symbol=symbol, timestamp=calendar.ny_midnight(session.date), open=done[0].open,
            high=max(b.high for b in done), low=min(b.low for b in done), close=done[-1].close,
            volume=sum(b.volume for b in done), timeframe="1Day",
        )

    def news(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[Headline]:
        start = ensure_utc(start)
        end = min(ensure_utc(end), self.now() + timedelta(microseconds=1))
        wanted = set(symbols)
        times = self._news_times
        window = self._news[bisect_left(times, start) : bisect_left(times, end)]
        return [h for h in window if wanted.intersection(h.symbols)]

    def latest_minute_bar(self, symbol: str) -> Bar | None:
        series = self._minute.get(symbol)
        return series.last_before(self.now() - MINUTE) if series else None

    def snapshot(self, symbol: str) -> Snapshot:
        now = self.now()
        minute = self.latest_minute_bar(symbol)
        days = self.bars([symbol], now - timedelta(days=14), now + timedelta(days=1), "1Day")
        daily = days[-1] if days else None
        previous = days[-2] if len(days) > 1 else None
        price = minute.close if minute else (daily.close if daily else None)
        return Snapshot(
            symbol=symbol, latest_price=price,
            latest_quote=quote_from_bar(minute) if minute else None,
            minute_bar=minute, daily_bar=daily, previous_daily_bar=previous,
        )

    # --- the port -----------------------------------------------------------------------------

    async def get_bars(
        self,
        symbols: Sequence[str],
        start: datetime,
        end: datetime,
        timeframe: Timeframe = "1Min",
    ) -> list[Bar]:
        return self.bars(symbols, start, end, timeframe)

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        out = {}
        for s in symbols:
            bar = self.latest_minute_bar(s)
            if bar is not None:
                out[s] = quote_from_bar(bar)
        return out

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]:
        return {s: self.snapshot(s) for s in symbols if s in self.symbols}

    async def get_news(
        self, symbols: Sequence[str], start: datetime, end: datetime
    ) -> list[Headline]:
        return self.news(symbols, start, end)

    async def stream_bars(self, symbols: Sequence[str]) -> AsyncIterator[Bar]:
        """Replay the 1-minute bars completing after `now` (all of them without a clock), in
        time order, `pace_seconds` apart per minute."""
        start = self.now() - MINUTE + timedelta(microseconds=1) if self._clock else None
        wanted = set(symbols)
        bars = _merge(
            s.bars if start is None else s.between(start, self._end)
            for sym, s in self._minute.items() if sym in wanted
        )
        previous: datetime | None = None
        for bar in bars:
            if self._pace and previous is not None and bar.timestamp != previous:
                await asyncio.sleep(self._pace)
            previous = bar.timestamp
            yield bar

    async def close(self) -> None:
        return None
