"""Scanner handler: bars and news in, one ranked ScanCompleted per ScanRequested."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.settings import ScoringWeights, Settings, Universe
from domain.events import Event, ScanCompleted, decode_event
from domain.values import derive_id
from handlers.scanner import MAX_HEADLINES, Scanner
from tests.unit.scan_builders import (
    OPEN,
    D,
    bar,
    bar_event,
    closes,
    headline,
    make_settings,
    news_event,
    scan_requested,
)

SCAN_AT = OPEN + timedelta(minutes=60)  # bars 0..59 (09:30..10:29) are all complete


def series(symbol: str, start: str = "100", step: str = "0", n: int = 60,
           volumes: list[int] | None = None) -> list:
    return closes([D(start) + D(step) * i for i in range(n)], spread="0.05", volumes=volumes,
                  symbol=symbol)


def daily(symbol: str, volume: int = 2_000_000, close: str = "100", n: int = 20) -> list:
    return [bar(close, volume=volume, i=i, symbol=symbol, timeframe="1Day",
                start=OPEN - timedelta(days=n)) for i in range(n)]


def feed(scanner: Scanner, settings: Settings, *groups: Iterable) -> None:
    for group in groups:
        for item in group:
            ev = news_event(item) if hasattr(item, "headline") else bar_event(item)
            assert scanner.handle(ev, settings) == []


def scan(scanner: Scanner, settings: Settings, at=SCAN_AT, number: int = 1) -> ScanCompleted:
    out = scanner.handle(scan_requested(at, number), settings)
    assert len(out) == 1 and isinstance(out[0], ScanCompleted)
    return out[0]


def market(settings: Settings, scanner: Scanner | None = None) -> Scanner:
    """AAA: flat at 100 with fresh FDA news. BBB: climbing 0.1 a minute, no news.
    CCC: falling 0.1 a minute. All pass the default universe."""
    s = scanner or Scanner()
    feed(s, settings,
         series("AAA"), daily("AAA"),
         series("BBB", step="0.1"), daily("BBB"),
         series("CCC", start="110", step="-0.1"), daily("CCC"),
         [headline("AAA wins FDA approval for lead drug", SCAN_AT - timedelta(minutes=5))])
    return s


def test_scan_ranks_every_symbol_and_shows_why() -> None:
    settings = make_settings()
    done = scan(market(settings), settings)
    assert done.session_id == "2024-03-04" and done.scan_number == 1
    assert done.universe_size == 3
    assert [(c.symbol, c.rank) for c in done.candidates] == [("AAA", 1), ("BBB", 2), ("CCC", 3)]
    aaa, bbb, ccc = done.candidates
    assert aaa.details["catalysts"] == ["fda"] and aaa.catalyst > bbb.catalyst
    assert aaa.details["patterns_detected"] == ["tight_range"]
    assert bbb.momentum > 0.9 and ccc.momentum == 0.0
    assert bbb.price == D("105.9") and bbb.atr == D("0.15")
    for c in done.candidates:
        assert set(c.details) >= {"rsi", "macd", "patterns", "catalysts", "volume_ratio",
                                  "momentum_pct", "universe", "atr"}
        assert c.details["universe"] == {"price": str(c.price), "avg_daily_volume": 2_000_000}


def test_scan_event_id_derives_from_the_request_and_round_trips() -> None:
    settings = make_settings()
    req = scan_requested(SCAN_AT)
    done = market(settings).handle(req, settings)[0]
    assert done.event_id == derive_id(req.event_id, "scanner:0")
    assert done.causation_id == req.event_id and done.correlation_id == req.correlation_id
    assert decode_event(done.to_json()) == done


def test_same_log_same_scan_after_a_rebuild() -> None:
    settings = make_settings()
    live = market(settings)
    first = scan(live, settings)
    restarted = Scanner()
    events: list[Event] = [bar_event(b) for b in series("AAA")]
    restarted.rebuild(events)
    fresh = market(settings, restarted)  # replaying the same events again changes nothing
    assert scan(fresh, settings) == first


def test_empty_market_still_completes_the_scan() -> None:
    done = scan(Scanner(), make_settings())
    assert done.universe_size == 0 and done.candidates == ()


# --- universe ------------------------------------------------------------------------------


def test_universe_filter_uses_price_and_daily_volume() -> None:
    settings = make_settings()
    s = market(settings)
    feed(s, settings,
         series("PENNY", start="3"), daily("PENNY", close="3"),
         series("THIN"), daily("THIN", volume=500_000),
         series("NODAY"))
    done = scan(s, settings)
    assert done.universe_size == 3
    assert {c.symbol for c in done.candidates} == {"AAA", "BBB", "CCC"}


@pytest.mark.parametrize(
    ("universe", "expected"),
    [
        # prices: AAA 100, BBB 105.9, CCC 104.1, LIQ 103 (the only one above 3M a day)
        (Universe(min_price=D(102)), {"BBB", "CCC", "LIQ"}),  # AAA too cheap
        (Universe(max_price=D(104)), {"AAA", "LIQ"}),  # BBB and CCC too dear
        (Universe(min_avg_daily_volume=3_000_000), {"LIQ"}),
    ],
)
def test_universe_bounds_change_the_candidates(universe: Universe, expected: set[str]) -> None:
    settings = make_settings(universe=universe)
    s = market(settings)
    feed(s, settings, series("LIQ", start="103"), daily("LIQ", volume=5_000_000))
    assert {c.symbol for c in scan(s, settings).candidates} == expected


# --- what the scan may see -----------------------------------------------------------------


def test_only_complete_bars_are_used() -> None:
    settings = make_settings()
    s = market(settings)
    # a bar starting at the scan time has not closed yet: its price must not be used
    feed(s, settings, [bar("250", symbol="BBB", i=60)])
    bbb = next(c for c in scan(s, settings).candidates if c.symbol == "BBB")
    assert bbb.price == D("105.9")
    # a minute later it has closed and counts
    later = scan(s, settings, at=SCAN_AT + timedelta(minutes=1), number=2)
    assert next(c for c in later.candidates if c.symbol == "BBB").price == D(250)


def test_today_daily_bar_is_not_counted_before_the_day_is_over() -> None:
    settings = make_settings()
    s = Scanner()
    # 20 days of 1.2M, then today's partial daily bar with 100k: must not drag the average
    feed(s, settings, series("AAA"), daily("AAA", volume=1_200_000),
         [bar("100", volume=100_000, symbol="AAA", timeframe="1Day", start=OPEN)])
    assert [c.symbol for c in scan(s, settings).candidates] == ["AAA"]


def test_stale_symbol_is_no_candidate() -> None:
    settings = make_settings()
    s = market(settings)
    feed(s, settings, closes(["100"] * 60, symbol="OLD", start=OPEN - timedelta(minutes=40)),
         daily("OLD"))
    assert "OLD" not in {c.symbol for c in scan(s, settings).candidates}


def test_too_few_bars_for_an_atr_is_no_candidate() -> None:
    settings = make_settings()
    s = Scanner()
    recent = [b.model_copy(update={"timestamp": b.timestamp + timedelta(minutes=46)})
              for b in series("NEW", n=14)]  # 10:16..10:29: fresh, but ATR(14) needs 15
    feed(s, settings, recent, daily("NEW"))
    done = scan(s, settings)
    assert done.universe_size == 1 and done.candidates == ()


# --- config keys that change the outcome ---------------------------------------------------


def test_weights_change_the_ranking() -> None:
    default = make_settings()
    assert [c.symbol for c in scan(market(default), default).candidates][:2] == ["AAA", "BBB"]
    momentum_first = make_settings(
        weights=ScoringWeights(catalyst=0.1, momentum=0.7, volume=0.1, technical=0.1)
    )
    done = scan(market(momentum_first), momentum_first)
    assert [c.symbol for c in done.candidates][:2] == ["BBB", "AAA"]


def _climax_market(settings: Settings) -> ScanCompleted:
    s = Scanner()
    feed(s, settings, series("VOL", step="0.1", volumes=[1000] * 55 + [6000] * 5),
         daily("VOL"))
    return scan(s, settings)


def test_climax_volume_settings() -> None:
    hit = _climax_market(make_settings()).candidates[0]
    assert hit.details["volume_ratio"] == 6.0 and hit.penalty == 0.2
    assert hit.details["climax_volume"] is True
    higher_bar = _climax_market(make_settings(climax_volume_ratio=7.0)).candidates[0]
    assert higher_bar.penalty == 0.0
    assert higher_bar.composite - hit.composite == pytest.approx(0.2, abs=1e-6)
    bigger = _climax_market(make_settings(climax_penalty=0.5)).candidates[0]
    assert bigger.penalty == 0.5 and bigger.composite < hit.composite


def test_news_half_life_changes_the_catalyst_score() -> None:
    def catalyst(hours: float) -> float:
        settings = make_settings(news_half_life_hours=hours)
        s = Scanner()
        feed(s, settings, series("AAA"), daily("AAA"),
             [headline("AAA wins FDA approval", SCAN_AT - timedelta(hours=3))])
        return scan(s, settings).candidates[0].catalyst

    assert catalyst(1.0) < catalyst(6.0) < catalyst(48.0)


def test_news_is_per_symbol() -> None:
    settings = make_settings()
    s = Scanner()
    feed(s, settings, series("AAA"), daily("AAA"), series("BBB"), daily("BBB"))
    s.handle(news_event(headline("BBB wins FDA approval", SCAN_AT), symbol="BBB"), settings)
    by = {c.symbol: c for c in scan(s, settings).candidates}
    assert by["BBB"].catalyst > by["AAA"].catalyst == 0.2


# --- bounded memory and corrections --------------------------------------------------------


def test_memory_is_bounded() -> None:
    settings = make_settings()
    s = Scanner()
    feed(s, settings, series("AAA", n=500), daily("AAA", n=100),
         [headline(f"AAA news {i}", OPEN, id=f"n{i}") for i in range(MAX_HEADLINES + 30)])
    st = s.symbols["AAA"]
    assert len(st.intraday) == s.params.intraday_history == 120
    assert len(st.daily) == s.params.daily_history == 30
    assert len(st.news) == MAX_HEADLINES
    assert st.intraday[-1].timestamp == OPEN + timedelta(minutes=499)
    assert "n0" not in st.news and f"n{MAX_HEADLINES + 29}" in st.news


def test_corrected_and_late_bars_keep_the_series_ordered() -> None:
    settings = make_settings()
    s = Scanner()
    bars = series("AAA", n=5)
    feed(s, settings, [bars[0], bars[1], bars[3], bars[4]])
    feed(s, settings, [bars[2]])  # late
    feed(s, settings, [bar("101", symbol="AAA", i=4, volume=7)])  # corrected last bar
    got = list(s.symbols["AAA"].intraday)
    assert [b.timestamp for b in got] == [b.timestamp for b in bars]
    assert got[-1].close == Decimal("101") and got[-1].volume == 7


def test_other_timeframes_are_ignored() -> None:
    settings = make_settings()
    s = Scanner()
    feed(s, settings, [bar("100", symbol="AAA", timeframe="5Min")])
    st = s.symbols.get("AAA")
    assert st is None or (not st.intraday and not st.daily)


# --- the per-bar moves it keeps ----------------------------------------------------------------


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-2, 6), st.integers(9_900, 10_100),
                          st.integers(0, 30)), min_size=1, max_size=260))
def test_kept_moves_equal_the_window_recomputed(ops: list[tuple[int, int, int]]) -> None:
    """New bars (past the history's length), corrected last bars and late older bars: what
    the scanner keeps per bar is what the indicators would compute over its window."""
    scanner = Scanner()
    minute = 0
    for n, (back, cents, spread) in enumerate(ops):
        # back > 0: a new minute; 0: the last one again (a correction); < 0: a late bar
        minute = minute + 1 if back > 0 else max(0, minute + back)
        b = bar(D(cents) / 100, high=D(cents + spread) / 100, low=D(cents - spread) / 100,
                i=minute, volume=1000 + n)
        scanner.apply(bar_event(b))
    from domain.scoring import BarColumns
    from handlers.scanner import _columns

    st_ = scanner.symbols["AAA"]
    bars = list(st_.intraday)
    assert len(st_.columns) == len(bars)
    for n in {1, 2, len(bars) // 2, len(bars)} - {0}:
        kept = [list(c) for c in _columns(st_.columns, n)]
        assert kept == [list(c) for c in BarColumns.of(bars[:n])]
