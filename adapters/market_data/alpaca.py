"""`AlpacaMarketData`: the market data port over alpaca-py, and `catalyst data fetch`.

alpaca-py's REST clients are synchronous (requests), so every call runs in a worker thread
and gets a timeout mounted on the client's session. Errors come back as
`MarketDataUnavailable` with the API key and secret redacted. Historical bars are
split-adjusted (`adjustment=split`): the latest session is as traded, older bars are
comparable across a split (averages, ATR, universe filters stay right).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.news import NewsClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.stock import StockDataStream
from alpaca.data.models import Bar as AlpacaBar
from alpaca.data.models import Quote as AlpacaQuote
from alpaca.data.requests import (
    NewsRequest,
    StockBarsRequest,
    StockLatestQuoteRequest,
    StockSnapshotRequest,
)
from alpaca.data.timeframe import TimeFrame

from adapters.broker.alpaca_http import mount_timeouts, next_or_stopped
from adapters.market_data import calendar
from adapters.market_data.dataset import (
    BARS_1DAY,
    BARS_1MIN,
    NEWS_FILE,
    write_bars_csv,
    write_news_jsonl,
)
from adapters.market_data.port import MarketDataUnavailable, Quote, Snapshot, Timeframe
from domain.values import Bar, Headline, ensure_utc

if TYPE_CHECKING:
    from config.settings import Settings

T = TypeVar("T")
_TIMEFRAMES = {"1Min": TimeFrame.Minute, "1Day": TimeFrame.Day}
GZIP_ABOVE_ROWS = 45_000  # ~3 MB of CSV: compress bigger bar files


def _stream_stopped() -> Exception:
    return MarketDataUnavailable("the alpaca bar stream stopped")


class _DataStream(StockDataStream):
    """alpaca-py waits for the connect and auth replies without a timeout; bound them."""

    def __init__(self, *args: Any, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connect_timeout = connect_timeout

    async def _start_ws(self) -> None:
        await asyncio.wait_for(super()._start_ws(), self._connect_timeout)


def _dec(value: float | int | str) -> Decimal:
    # str() of a float is its shortest round-trip form: 187.12, never 187.1199999.
    return Decimal(str(value))


def _bar(raw: AlpacaBar, timeframe: Timeframe) -> Bar:
    return Bar(
        symbol=raw.symbol, timestamp=raw.timestamp, open=_dec(raw.open), high=_dec(raw.high),
        low=_dec(raw.low), close=_dec(raw.close), volume=int(raw.volume), timeframe=timeframe,
    )


def _quote(raw: AlpacaQuote) -> Quote:
    return Quote(
        symbol=raw.symbol, timestamp=raw.timestamp, bid=_dec(raw.bid_price),
        ask=_dec(raw.ask_price), bid_size=int(raw.bid_size), ask_size=int(raw.ask_size),
    )


def stream_endpoint(url: str | None, feed: str) -> str | None:
    """`market_data.stream_url` may be a base (wss://host) or a full feed endpoint."""
    if url is None:
        return None
    url = url.rstrip("/")
    return url if url.endswith(("/v2/iex", "/v2/sip")) else f"{url}/v2/{feed}"


class AlpacaMarketData:
    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        feed: Literal["iex", "sip"] = "iex",
        data_url: str | None = None,
        stream_url: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        if not api_key or not secret_key:
            raise ValueError("Alpaca market data needs an API key and secret")
        self._key, self._secret = api_key, secret_key
        self.feed = feed
        self._feed = DataFeed.SIP if feed == "sip" else DataFeed.IEX
        self._timeout = timeout_seconds
        self._stream_url = stream_endpoint(stream_url, feed)
        data_url = data_url.rstrip("/") if data_url else None
        self._stocks = StockHistoricalDataClient(api_key, secret_key, url_override=data_url)
        self._news = NewsClient(api_key, secret_key, url_override=data_url)
        for client in (self._stocks, self._news):
            # alpaca-py exposes no timeout; its requests session is the one place to set it.
            mount_timeouts(client._session, timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlpacaMarketData:
        """Keys and timeout from `trading.broker`, feed and URLs from `trading.market_data`."""
        broker, md = settings.trading.broker, settings.trading.market_data
        if not broker.has_keys:
            raise ValueError("Alpaca market data needs broker.api_key and broker.secret_key")
        assert broker.api_key is not None and broker.secret_key is not None
        return cls(
            broker.api_key.get_secret_value(), broker.secret_key.get_secret_value(),
            feed=md.feed, data_url=md.data_url, stream_url=md.stream_url,
            timeout_seconds=broker.timeout_seconds,
        )

    # --- errors -------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in (self._secret, self._key):
            text = text.replace(secret, "***")
        return text

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except APIError as exc:
            detail = f"HTTP {exc.status_code}: {exc}"
        except requests.RequestException as exc:
            detail = f"{type(exc).__name__}: {exc}"
        # `from None`: the original exception (and any secret in it) stays out of tracebacks.
        raise MarketDataUnavailable(self._redact(f"alpaca {what} failed: {detail}")) from None

    # --- the port -----------------------------------------------------------------------------

    async def get_bars(
        self,
        symbols: Sequence[str],
        start: datetime,
        end: datetime,
        timeframe: Timeframe = "1Min",
    ) -> list[Bar]:
        if timeframe not in _TIMEFRAMES:
            raise ValueError(f"timeframe must be one of {tuple(_TIMEFRAMES)}, not {timeframe!r}")
        if not symbols:
            return []
        start, end = ensure_utc(start), ensure_utc(end)
        request = StockBarsRequest(
            symbol_or_symbols=list(symbols), timeframe=_TIMEFRAMES[timeframe], start=start,
            end=end, feed=self._feed, adjustment=Adjustment.SPLIT,
        )
        barset = await self._call("bars", lambda: self._stocks.get_stock_bars(request))
        bars = [
            _bar(raw, timeframe)
            for series in barset.data.values()  # type: ignore[union-attr]
            for raw in series
        ]
        # Alpaca's end is inclusive; the port's is exclusive.
        return sorted(
            (b for b in bars if start <= b.timestamp < end), key=lambda b: (b.timestamp, b.symbol)
        )

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        if not symbols:
            return {}
        request = StockLatestQuoteRequest(symbol_or_symbols=list(symbols), feed=self._feed)
        raw = await self._call(
            "latest quotes", lambda: self._stocks.get_stock_latest_quote(request)
        )
        return {s: _quote(q) for s, q in raw.items()}  # type: ignore[union-attr]

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]:
        if not symbols:
            return {}
        request = StockSnapshotRequest(symbol_or_symbols=list(symbols), feed=self._feed)
        raw = await self._call("snapshots", lambda: self._stocks.get_stock_snapshot(request))
        out = {}
        for symbol, snap in raw.items():  # type: ignore[union-attr]
            trade = snap.latest_trade
            out[symbol] = Snapshot(
                symbol=symbol,
                latest_price=_dec(trade.price) if trade else None,
                latest_quote=_quote(snap.latest_quote) if snap.latest_quote else None,
                minute_bar=_bar(snap.minute_bar, "1Min") if snap.minute_bar else None,
                daily_bar=_bar(snap.daily_bar, "1Day") if snap.daily_bar else None,
                previous_daily_bar=(
                    _bar(snap.previous_daily_bar, "1Day") if snap.previous_daily_bar else None
                ),
            )
        return out

    async def get_news(
        self, symbols: Sequence[str], start: datetime, end: datetime
    ) -> list[Headline]:
        if not symbols:
            return []
        start, end = ensure_utc(start), ensure_utc(end)
        request = NewsRequest(
            symbols=",".join(symbols), start=start, end=end, sort="asc",
            include_content=False, exclude_contentless=False,
        )
        newsset = await self._call("news", lambda: self._news.get_news(request))
        items = newsset.data.get("news", [])  # type: ignore[union-attr]
        headlines = [
            Headline(
                id=str(n.id), symbols=tuple(n.symbols), headline=n.headline,
                summary=n.summary or "", source=n.source or "", created_at=n.created_at,
            )
            for n in items
        ]
        return sorted(
            (h for h in headlines if start <= h.created_at < end),
            key=lambda h: (h.created_at, h.id),
        )

    async def stream_bars(self, symbols: Sequence[str]) -> AsyncIterator[Bar]:
        """Live minute bars from alpaca-py's StockDataStream (it reconnects with backoff by
        itself). Close the generator (`aclose()`) to disconnect."""
        queue: asyncio.Queue[Bar] = asyncio.Queue()
        stream = _DataStream(
            self._key, self._secret, feed=self._feed, url_override=self._stream_url,
            connect_timeout=self._timeout,
            websocket_params={
                "ping_interval": 10, "ping_timeout": 30, "max_queue": 1024,
                "open_timeout": self._timeout, "close_timeout": self._timeout,
            },
        )

        async def on_bar(raw: AlpacaBar) -> None:
            queue.put_nowait(_bar(raw, "1Min"))

        stream.subscribe_bars(on_bar, *symbols)
        # alpaca-py's run() owns its event loop; _run_forever is its coroutine (0.44).
        task = asyncio.create_task(stream._run_forever())
        try:
            while True:
                yield await next_or_stopped(queue, task, _stream_stopped)
        finally:
            with contextlib.suppress(Exception):
                await stream.stop_ws()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await stream.close()

    async def close(self) -> None:
        for client in (self._stocks, self._news):
            await asyncio.to_thread(client._session.close)




# --- catalyst data fetch ----------------------------------------------------------------------


@dataclass(frozen=True)
class FetchSummary:
    out_dir: Path
    sessions: tuple[date, ...]
    files: dict[str, int]  # file name -> rows written


def _as_date(value: date | datetime) -> date:
    return calendar.session_date(value) if isinstance(value, datetime) else value


async def fetch_to_dataset(
    settings: Settings,
    symbols: Sequence[str],
    start: date | datetime,
    end: date | datetime,
    out_dir: Path | str,
    *,
    history_sessions: int = 40,
    news_lookback_sessions: int = 3,
    source: AlpacaMarketData | None = None,
    progress: Callable[[str], Awaitable[None] | None] | None = None,
) -> FetchSummary:
    """Write a dataset (the bundled format) for the NYSE sessions from `start` to `end`
    (New York dates, inclusive): their regular-hours 1-minute bars, `history_sessions`
    daily bars before them plus theirs, and the news from `news_lookback_sessions` sessions
    before `start` to the last close. Extended-hours bars are dropped."""
    sessions = [s for d in calendar.sessions_between(_as_date(start), _as_date(end))
                if (s := calendar.session_for(d)) is not None]
    if not sessions:
        raise ValueError(f"no NYSE sessions between {_as_date(start)} and {_as_date(end)}")
    symbols = sorted({s.strip().upper() for s in symbols if s.strip()})
    if not symbols:
        raise ValueError("no symbols to fetch")
    out = Path(out_dir)
    md = source or AlpacaMarketData.from_settings(settings)

    async def say(text: str) -> None:
        if progress is not None:
            result = progress(text)
            if asyncio.iscoroutine(result):
                await result

    try:
        minute: list[Bar] = []
        for session in sessions:
            await say(f"1-minute bars {session.date}")
            got = await md.get_bars(symbols, session.open, session.close, "1Min")
            minute.extend(b for b in got if calendar.within_regular_hours(b.timestamp))
        history = calendar.previous_sessions(sessions[0].date, history_sessions)
        first_day = history[0] if history else sessions[0].date
        await say(f"daily bars {first_day} to {sessions[-1].date}")
        daily_end = calendar.ny_midnight(sessions[-1].date) + timedelta(days=1)
        daily = [
            b for b in await md.get_bars(
                symbols, calendar.ny_midnight(first_day), daily_end, "1Day")
            if calendar.is_trading_day(calendar.session_date(b.timestamp))
        ]
        lookback = calendar.previous_sessions(sessions[0].date, news_lookback_sessions)
        news_start = calendar.ny_midnight(lookback[0] if lookback else sessions[0].date)
        await say("news")
        news = await md.get_news(symbols, news_start, sessions[-1].close)
    finally:
        if source is None:
            await md.close()

    files = {
        _bars_name(out, BARS_1MIN, len(minute)): minute,
        _bars_name(out, BARS_1DAY, len(daily)): daily,
    }
    counts: dict[str, int] = {}
    for name, bars in files.items():
        bars.sort(key=lambda b: (b.timestamp, b.symbol))
        counts[name] = write_bars_csv(out / name, bars)
    counts[NEWS_FILE] = write_news_jsonl(out / NEWS_FILE, news)
    return FetchSummary(out_dir=out, sessions=tuple(s.date for s in sessions), files=counts)


def _bars_name(out: Path, stem: str, rows: int) -> str:
    """`stem.csv`, or `stem.csv.gz` for big files; the other variant is removed so the
    directory is never ambiguous."""
    name, other = (f"{stem}.csv.gz", f"{stem}.csv") if rows > GZIP_ABOVE_ROWS else (
        f"{stem}.csv", f"{stem}.csv.gz")
    (out / other).unlink(missing_ok=True)
    return name
