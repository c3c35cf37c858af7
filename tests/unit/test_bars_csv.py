"""The dataset format: strict loading, and every error names the file, line and column."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.market_data.dataset import (
    DatasetError,
    dataset_file,
    load_bars_csv,
    load_news_jsonl,
    write_bars_csv,
    write_news_jsonl,
)
from domain.values import Bar, Headline

HEADER = "timestamp,symbol,open,high,low,close,volume\n"
GOOD = "2025-11-25T14:30:00+00:00,AAPL,275.00,275.50,274.80,275.20,12000\n"
GOOD_2 = "2025-11-25T14:31:00+00:00,AAPL,275.20,275.30,275.00,275.10,9000\n"


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_a_good_file_loads_as_utc_decimal_bars(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + GOOD + "2025-11-25T09:31:00-05:00,AAPL,275,275.3,275,275.1,0\n")

    bars = list(load_bars_csv(path))

    assert [b.timestamp for b in bars] == [
        datetime(2025, 11, 25, 14, 30, tzinfo=UTC), datetime(2025, 11, 25, 14, 31, tzinfo=UTC)
    ]
    assert bars[0].high == Decimal("275.50") and bars[0].volume == 12000
    assert bars[0].timeframe == "1Min"


def test_gzip_and_plain_files_read_the_same_and_round_trip(tmp_path: Path) -> None:
    plain = write(tmp_path, HEADER + GOOD + GOOD_2)
    zipped = write(tmp_path, HEADER + GOOD + GOOD_2, "bars.csv.gz")
    bars = list(load_bars_csv(plain))
    assert list(load_bars_csv(zipped)) == bars

    out = tmp_path / "again.csv.gz"
    write_bars_csv(out, bars)
    assert list(load_bars_csv(out)) == bars
    assert gzip.decompress(out.read_bytes()).decode() == HEADER + GOOD + GOOD_2


def test_writing_the_same_bars_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    bars = list(load_bars_csv(write(tmp_path, HEADER + GOOD)))
    write_bars_csv(tmp_path / "a.csv.gz", bars)
    write_bars_csv(tmp_path / "b.csv.gz", bars)
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()


BAD_ROWS = {
    "unparsable time": ("yesterday,AAPL,1,1,1,1,1\n", "timestamp", "cannot parse"),
    "time without offset": ("2025-11-25T14:30:00,AAPL,1,1,1,1,1\n", "timestamp", "no UTC offset"),
    "high below low": (
        "2025-11-25T14:30:00+00:00,AAPL,10,9.50,10.50,10,1\n", "high", "below low"),
    "zero price": ("2025-11-25T14:30:00+00:00,AAPL,0,1,0,1,1\n", "open", "non-positive"),
    "negative price": (
        "2025-11-25T14:30:00+00:00,AAPL,1,1,1,-1,1\n", "close", "non-positive"),
    "unparsable price": ("2025-11-25T14:30:00+00:00,AAPL,1,abc,1,1,1\n", "high", "decimal"),
    "negative volume": ("2025-11-25T14:30:00+00:00,AAPL,1,1,1,1,-5\n", "volume", "negative"),
    "fractional volume": ("2025-11-25T14:30:00+00:00,AAPL,1,1,1,1,1.5\n", "volume", "whole"),
    "missing value": ("2025-11-25T14:30:00+00:00,AAPL,1,1,1\n", "close", "missing value"),
    "bad symbol": ("2025-11-25T14:30:00+00:00,aapl,1,1,1,1,1\n", "symbol", "ticker"),
    "open outside the range": (
        "2025-11-25T14:30:00+00:00,AAPL,12,11,10,10.5,1\n", "open", "outside"),
    "duplicate bar": (GOOD, "timestamp", "not after its bar on line 3"),
}


@pytest.mark.parametrize("name", list(BAD_ROWS))
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_each_bad_value_names_file_line_and_column(tmp_path: Path, name: str, suffix: str) -> None:
    row, column, problem = BAD_ROWS[name]
    # The bad row is on line 4: header, two good rows, then it.
    path = write(tmp_path, HEADER + GOOD_2.replace("14:31", "14:29") + GOOD + row, "b" + suffix)

    with pytest.raises(DatasetError) as caught:
        list(load_bars_csv(path))

    err = caught.value
    assert (err.path, err.line, err.column) == (path, 4, column)
    assert str(path) in str(err) and "line 4" in str(err) and f"column '{column}'" in str(err)
    assert problem in str(err)


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("timestamp,symbol,open,high,low,volume\n", "close"),
        ("time,symbol,open,high,low,close,volume\n", "timestamp"),
        ("timestamp,symbol,open,high,low,close,volume,vwap\n", "vwap"),
    ],
)
def test_a_wrong_header_names_the_column(tmp_path: Path, header: str, column: str) -> None:
    path = write(tmp_path, header + GOOD)
    with pytest.raises(DatasetError) as caught:
        list(load_bars_csv(path))
    assert (caught.value.line, caught.value.column) == (1, column)
    assert "bars.csv: line 1, column" in str(caught.value)


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="line 1"):
        list(load_bars_csv(write(tmp_path, "")))


def test_sessions_only_rejects_bars_outside_regular_hours(tmp_path: Path) -> None:
    # 2025-11-28 is a half-day: 12:59 New York is in, 13:00 is out.
    ok = "2025-11-28T17:59:00+00:00,AAPL,1,1,1,1,1\n"
    late = "2025-11-28T18:00:00+00:00,AAPL,1,1,1,1,1\n"
    path = write(tmp_path, HEADER + ok + late)
    assert len(list(load_bars_csv(path))) == 2  # off by default

    with pytest.raises(DatasetError) as caught:
        list(load_bars_csv(path, sessions_only=True))
    assert (caught.value.line, caught.value.column) == (3, "timestamp")
    assert "regular hours" in str(caught.value)


def test_sessions_only_rejects_a_daily_bar_on_a_holiday(tmp_path: Path) -> None:
    thanksgiving = "2025-11-27T05:00:00+00:00,AAPL,1,1,1,1,1\n"
    path = write(tmp_path, HEADER + thanksgiving)
    with pytest.raises(DatasetError, match="2025-11-27 is not an NYSE trading day"):
        list(load_bars_csv(path, "1Day", sessions_only=True))


def test_dataset_file_finds_csv_or_gz_but_not_both(tmp_path: Path) -> None:
    write(tmp_path, HEADER, "bars_1min.csv.gz")
    assert dataset_file(tmp_path, "bars_1min").name == "bars_1min.csv.gz"
    write(tmp_path, HEADER, "bars_1min.csv")
    with pytest.raises(DatasetError, match="ambiguous"):
        dataset_file(tmp_path, "bars_1min")
    with pytest.raises(FileNotFoundError):
        dataset_file(tmp_path, "bars_1day")


def test_news_jsonl_round_trips_and_errors_name_line_and_field(tmp_path: Path) -> None:
    headline = Headline(
        id="1", symbols=("AAPL",), headline="Apple does a thing", source="wire",
        created_at=datetime(2025, 11, 25, 12, tzinfo=UTC),
    )
    path = tmp_path / "news.jsonl"
    write_news_jsonl(path, [headline, headline])
    assert list(load_news_jsonl(path)) == [headline, headline]

    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1].replace('"2025-11-25T12:00:00Z"', '"soon"') + "\n")
    with pytest.raises(DatasetError) as caught:
        list(load_news_jsonl(path))
    assert (caught.value.line, caught.value.column) == (2, "created_at")

    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DatasetError, match="line 2"):
        list(load_news_jsonl(path))


def test_prices_are_written_with_at_least_two_decimals(tmp_path: Path) -> None:
    bar = Bar(
        symbol="X", timestamp=datetime(2025, 11, 25, 14, 30, tzinfo=UTC), open=Decimal("5"),
        high=Decimal("5.1"), low=Decimal("4.9999"), close=Decimal("5.00"), volume=1,
    )
    write_bars_csv(tmp_path / "x.csv", [bar])
    assert (tmp_path / "x.csv").read_text().splitlines()[1] == (
        "2025-11-25T14:30:00+00:00,X,5.00,5.10,4.9999,5.00,1"
    )
