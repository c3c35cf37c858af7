"""The on-disk dataset format shared by the bundled data, backtests and `catalyst data fetch`.

A dataset is a directory holding:

    bars_1min.csv[.gz]   regular-hours 1-minute bars
    bars_1day.csv[.gz]   daily bars, stamped at midnight New York of the session date
    news.jsonl           one `Headline` per line (JSON of the domain model)

Bars CSV columns are exactly `timestamp,symbol,open,high,low,close,volume`; timestamps are
ISO-8601 with a UTC offset (the bar's start), prices are decimals, volume a whole number.
Rows are written sorted by (timestamp, symbol). Loading is strict: the first bad value
raises `DatasetError` naming the file, the line and the column, because a backtest on
silently repaired data would report results for data nobody recorded.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from domain.errors import CatalystError
from domain.values import Bar, Headline

BARS_COLUMNS = ("timestamp", "symbol", "open", "high", "low", "close", "volume")
BARS_1MIN = "bars_1min"
BARS_1DAY = "bars_1day"
NEWS_FILE = "news.jsonl"
PRICE_COLUMNS = ("open", "high", "low", "close")
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-/]{0,14}$")


class DatasetError(CatalystError, ValueError):
    """A dataset file is malformed; the message names the file, line and column."""

    def __init__(self, path: Path | str, line: int, column: str, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.column = column
        self.problem = problem
        super().__init__(f"{self.path}: line {line}, column '{column}': {problem}")


def dataset_file(directory: Path | str, stem: str) -> Path:
    """`stem.csv` or `stem.csv.gz` in `directory` (exactly one of them must exist)."""
    directory = Path(directory)
    found = [p for p in (directory / f"{stem}.csv", directory / f"{stem}.csv.gz") if p.exists()]
    if not found:
        raise FileNotFoundError(f"{directory}: neither {stem}.csv nor {stem}.csv.gz exists")
    if len(found) > 1:
        raise DatasetError(found[1], 0, "-", f"ambiguous: both {stem}.csv and .csv.gz exist")
    return found[0]


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


# --- bars -----------------------------------------------------------------------------------


def _parse_timestamp(raw: str, fail) -> datetime:  # type: ignore[no-untyped-def]
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise fail("timestamp", f"cannot parse {raw!r} as an ISO-8601 time") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise fail("timestamp", f"{raw!r} has no UTC offset (write e.g. +00:00)")
    return ts.astimezone(UTC)


def _parse_price(raw: str, column: str, fail) -> Decimal:  # type: ignore[no-untyped-def]
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise fail(column, f"cannot parse {raw!r} as a decimal price") from None
    if not value.is_finite():
        raise fail(column, f"{raw!r} is not a finite price")
    if value <= 0:
        raise fail(column, f"non-positive price {raw}")
    return value


def _parse_volume(raw: str, fail) -> int:  # type: ignore[no-untyped-def]
    try:
        value = int(raw)
    except ValueError:
        raise fail("volume", f"cannot parse {raw!r} as a whole number") from None
    if value < 0:
        raise fail("volume", f"negative volume {raw}")
    return value


def _check_session(ts: datetime, timeframe: str, fail) -> None:  # type: ignore[no-untyped-def]
    # Imported here: the calendar builds an exchange calendar (pandas) on first use.
    from adapters.market_data import calendar

    day = calendar.session_date(ts)
    if timeframe == "1Day":
        if not calendar.is_trading_day(day):
            raise fail("timestamp", f"{day.isoformat()} is not an NYSE trading day")
        return
    if not calendar.within_regular_hours(ts):
        session = calendar.session_for(day)
        hours = (
            f"regular hours are {session.open:%H:%M}-{session.close:%H:%M} UTC"
            if session else "not an NYSE trading day"
        )
        raise fail("timestamp", f"{ts.isoformat()} is outside NYSE regular hours ({hours})")


def load_bars_csv(
    path: Path | str, timeframe: str = "1Min", *, sessions_only: bool = False
) -> Iterator[Bar]:
    """Yield the bars of a `.csv` or `.csv.gz` file, validating every row strictly.

    Raises `DatasetError` on: a header that is not exactly BARS_COLUMNS, a row with the
    wrong number of fields, an unparsable or offset-less time, a non-positive or
    unparsable price, high < low, open/close outside [low, high], a negative or fractional
    volume, a bad symbol, or a bar not after the previous bar of the same symbol.

    With `sessions_only` (backtests), also: a 1Min bar that does not start inside NYSE
    regular hours (half-days close at 13:00), or a 1Day bar not on an NYSE trading day.
    """
    path = Path(path)
    if timeframe not in ("1Min", "1Day"):
        raise ValueError(f"timeframe must be 1Min or 1Day, not {timeframe!r}")
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DatasetError(path, 1, BARS_COLUMNS[0], "empty file: no header line")
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        missing = [c for c in BARS_COLUMNS if c not in header]
        if missing:
            raise DatasetError(path, 1, missing[0], f"missing column (header is {header})")
        extra = [c for c in header if c not in BARS_COLUMNS]
        if extra:
            raise DatasetError(path, 1, extra[0], f"unexpected column; need {BARS_COLUMNS}")
        if tuple(header) != BARS_COLUMNS:
            raise DatasetError(
                path, 1, header[0], f"columns must be in the order {','.join(BARS_COLUMNS)}"
            )

        last_seen: dict[str, tuple[datetime, int]] = {}
        for row in reader:
            line = reader.line_num

            def fail(column: str, problem: str, _line: int = line) -> DatasetError:
                return DatasetError(path, _line, column, problem)

            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) < len(BARS_COLUMNS):
                raise fail(BARS_COLUMNS[len(row)], f"missing value ({len(row)} of 7 fields)")
            if len(row) > len(BARS_COLUMNS):
                raise fail("volume", f"{len(row)} fields, expected {len(BARS_COLUMNS)}")
            raw = dict(zip(BARS_COLUMNS, (v.strip() for v in row), strict=True))

            ts = _parse_timestamp(raw["timestamp"], fail)
            if sessions_only:
                _check_session(ts, timeframe, fail)
            symbol = raw["symbol"]
            if not _SYMBOL.match(symbol):
                raise fail("symbol", f"{symbol!r} is not an upper-case ticker")
            o, h, lo, c = (_parse_price(raw[col], col, fail) for col in PRICE_COLUMNS)
            volume = _parse_volume(raw["volume"], fail)
            if h < lo:
                raise fail("high", f"high {h} is below low {lo}")
            if not lo <= o <= h:
                raise fail("open", f"open {o} is outside [low {lo}, high {h}]")
            if not lo <= c <= h:
                raise fail("close", f"close {c} is outside [low {lo}, high {h}]")
            previous = last_seen.get(symbol)
            if previous is not None and ts <= previous[0]:
                raise fail(
                    "timestamp",
                    f"{symbol} bar at {ts.isoformat()} is not after its bar on line "
                    f"{previous[1]} ({previous[0].isoformat()})",
                )
            last_seen[symbol] = (ts, line)
            yield Bar(
                symbol=symbol, timestamp=ts, open=o, high=h, low=lo, close=c,
                volume=volume, timeframe=timeframe,
            )


def format_price(value: Decimal) -> str:
    """At least two decimals (cents), more only when the source had sub-penny digits."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(Decimal("0.01"))
    return f"{value:f}"


def _bar_row(bar: Bar) -> list[str]:
    return [
        bar.timestamp.astimezone(UTC).isoformat(),
        bar.symbol,
        format_price(bar.open),
        format_price(bar.high),
        format_price(bar.low),
        format_price(bar.close),
        str(bar.volume),
    ]


def _write_text(path: Path, text: str) -> None:
    """Write text, gzip-compressed when the name ends in .gz (mtime 0: same bytes each run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if path.name.endswith(".gz"):
        with path.open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
        ) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)


def write_bars_csv(path: Path | str, bars: Iterable[Bar]) -> int:
    """Write bars in the given order (callers sort by (timestamp, symbol)); returns the count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BARS_COLUMNS)
    count = 0
    for bar in bars:
        writer.writerow(_bar_row(bar))
        count += 1
    _write_text(Path(path), buffer.getvalue())
    return count


# --- news -----------------------------------------------------------------------------------


def load_news_jsonl(path: Path | str) -> Iterator[Headline]:
    """Yield one `Headline` per non-blank line; `DatasetError` names the line and field."""
    path = Path(path)
    with _open_text(path) as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problem = f"bad JSON at character {exc.pos + 1}: {exc.msg}"
                raise DatasetError(path, line_no, "-", problem) from None
            if not isinstance(obj, dict):
                raise DatasetError(path, line_no, "-", "each line must be a JSON object")
            try:
                headline = Headline.model_validate(obj)
            except ValidationError as exc:
                first = exc.errors()[0]
                column = ".".join(str(p) for p in first["loc"]) or "-"
                raise DatasetError(path, line_no, column, first["msg"]) from None
            yield headline


def write_news_jsonl(path: Path | str, headlines: Iterable[Headline]) -> int:
    lines = [h.model_dump_json() for h in headlines]
    _write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)
