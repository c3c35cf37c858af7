"""A bars file too long to hold in memory, validated once and read back a day at a time.

The backtest's memory must not grow with the length of the run. One streaming pass over
BARS.csv validates every row (file, line, column on error: nothing has run yet) and spools
the bars to one file per New York session date, keeping only small summaries: the dates,
the symbols, daily aggregates (for the universe filter) and each symbol's last close per day
(for the entry price of a signal that comes before the day's first bar).
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

from adapters.market_data import calendar as xnys
from adapters.market_data.dataset import load_bars_csv
from domain.values import Bar

Row = tuple[str, datetime, Decimal, Decimal, Decimal, Decimal, int]

_validate_bar: Callable[[dict[str, object]], Bar] = Bar.__pydantic_validator__.validate_python
_CHUNK_ROWS = 1000  # rows held per date before they are written (bounded memory)


@dataclass
class _Day:
    """Running daily aggregate of one symbol on one date."""

    first: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    last: datetime
    close: Decimal
    volume: int = 0


@dataclass
class SpooledBars:
    directory: Path
    count: int = 0
    symbols: set[str] = field(default_factory=set)
    _days: dict[tuple[str, date], _Day] = field(default_factory=dict)

    @property
    def dates(self) -> list[date]:
        return sorted({d for _, d in self._days})

    def daily_bars(self) -> list[Bar]:
        """One 1Day bar per symbol and date, stamped at the session open."""
        out = []
        for (symbol, day), a in sorted(self._days.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            session = xnys.session_for(day)
            assert session is not None  # validated: every bar is inside a session
            out.append(Bar(symbol=symbol, timestamp=session.open, open=a.open, high=a.high,
                           low=a.low, close=a.close, volume=a.volume, timeframe="1Day"))
        return out

    def last_close_before(self, symbol: str, day: date) -> Decimal | None:
        """The close of the symbol's last bar on a date before `day`, if any."""
        best = max((d for s, d in self._days if s == symbol and d < day), default=None)
        return self._days[(symbol, best)].close if best is not None else None

    def first_open(self, symbol: str) -> Decimal | None:
        days = [d for s, d in self._days if s == symbol]
        return self._days[(symbol, min(days))].open if days else None

    def _path(self, day: date) -> Path:
        return self.directory / f"{day.isoformat()}.bars"

    def rows(self, day: date) -> Iterator[Row]:
        path = self._path(day)
        if not path.exists():
            return
        with path.open("rb") as f:
            while True:
                try:
                    chunk: list[Row] = pickle.load(f)
                except EOFError:
                    return
                yield from chunk

    def load(self, day: date) -> dict[datetime, list[Bar]]:
        """One day's bars, by minute, each minute's bars by symbol (the dispatch order)."""
        minutes: dict[datetime, list[Bar]] = defaultdict(list)
        for symbol, ts, o, h, low, c, v in self.rows(day):
            # Bar(...)'s validation, without BaseModel.__init__'s Python frame. (pydantic's
            # model_construct is slower than validating these few fields.)
            minutes[ts].append(_validate_bar({"symbol": symbol, "timestamp": ts, "open": o,
                                              "high": h, "low": low, "close": c,
                                              "volume": v}))
        for bars in minutes.values():
            bars.sort(key=lambda b: b.symbol)
        return dict(sorted(minutes.items()))


def spool_bars(path: Path, directory: Path) -> SpooledBars:
    """Validate every row of BARS.csv (raises DatasetError naming file/line/column) and
    spool the bars per session date under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    spool = SpooledBars(directory)
    files: dict[date, BinaryIO] = {}
    # Rows go to disk in chunks: unpickling one list is several times faster per row than
    # one pickle per row, and reading a day back is on the timed path of a backtest.
    chunks: dict[date, list[Row]] = {}
    # One datetime object per minute within a chunk, so pickle stores each minute once.
    stamps: dict[datetime, datetime] = {}

    def write(day: date) -> None:
        f = files.get(day)
        if f is None:
            f = files[day] = spool._path(day).open("ab")
        pickle.dump(chunks.pop(day), f, protocol=pickle.HIGHEST_PROTOCOL)
        stamps.clear()

    try:
        for b in load_bars_csv(path, sessions_only=True):
            day = xnys.session_date(b.timestamp)
            ts = stamps.setdefault(b.timestamp, b.timestamp)
            chunk = chunks.setdefault(day, [])
            chunk.append((b.symbol, ts, b.open, b.high, b.low, b.close, b.volume))
            if len(chunk) >= _CHUNK_ROWS:
                write(day)
            spool.count += 1
            spool.symbols.add(b.symbol)
            a = spool._days.get((b.symbol, day))
            if a is None:
                spool._days[(b.symbol, day)] = _Day(b.timestamp, b.open, b.high, b.low,
                                                    b.timestamp, b.close, b.volume)
                continue
            if b.timestamp < a.first:
                a.first, a.open = b.timestamp, b.open
            if b.timestamp > a.last:
                a.last, a.close = b.timestamp, b.close
            a.high, a.low = max(a.high, b.high), min(a.low, b.low)
            a.volume += b.volume
        for day in list(chunks):
            write(day)
    finally:
        for f in files.values():
            f.close()
    return spool
