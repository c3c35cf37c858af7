"""The bundled synthetic dataset: what it holds, that it regenerates byte for byte, and that
`BundledMarketData` answers as the world looked at its clock."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.market_data import calendar, generate_dataset
from adapters.market_data.bundled import BUNDLED_DIR, BundledMarketData
from adapters.market_data.generate_dataset import SHOCK_MIN_DROP, SYMBOLS, generate, write
from config.settings import Universe
from domain.values import Bar

DAY_1, SELLOFF, HALF_DAY = date(2025, 11, 25), date(2025, 11, 26), date(2025, 11, 28)
POSITION = Decimal("10000")


@pytest.fixture(scope="module")
def data() -> BundledMarketData:
    return BundledMarketData()


def ny_time(bar: Bar) -> time:
    return bar.timestamp.astimezone(calendar.NEW_YORK).time()


def by_symbol(bars: list[Bar]) -> dict[str, list[Bar]]:
    out: dict[str, list[Bar]] = defaultdict(list)
    for b in bars:
        out[b.symbol].append(b)
    return out


def test_the_dataset_has_three_sessions_one_a_half_day(data: BundledMarketData) -> None:
    assert data.session_dates == (DAY_1, SELLOFF, HALF_DAY)
    assert [s.early_close for s in data.sessions()] == [False, False, True]
    assert set(data.symbols) == set(SYMBOLS) and len(data.symbols) == 20
    for day, minutes in ((DAY_1, 390), (SELLOFF, 390), (HALF_DAY, 210)):
        per_symbol = by_symbol(data.minute_bars(day))
        assert {len(bars) for bars in per_symbol.values()} == {minutes}
        # Loaded with sessions_only: every bar is inside regular hours already; spot-check.
        assert ny_time(per_symbol["AAPL"][0]) == time(9, 30)
        last = time(12, 59) if day == HALF_DAY else time(15, 59)
        assert ny_time(per_symbol["AAPL"][-1]) == last


def test_forty_daily_bars_come_before_the_intraday_sessions(data: BundledMarketData) -> None:
    assert data.daily_dates[-3:] == data.session_dates
    assert len(data.daily_dates) == 43
    history = calendar.previous_sessions(DAY_1, 40)
    assert list(data.daily_dates[:40]) == history


def test_the_daily_bar_of_an_intraday_session_aggregates_its_minutes(
    data: BundledMarketData,
) -> None:
    minutes = [b for b in data.minute_bars(DAY_1) if b.symbol == "NVDA"]
    day = data.bars(["NVDA"], calendar.ny_midnight(DAY_1), calendar.close_time(DAY_1), "1Day")
    assert [(d.open, d.high, d.low, d.close, d.volume) for d in day] == [(
        minutes[0].open, max(b.high for b in minutes), min(b.low for b in minutes),
        minutes[-1].close, sum(b.volume for b in minutes),
    )]


def test_the_universe_filter_has_something_to_filter(data: BundledMarketData) -> None:
    bounds = Universe()
    history = data.bars(data.symbols, calendar.ny_midnight(date(2025, 9, 1)),
                        calendar.ny_midnight(DAY_1), "1Day")
    outside = []
    for symbol, bars in by_symbol(history).items():
        price = bars[-1].close
        adv = sum(b.volume for b in bars[-20:]) / 20
        if not bounds.min_price <= price <= bounds.max_price or adv < bounds.min_avg_daily_volume:
            outside.append(symbol)
    assert outside == ["META"]


def test_prices_have_two_decimals_and_consistent_ranges(data: BundledMarketData) -> None:
    for bar in data.minute_bars(SELLOFF):
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert all(-p.as_tuple().exponent == 2 for p in (bar.open, bar.high, bar.low, bar.close))  # type: ignore[operator]


def test_volume_is_u_shaped_through_the_day(data: BundledMarketData) -> None:
    for symbol in ("AAPL", "XOM", "DIS"):
        bars = [b for b in data.minute_bars(DAY_1) if b.symbol == symbol]
        first, last = sum(b.volume for b in bars[:30]), sum(b.volume for b in bars[-30:])
        midday = sum(b.volume for b in bars[150:240]) / 3
        assert first > 1.5 * midday and last > 1.5 * midday


def test_catalyst_days_have_news_gap_and_volume(data: BundledMarketData) -> None:
    open_ = calendar.open_time(DAY_1)
    news = data.news(["MRNA"], open_ - timedelta(hours=12), open_)
    assert any("FDA" in h.headline for h in news)
    previous_close = data.bars(["MRNA"], calendar.ny_midnight(date(2025, 11, 24)),
                               calendar.ny_midnight(DAY_1), "1Day")[-1].close
    minutes = [b for b in data.minute_bars(DAY_1) if b.symbol == "MRNA"]
    assert minutes[0].open > previous_close * Decimal("1.05")  # gap up
    assert minutes[-1].close > minutes[0].open  # and it trends
    adv = sum(b.volume for b in data.bars(
        ["MRNA"], calendar.ny_midnight(date(2025, 10, 1)), calendar.ny_midnight(DAY_1), "1Day"
    )[-20:]) / 20
    assert sum(b.volume for b in minutes) > 1.5 * adv


def test_the_selloff_costs_a_long_book_more_than_the_daily_loss_limit(
    data: BundledMarketData,
) -> None:
    """On 2025-11-26 every symbol's 14:02 print is far below its lowest price of the day so
    far: a long bought at any time before (the 14:00 scan fills at the 14:01 open), even with
    a stop, loses at least that much. Three $10,000 positions (one scan's top 3) lose more
    than $2,000."""
    losses = []
    for symbol, bars in by_symbol(data.minute_bars(SELLOFF)).items():
        before = [b for b in bars if ny_time(b) <= time(14, 1)]
        shock = next(b for b in bars if ny_time(b) == time(14, 2))
        best_entry = min(b.low for b in before)
        drop = 1 - shock.open / best_entry
        assert drop >= Decimal(str(SHOCK_MIN_DROP)), symbol
        losses.append(POSITION * drop)
    assert sum(sorted(losses)[:3]) > Decimal("2000")
    shock_news = data.news(["AAPL"], calendar.open_time(SELLOFF), calendar.close_time(SELLOFF))
    assert any(h.created_at == datetime(2025, 11, 26, 19, 1, tzinfo=UTC) for h in shock_news)


def test_every_headline_is_marked_synthetic(data: BundledMarketData) -> None:
    news = data.news(data.symbols, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    assert len(news) > 50
    assert all("Synthetic" in h.summary and h.source == "Synthetic Wire" for h in news)
    assert "SYNTHETIC" in (BUNDLED_DIR / "README.md").read_text()


def test_regeneration_with_the_same_seed_gives_the_bundled_bytes(tmp_path: Path) -> None:
    """The bundled files were written by an earlier run: a fresh run must match them."""
    write(generate(generate_dataset.DEFAULT_SEED), tmp_path)
    for name in ("bars_1min.csv", "bars_1day.csv", "news.jsonl", "README.md"):
        assert (tmp_path / name).read_bytes() == (BUNDLED_DIR / name).read_bytes(), (
            f"{name} differs from the bundled file: regenerate with "
            "`python -m adapters.market_data.generate_dataset`"
        )


def test_another_seed_gives_other_prices_on_the_same_sessions(data: BundledMarketData) -> None:
    other = generate(seed=7)
    assert [s.date for s in other.sessions] == [DAY_1, SELLOFF, HALF_DAY]
    assert [b for b in other.minute_bars if b.symbol == "AAPL"][:5] != data.minute_bars(
        DAY_1, ["AAPL"])[:5]


# --- BundledMarketData at a point in time -----------------------------------------------------


SHOCK_TIME = datetime(2025, 11, 26, 19, 1, 30, tzinfo=UTC)  # 14:01:30 New York


@pytest.fixture(scope="module")
def at_shock() -> BundledMarketData:
    return BundledMarketData(clock=lambda: SHOCK_TIME)


async def test_it_returns_only_completed_minute_bars(at_shock: BundledMarketData) -> None:
    bars = await at_shock.get_bars(["AAPL", "MSFT"], SHOCK_TIME - timedelta(minutes=3),
                                   SHOCK_TIME + timedelta(days=2))
    assert [b.timestamp.astimezone(calendar.NEW_YORK).strftime("%H:%M") for b in bars] == [
        "13:59", "13:59", "14:00", "14:00"
    ]
    assert [b.symbol for b in bars[:2]] == ["AAPL", "MSFT"]


async def test_todays_daily_bar_is_partial_and_news_is_not_from_the_future(
    at_shock: BundledMarketData,
) -> None:
    days = await at_shock.get_bars(["AAPL"], calendar.ny_midnight(DAY_1),
                                   SHOCK_TIME + timedelta(days=5), "1Day")
    assert [d.timestamp for d in days] == [
        calendar.ny_midnight(DAY_1), calendar.ny_midnight(SELLOFF)
    ]
    full_day_volume = sum(b.volume for b in at_shock.minute_bars(SELLOFF, ["AAPL"]))
    assert days[-1].volume < full_day_volume
    assert days[-1].close == at_shock.minute_bars(SELLOFF, ["AAPL"])[270].close  # 14:00

    news = await at_shock.get_news(["AAPL"], calendar.ny_midnight(SELLOFF),
                                   SHOCK_TIME + timedelta(days=5))
    assert news and all(h.created_at <= SHOCK_TIME for h in news)


async def test_quotes_and_snapshots_come_from_the_last_completed_bar(
    at_shock: BundledMarketData,
) -> None:
    quotes = await at_shock.get_latest_quotes(["AAPL", "NOPE"])
    snap = (await at_shock.get_snapshots(["AAPL"]))["AAPL"]
    assert set(quotes) == {"AAPL"}
    assert snap.minute_bar is not None
    assert ny_time(snap.minute_bar) == time(14, 0)
    assert quotes["AAPL"].bid < snap.minute_bar.close < quotes["AAPL"].ask
    assert snap.latest_price == snap.minute_bar.close
    assert snap.previous_daily_bar is not None
    assert snap.previous_daily_bar.timestamp == calendar.ny_midnight(DAY_1)


async def test_the_stream_replays_bars_after_the_clock_in_order(
    at_shock: BundledMarketData, data: BundledMarketData
) -> None:
    got = [b async for b in at_shock.stream_bars(["PFE"])]
    assert ny_time(got[0]) == time(14, 1) and got[0].timestamp.date() == SELLOFF
    assert [b.timestamp for b in got] == sorted(b.timestamp for b in got)
    everything = [b async for b in data.stream_bars(["PFE", "XOM"])]
    assert len(everything) == 2 * (390 + 390 + 210)


def test_it_reads_any_directory_in_the_format(tmp_path: Path, data: BundledMarketData) -> None:
    from adapters.market_data.dataset import write_bars_csv

    write_bars_csv(tmp_path / "bars_1min.csv.gz", data.minute_bars(HALF_DAY, ["XOM"]))
    write_bars_csv(tmp_path / "bars_1day.csv", data.bars(
        ["XOM"], calendar.ny_midnight(DAY_1), calendar.ny_midnight(HALF_DAY), "1Day"))
    small = BundledMarketData(tmp_path)  # no news.jsonl: no news
    assert small.session_dates == (HALF_DAY,) and small.symbols == ("XOM",)
    assert small.news(["XOM"], calendar.ny_midnight(DAY_1), small.now()) == []
