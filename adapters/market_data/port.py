"""The market data port: what the scanner, strategy and runtime need from any data source.

Two implementations: `BundledMarketData` (a dataset directory on disk: the synthetic data
shipped in the package, or one written by `catalyst data fetch`) and `AlpacaMarketData`
(alpaca-py). Both speak the domain `Bar` / `Headline` values plus the `Quote` and `Snapshot`
types below.

Time ranges are half-open, [start, end), on each bar's *start* timestamp. A daily bar is
stamped at midnight New York of its session date (Alpaca's convention), so to see only
completed sessions before trading day D pass `end` = midnight New York of D.

The on-disk dataset format lives in `adapters.market_data.dataset`; its public functions are
re-exported here because backtests treat the format as part of the port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from adapters.market_data.dataset import (
    BARS_COLUMNS,
    DatasetError,
    dataset_file,
    load_bars_csv,
    load_news_jsonl,
    write_bars_csv,
    write_news_jsonl,
)
from domain.errors import CatalystError
from domain.values import Bar, Headline, Money, ensure_utc

__all__ = [
    "BARS_COLUMNS",
    "DatasetError",
    "MarketDataPort",
    "MarketDataUnavailable",
    "Quote",
    "Snapshot",
    "Timeframe",
    "dataset_file",
    "load_bars_csv",
    "load_news_jsonl",
    "write_bars_csv",
    "write_news_jsonl",
]

Timeframe = Literal["1Min", "1Day"]
TIMEFRAMES: tuple[Timeframe, ...] = ("1Min", "1Day")


class MarketDataUnavailable(CatalystError):
    """The data source could not answer (network, auth, 5xx). Secrets never appear in it."""


class Quote(BaseModel):
    """Top of book for one symbol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    timestamp: datetime
    bid: Money
    ask: Money
    bid_size: int = 0
    ask_size: int = 0

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return ensure_utc(v)


class Snapshot(BaseModel):
    """What a scanner wants at a glance: last price, quote, the minute and daily bars."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    latest_price: Money | None = None
    latest_quote: Quote | None = None
    minute_bar: Bar | None = None  # the latest completed minute bar
    daily_bar: Bar | None = None  # today's bar so far (the last session's bar after hours)
    previous_daily_bar: Bar | None = None


class MarketDataPort(Protocol):
    name: str  # "bundled" / "alpaca"

    async def get_bars(
        self,
        symbols: Sequence[str],
        start: datetime,
        end: datetime,
        timeframe: Timeframe = "1Min",
    ) -> list[Bar]:
        """Bars with start <= timestamp < end, sorted by (timestamp, symbol)."""
        ...

    async def get_latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]: ...

    async def get_snapshots(self, symbols: Sequence[str]) -> dict[str, Snapshot]: ...

    async def get_news(
        self, symbols: Sequence[str], start: datetime, end: datetime
    ) -> list[Headline]:
        """Headlines mentioning any of `symbols` with start <= created_at < end, oldest first."""
        ...

    def stream_bars(self, symbols: Sequence[str]) -> AsyncIterator[Bar]:
        """Live 1-minute bars as they complete. An async generator: close it with
        `aclose()` (or `contextlib.aclosing`) to release the connection."""
        ...

    async def close(self) -> None: ...
