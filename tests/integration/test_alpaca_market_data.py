"""`AlpacaMarketData` and `catalyst data fetch` through the real alpaca-py clients, against
the fake Alpaca data server (REST and the bars WebSocket)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from adapters.market_data import calendar
from adapters.market_data.alpaca import AlpacaMarketData, fetch_to_dataset
from adapters.market_data.bundled import BundledMarketData
from adapters.market_data.port import MarketDataUnavailable
from config.settings import Settings
from domain.values import Bar, Headline
from tests.fakes.alpaca_data_server import FakeAlpacaData

pytestmark = pytest.mark.integration

DAY = date(2025, 11, 25)
SYMBOLS = ["AAPL", "MRNA"]


@pytest.fixture(scope="module")
def bundled() -> BundledMarketData:
    return BundledMarketData()


def numbered(news: list[Headline]) -> list[Headline]:
    """Alpaca news ids are integers."""
    return [h.model_copy(update={"id": str(1000 + i)}) for i, h in enumerate(news)]


@pytest.fixture
async def fake(bundled: BundledMarketData) -> AsyncIterator[FakeAlpacaData]:
    history = bundled.bars(SYMBOLS, calendar.ny_midnight(date(2025, 9, 1)),
                           calendar.ny_midnight(date(2025, 11, 26)), "1Day")
    news = bundled.news(SYMBOLS, calendar.ny_midnight(date(2025, 9, 1)),
                        calendar.close_time(DAY))
    # Alpaca serves extended hours too: one pre-market bar the fetch must drop.
    premarket = bundled.minute_bars(DAY, ["AAPL"])[0].model_copy(
        update={"timestamp": datetime(2025, 11, 25, 13, 0, tzinfo=UTC)})
    server = FakeAlpacaData(
        [premarket, *bundled.minute_bars(DAY, SYMBOLS), *history], numbered(news),
        page_size=250,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def settings_for(fake: FakeAlpacaData, **market_data: object) -> Settings:
    return Settings.model_validate({"trading": {
        "broker": {"api_key": fake.api_key, "secret_key": fake.secret_key,
                   "timeout_seconds": 2.0},
        "market_data": {"source": "alpaca", "data_url": fake.url,
                        "stream_url": fake.stream_url, **market_data},
    }})


@pytest.fixture
async def alpaca(fake: FakeAlpacaData) -> AsyncIterator[AlpacaMarketData]:
    md = AlpacaMarketData.from_settings(settings_for(fake))
    try:
        yield md
    finally:
        await md.close()


async def test_minute_bars_arrive_whole_across_pages_as_decimals(
    alpaca: AlpacaMarketData, fake: FakeAlpacaData, bundled: BundledMarketData
) -> None:
    session = calendar.session_for(DAY)
    assert session is not None

    bars = await alpaca.get_bars(SYMBOLS, session.open, session.close)

    assert bars == bundled.minute_bars(DAY, SYMBOLS)  # 780 bars, 250 a page
    bar_pages = [q for path, q in fake.requests if path == "/v2/stocks/bars"]
    assert len(bar_pages) == 4
    assert {q["feed"] for q in bar_pages} == {"iex"}
    assert {q["adjustment"] for q in bar_pages} == {"split"}


async def test_the_end_of_a_range_is_exclusive(alpaca: AlpacaMarketData) -> None:
    open_ = calendar.open_time(DAY)
    bars = await alpaca.get_bars(["AAPL"], open_, open_ + timedelta(minutes=2))
    assert [b.timestamp for b in bars] == [open_, open_ + timedelta(minutes=1)]


async def test_daily_bars_keep_their_timeframe(
    alpaca: AlpacaMarketData, bundled: BundledMarketData
) -> None:
    start, end = calendar.ny_midnight(date(2025, 11, 1)), calendar.ny_midnight(DAY)
    bars = await alpaca.get_bars(["MRNA"], start, end, "1Day")
    assert bars == bundled.bars(["MRNA"], start, end, "1Day")
    assert {b.timeframe for b in bars} == {"1Day"}


async def test_the_sip_feed_is_asked_for_when_configured(fake: FakeAlpacaData) -> None:
    md = AlpacaMarketData.from_settings(settings_for(fake, feed="sip"))
    try:
        await md.get_latest_quotes(["AAPL"])
    finally:
        await md.close()
    assert fake.requests[-1] == ("/v2/stocks/quotes/latest", {"symbols": "AAPL", "feed": "sip"})


async def test_news_comes_back_oldest_first_across_pages(
    alpaca: AlpacaMarketData, fake: FakeAlpacaData
) -> None:
    fake.news = numbered(fake.news * 5)  # more than one 50-item page
    start, end = calendar.ny_midnight(date(2025, 9, 1)), calendar.close_time(DAY)

    news = await alpaca.get_news(SYMBOLS, start, end)

    assert len(news) == len(fake.news) > 50
    assert [h.created_at for h in news] == sorted(h.created_at for h in fake.news)
    assert {h.id for h in news} == {h.id for h in fake.news}
    assert len([p for p, _ in fake.requests if p == "/v1beta1/news"]) >= 2


async def test_quotes_and_snapshots_convert_to_port_types(
    alpaca: AlpacaMarketData, bundled: BundledMarketData
) -> None:
    last = bundled.minute_bars(DAY, ["AAPL"])[-1]

    quotes = await alpaca.get_latest_quotes(["AAPL"])
    snaps = await alpaca.get_snapshots(["AAPL"])

    assert quotes["AAPL"].bid < last.close < quotes["AAPL"].ask
    snap = snaps["AAPL"]
    assert snap.latest_price == last.close and snap.minute_bar == last
    assert snap.daily_bar is not None and snap.daily_bar.timeframe == "1Day"
    assert snap.previous_daily_bar is not None


async def test_a_rejected_key_is_an_error_without_the_secret(fake: FakeAlpacaData) -> None:
    md = AlpacaMarketData("wrong-key-123", "wrong-secret-456", data_url=fake.url)
    try:
        with pytest.raises(MarketDataUnavailable) as caught:
            await md.get_bars(["AAPL"], calendar.open_time(DAY), calendar.close_time(DAY))
    finally:
        await md.close()
    message = str(caught.value)
    assert "HTTP 401" in message
    assert "wrong-secret-456" not in message and "wrong-key-123" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_server_error_is_market_data_unavailable(
    alpaca: AlpacaMarketData, fake: FakeAlpacaData
) -> None:
    fake.fail_next = [500]
    with pytest.raises(MarketDataUnavailable, match="HTTP 500"):
        await alpaca.get_news(["AAPL"], calendar.ny_midnight(DAY), calendar.close_time(DAY))


async def test_a_stalled_server_times_out(fake: FakeAlpacaData) -> None:
    fake.stall_next = 1
    md = AlpacaMarketData(fake.api_key, fake.secret_key, data_url=fake.url,
                          timeout_seconds=0.3)
    try:
        with pytest.raises(MarketDataUnavailable, match="Timeout"):
            await md.get_latest_quotes(["AAPL"])
    finally:
        await md.close()


async def test_live_bars_stream_over_the_websocket(
    alpaca: AlpacaMarketData, fake: FakeAlpacaData, bundled: BundledMarketData
) -> None:
    wanted = bundled.minute_bars(DAY, ["AAPL"])[:3]
    fake.stream_bars = [*wanted, *bundled.minute_bars(DAY, ["PFE"])[:2]]  # PFE: not asked

    got: list[Bar] = []
    stream = alpaca.stream_bars(["AAPL"])
    async with contextlib.aclosing(stream):
        async for bar in stream:
            got.append(bar)
            if len(got) == 3:
                break

    assert got == wanted


async def test_a_fetch_writes_a_dataset_the_bundled_source_can_read(
    fake: FakeAlpacaData, bundled: BundledMarketData, tmp_path: Path
) -> None:
    summary = await fetch_to_dataset(settings_for(fake), ["mrna", "AAPL"], DAY, DAY, tmp_path)

    assert summary.sessions == (DAY,)
    assert summary.files["bars_1min.csv"] == 780  # the pre-market bar was dropped
    fetched = BundledMarketData(tmp_path)
    assert fetched.session_dates == (DAY,)
    assert fetched.minute_bars(DAY) == bundled.minute_bars(DAY, SYMBOLS)
    start, end = calendar.ny_midnight(date(2025, 9, 1)), calendar.ny_midnight(date(2025, 11, 26))
    assert fetched.bars(SYMBOLS, start, end, "1Day") == bundled.bars(SYMBOLS, start, end, "1Day")
    assert len(fetched.daily_dates) == 41  # 40 sessions of history and the fetched day
    news = fetched.news(SYMBOLS, start, end)
    assert news and min(h.created_at for h in news) >= calendar.ny_midnight(
        calendar.previous_sessions(DAY, 3)[0])
