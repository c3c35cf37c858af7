"""Universe filter, component scores, composite, penalty, ranking."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from config.settings import ScoringWeights, Universe
from domain.indicators import Macd
from domain.patterns import PatternResult
from domain.scoring import (
    ScanParams,
    SymbolScore,
    average_daily_volume,
    climax_penalty,
    composite_score,
    macd_score,
    momentum_score,
    pattern_score,
    rank_candidates,
    rsi_score,
    score_symbol,
    technical_score,
    universe_check,
    volume_score,
)
from tests.unit.scan_builders import OPEN, D, bar, closes, headline


def daily(volumes: list[int], close: str = "50") -> list:
    return [bar(close, volume=v, i=i, timeframe="1Day", start=OPEN - timedelta(days=40))
            for i, v in enumerate(volumes)]


# --- universe ------------------------------------------------------------------------------


def test_average_daily_volume_uses_the_last_lookback_days() -> None:
    assert average_daily_volume(daily([9_000_000] + [1_000_000] * 20)) == 1_000_000
    assert average_daily_volume(daily([1_000_000, 2_000_000])) == 1_500_000
    assert average_daily_volume([]) is None


def test_universe_defaults_pass_and_fail() -> None:
    u = Universe()
    ok = daily([2_000_000] * 20)
    assert universe_check(D(50), ok, u).passed
    assert universe_check(D("4.99"), ok, u).reason.startswith("price 4.99 < min")
    assert universe_check(D("500.01"), ok, u).reason.startswith("price 500.01 > max")
    thin = daily([900_000] * 20)
    assert not universe_check(D(50), thin, u).passed
    assert universe_check(D(50), [], u).reason == "no daily bars for the volume check"


@pytest.mark.parametrize(
    ("universe", "price", "volume", "passed"),
    [
        (Universe(min_price=D(60)), "50", 2_000_000, False),  # min_price
        (Universe(min_price=D(1)), "3", 2_000_000, True),
        (Universe(max_price=D(40)), "50", 2_000_000, False),  # max_price
        (Universe(min_avg_daily_volume=3_000_000), "50", 2_000_000, False),  # min volume
        (Universe(min_avg_daily_volume=500_000), "50", 600_000, True),
    ],
)
def test_universe_bounds_come_from_config(
    universe: Universe, price: str, volume: int, passed: bool
) -> None:
    assert universe_check(D(price), daily([volume] * 20), universe).passed is passed


def test_zero_minimum_volume_needs_no_daily_bars() -> None:
    assert universe_check(D(50), [], Universe(min_avg_daily_volume=0)).passed


# --- component scores ----------------------------------------------------------------------


def test_momentum_and_volume_scores_are_linear_and_clamped() -> None:
    assert momentum_score(None) == 0.0
    assert momentum_score(-2.0) == 0.0
    assert momentum_score(1.5) == pytest.approx(0.5)
    assert momentum_score(9.0) == 1.0
    assert volume_score(None) == 0.0
    assert volume_score(0.8) == 0.0
    assert volume_score(2.0) == pytest.approx(0.5)
    assert volume_score(3.0) == 1.0


@pytest.mark.parametrize(
    ("rsi", "expected"),
    [(None, 0.0), (25, 0.0), (30, 0.0), (42.5, 0.5), (55, 1.0), (65, 1.0), (70, 1.0),
     (77.5, 0.5), (85, 0.0), (95, 0.0)],
)
def test_rsi_score_favours_the_momentum_zone(rsi: float | None, expected: float) -> None:
    assert rsi_score(rsi) == pytest.approx(expected)


def test_macd_and_pattern_scores() -> None:
    def m(line: str, hist: str) -> Macd:
        return Macd(D(line), D(line) - D(hist), D(hist), None)

    assert macd_score(None) == 0.0
    assert macd_score(m("0.5", "0.1")) == 1.0
    assert macd_score(m("-0.5", "0.1")) == 0.5
    assert macd_score(m("0.5", "-0.1")) == 0.5
    assert macd_score(m("-0.5", "-0.1")) == 0.0
    br = PatternResult("breakout", True)
    db = PatternResult("double_bottom", True)
    tr = PatternResult("tight_range", True)
    assert pattern_score([None, PatternResult("breakout", False)]) == 0.0
    assert pattern_score([tr]) == 0.5
    assert pattern_score([tr, db]) == 0.8
    assert pattern_score([tr, db, br]) == 1.0
    # 0.4 * 1 (RSI 60) + 0.3 * 1 (MACD) + 0.3 * 0.5 (tight range) = 0.85
    assert technical_score(60, m("0.5", "0.1"), [tr]) == pytest.approx(0.85)


# --- composite and penalty -----------------------------------------------------------------


def test_composite_uses_the_configured_weights() -> None:
    # default 0.3 / 0.2 / 0.2 / 0.3: 0.3*0.5 + 0.2*1 + 0.2*0 + 0.3*0.5 = 0.5
    assert composite_score(0.5, 1.0, 0.0, 0.5, ScoringWeights()) == pytest.approx(0.5)
    heavy_news = ScoringWeights(catalyst=0.7, momentum=0.1, volume=0.1, technical=0.1)
    assert composite_score(1.0, 0, 0, 0, ScoringWeights()) == pytest.approx(0.3)
    assert composite_score(1.0, 0, 0, 0, heavy_news) == pytest.approx(0.7)


def test_climax_penalty_from_config() -> None:
    assert climax_penalty(5.0, climax_ratio=5.0, penalty=0.2) == 0.2
    assert climax_penalty(4.99, climax_ratio=5.0, penalty=0.2) == 0.0
    assert climax_penalty(5.0, climax_ratio=6.0, penalty=0.2) == 0.0
    assert climax_penalty(None, climax_ratio=5.0, penalty=0.2) == 0.0
    w = ScoringWeights()
    assert composite_score(0.5, 1.0, 0.0, 0.5, w, penalty=0.2) == pytest.approx(0.3)
    assert composite_score(0.1, 0.0, 0.0, 0.0, w, penalty=0.5) == 0.0  # clamped


# --- one symbol ----------------------------------------------------------------------------


def rising(n: int = 60, volumes: list[int] | None = None) -> list:
    # closes 100.0, 100.1, ...; high/low = close +/- 0.05 -> every true range is 0.15
    return closes([Decimal(100) + Decimal("0.1") * i for i in range(n)], spread="0.05",
                  volumes=volumes)


def test_score_symbol_figures_by_hand() -> None:
    bars = rising()
    s = score_symbol("AAA", bars, [], OPEN + timedelta(hours=1), weights=ScoringWeights(),
                     climax_volume_ratio=5.0, climax_penalty_value=0.2,
                     news_half_life_hours=6.0)
    assert s is not None
    assert s.price == D("105.9") and s.atr == D("0.15")
    # momentum over 30 bars: 105.9 / 102.9 - 1 = 2.9155% -> score 0.9718
    assert s.details["momentum_pct"] == pytest.approx((105.9 / 102.9 - 1) * 100, abs=1e-3)
    assert s.momentum == pytest.approx((105.9 / 102.9 - 1) * 100 / 3, abs=1e-6)
    assert s.details["volume_ratio"] == 1.0 and s.volume == 0.0  # flat volume
    # RSI 100: only gains, overbought -> 0. On a straight line an SMA-seeded EMA(n) lags by
    # (n-1)/2 bars, so MACD = (25 - 11)/2 * 0.1 = 0.7 from the start, the signal equals it
    # and the histogram is 0 -> MACD score 0.5 (line above zero only). No pattern:
    # technical = 0.4 * 0 + 0.3 * 0.5 + 0.3 * 0 = 0.15
    assert s.details["rsi"] == 100.0
    assert s.details["macd"] == {"line": 0.7, "signal": 0.7, "histogram": 0.0}
    assert s.details["patterns_detected"] == [] and s.technical == pytest.approx(0.15)
    assert s.catalyst == 0.2 and s.details["catalysts"] == []
    assert s.penalty == 0.0 and s.details["climax_volume"] is False
    assert set(s.details) >= {"macd", "patterns", "patterns_detected", "headlines", "atr"}
    expected = 0.3 * s.catalyst + 0.2 * s.momentum + 0.2 * s.volume + 0.3 * s.technical
    assert s.composite == pytest.approx(expected, abs=1e-5)


def test_score_symbol_climax_volume_is_penalised() -> None:
    vols = [1000] * 55 + [6000] * 5  # last 5 bars vs the 20 before: 6x
    kw = dict(weights=ScoringWeights(), climax_penalty_value=0.2, news_half_life_hours=6.0)
    hit = score_symbol("AAA", rising(volumes=vols), [], OPEN, climax_volume_ratio=5.0, **kw)
    miss = score_symbol("AAA", rising(volumes=vols), [], OPEN, climax_volume_ratio=7.0, **kw)
    assert hit is not None and miss is not None
    assert hit.details["volume_ratio"] == 6.0 and hit.volume == 1.0
    assert hit.penalty == 0.2 and miss.penalty == 0.0
    assert miss.composite - hit.composite == pytest.approx(0.2, abs=1e-6)


def test_score_symbol_news_and_too_few_bars() -> None:
    kw = dict(weights=ScoringWeights(), climax_volume_ratio=5.0, climax_penalty_value=0.2,
              news_half_life_hours=6.0)
    good = [headline("AAA wins FDA approval", OPEN)]
    with_news = score_symbol("AAA", rising(), good, OPEN, **kw)
    without = score_symbol("AAA", rising(), [], OPEN, **kw)
    assert with_news is not None and without is not None
    assert with_news.catalyst > without.catalyst and with_news.details["catalysts"] == ["fda"]
    assert with_news.details["headlines"][0]["headline"] == "AAA wins FDA approval"
    assert score_symbol("AAA", rising(14), [], OPEN, **kw) is None  # no ATR(14) yet
    short = score_symbol("AAA", rising(15), [], OPEN, **kw)
    assert short is not None and short.details["macd"] is None  # missing parts score 0


def test_scan_params_intraday_needed() -> None:
    assert ScanParams().intraday_needed == 40  # the double-bottom window
    assert ScanParams(double_bottom_lookback=10).intraday_needed == 34  # MACD 26 + 9 - 1


# --- ranking -------------------------------------------------------------------------------


def _s(symbol: str, composite: float) -> SymbolScore:
    return SymbolScore(symbol, D(10), D("0.1"), 0, 0, 0, 0, 0, composite, {"k": 1})


def test_ranking_by_composite_then_symbol() -> None:
    ranked = rank_candidates([_s("CCC", 0.5), _s("BBB", 0.7), _s("AAA", 0.5)],
                             {"AAA": {"universe": {"price": "10"}}})
    assert [(c.symbol, c.rank) for c in ranked] == [("BBB", 1), ("AAA", 2), ("CCC", 3)]
    assert ranked[1].details == {"k": 1, "universe": {"price": "10"}}
    again = rank_candidates([_s("AAA", 0.5), _s("CCC", 0.5), _s("BBB", 0.7)])
    assert [c.symbol for c in again] == ["BBB", "AAA", "CCC"]
