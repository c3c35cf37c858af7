"""Patterns on hand-made bars."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from domain.patterns import breakout, double_bottom, tight_range
from tests.unit.scan_builders import D, bar, hlc

# --- breakout ------------------------------------------------------------------------------


def _prior(n: int = 19, top: str = "100") -> list:
    # highs climb to `top` on the last prior bar, so the max is exactly `top`
    return [bar("98", high=str(Decimal(top) - n + 1 + i), low="97", i=i) for i in range(n)]


def test_breakout_at_two_percent_above_the_prior_19_bar_high() -> None:
    res = breakout([*_prior(), bar("102", high="102.5", low="101", i=19)])
    assert res is not None and res.detected
    assert res.figures["prior_high"] == 100.0
    assert res.figures["level"] == 102.0
    assert res.figures["pct_above_prior_high"] == pytest.approx(2.0)


def test_breakout_just_short_of_two_percent_is_not_one() -> None:
    res = breakout([*_prior(), bar("101.99", high="102.5", low="101", i=19)])
    assert res is not None and not res.detected


def test_breakout_only_looks_back_19_bars() -> None:
    old_high = bar("150", high="150", low="149", i=-1)  # 20 bars back: outside the window
    res = breakout([old_high, *_prior(), bar("102", i=19)])
    assert res is not None and res.detected
    assert breakout(_prior()) is None  # 19 bars: no bar to break out
    res = breakout([old_high, *_prior(), bar("102", i=19)], lookback=20)
    assert res is not None and not res.detected


def test_breakout_threshold_is_a_parameter() -> None:
    bars = [*_prior(), bar("101", i=19)]
    assert not breakout(bars).detected  # type: ignore[union-attr]
    assert breakout(bars, threshold=0.01).detected  # type: ignore[union-attr]


# --- double bottom -------------------------------------------------------------------------

W_LOWS = ["105", "103", "100", "102", "104", "106", "104", "102", "100.5", "102", "104", "105"]


def _from_lows(lows: list[str]) -> list:
    # high = low + 0.5, close = low + 0.25
    return hlc([(D(lo) + D("0.5"), D(lo), D(lo) + D("0.25")) for lo in lows])


def test_double_bottom_two_lows_within_two_percent_and_a_higher_peak() -> None:
    res = double_bottom(_from_lows(W_LOWS), lookback=12)
    assert res is not None and res.detected
    f = res.figures
    assert (f["first_low"], f["second_low"], f["peak"]) == (100.0, 100.5, 106.5)
    assert f["low_diff_pct"] == pytest.approx(0.5)
    assert f["rebound_pct"] == pytest.approx((106.5 / 100.5 - 1) * 100, abs=1e-3)
    assert f["bars_apart"] == 6
    assert f["neckline_broken"] is False  # last close 105.25 < peak 106.5


def test_double_bottom_lows_too_far_apart_in_price() -> None:
    lows = W_LOWS.copy()
    lows[8] = "97"  # 3.1% below the first low
    res = double_bottom(_from_lows(lows), lookback=12)
    assert res is not None and not res.detected


def test_double_bottom_needs_a_real_peak_between() -> None:
    res = double_bottom(_from_lows(["100"] * 12), lookback=12)  # peak 0.5% above: too flat
    assert res is not None and not res.detected


def test_double_bottom_broken_by_a_lower_low_afterwards() -> None:
    # after the second bottom price falls 3% below both lows: the pattern failed (and the
    # new low is too far from either old one to pair with it)
    lows = [*W_LOWS[:-2], "97", "97.6"]
    res = double_bottom(_from_lows(lows), lookback=12)
    assert res is not None and not res.detected


def test_double_bottom_too_short() -> None:
    assert double_bottom(_from_lows(W_LOWS[1:]), lookback=12) is None


# --- tight range ---------------------------------------------------------------------------


def test_tight_range_relative_to_price() -> None:
    bars = hlc([("100.5", "99.5", "100")] * 10)  # range 1 on a 100 close: 1%
    res = tight_range(bars)
    assert res is not None and res.detected
    assert res.figures["range_pct"] == pytest.approx(1.0)
    wide = hlc([("100.5", "99.5", "100")] * 9 + [("103", "99.5", "100")])  # 3.5%
    assert not tight_range(wide).detected  # type: ignore[union-attr]
    assert tight_range(bars[:9]) is None


def test_tight_range_relative_to_atr() -> None:
    bars = hlc([("100.5", "99.5", "100")] * 10)
    at_limit = tight_range(bars, atr=D("0.5"))  # range 1 = 2.0 ATR
    assert at_limit is not None and at_limit.detected and at_limit.figures["range_atr"] == 2.0
    too_wide = tight_range(bars, atr=D("0.4"))  # 2.5 ATR
    assert too_wide is not None and not too_wide.detected


# --- double bottom against the plain definition ----------------------------------------------


def _reference_double_bottom(bars: list, lookback: int = 40, tolerance: float = 0.02,
                             min_separation: int = 5, min_rebound: float = 0.01,
                             order: int = 2) -> tuple | None:
    """The detector as first written (a slice per pair): what the faster one must equal."""
    from domain.patterns import _local_minima

    if len(bars) < lookback:
        return None
    window = bars[-lookback:]
    lows = [b.low for b in window]
    highs = [b.high for b in window]
    minima = _local_minima(lows, order)
    tol = Decimal(str(tolerance))
    rebound = Decimal(str(min_rebound))
    for b in reversed(minima):
        for a in minima:
            if b - a < max(min_separation, 2):
                break
            low_a, low_b = lows[a], lows[b]
            bottom = min(low_a, low_b)
            if bottom <= 0 or abs(low_a - low_b) / bottom > tol:
                continue
            if min(lows[a + 1 : b]) < bottom or min(lows[b:]) < bottom:
                continue
            peak = max(highs[a + 1 : b])
            if peak < max(low_a, low_b) * (1 + rebound):
                continue
            return (True, float(low_a), float(low_b), float(peak), b - a)
    return (False,)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(-40, 40), min_size=40, max_size=60), st.integers(0, 60),
       st.sampled_from([0.001, 0.005, 0.02]), st.sampled_from([0.001, 0.005, 0.01]))
def test_double_bottom_equals_the_plain_definition(steps: list[int], spread: int,
                                                   tolerance: float, rebound: float) -> None:
    cents = [10_000]
    for s in steps[1:]:
        cents.append(cents[-1] + s)
    bars = hlc([(D(c + spread) / 100, D(c) / 100, D(c + spread // 2) / 100) for c in cents])
    res = double_bottom(bars, tolerance=tolerance, min_rebound=rebound)
    ref = _reference_double_bottom(bars, tolerance=tolerance, min_rebound=rebound)
    assert res is not None and ref is not None
    event(f"detected: {ref[0]}")
    if not ref[0]:
        assert not res.detected
    else:
        f = res.figures
        assert res.detected
        assert (f["first_low"], f["second_low"], f["peak"], f["bars_apart"]) == (
            round(ref[1], 4), round(ref[2], 4), round(ref[3], 4), ref[4])
