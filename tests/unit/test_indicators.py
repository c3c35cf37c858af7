"""Indicators on hand-made series; every expected value is worked out in the comments."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.indicators import atr, ema_series, macd, momentum, rsi, true_ranges, volume_ratio
from tests.unit.scan_builders import D, hlc


def approx_dec(value: Decimal | None, expected: float, tol: float = 1e-9) -> bool:
    return value is not None and abs(float(value) - expected) < tol


# --- RSI -----------------------------------------------------------------------------------


def test_rsi_first_value_is_the_simple_average_of_gains_over_losses() -> None:
    # 14 changes: 10 x +1, 4 x -1 -> avg gain 10/14, avg loss 4/14, RS 2.5,
    # RSI = 100 - 100 / 3.5 = 71.428571...
    changes = [1, 1, -1, 1, 1, 1, -1, 1, 1, -1, 1, 1, -1, 1]
    series = [D(100)]
    for c in changes:
        series.append(series[-1] + c)
    assert rsi(series) == pytest.approx(100 - 100 / 3.5)


def test_rsi_then_smooths_wilder_style() -> None:
    # Same 14 changes, then +2: gain = (10/14 * 13 + 2) / 14 = 158/196,
    # loss = (4/14 * 13 + 0) / 14 = 52/196; RSI = 100 - 100 / (1 + 158/52) = 75.238095...
    changes = [1, 1, -1, 1, 1, 1, -1, 1, 1, -1, 1, 1, -1, 1, 2]
    series = [D(100)]
    for c in changes:
        series.append(series[-1] + c)
    assert rsi(series) == pytest.approx(100 - 100 / (1 + 158 / 52))


def test_rsi_short_period_by_hand() -> None:
    # changes +1, -0.5, +1.5 -> gain 2.5/3, loss 0.5/3 -> RS 5 -> RSI 83.333...
    assert rsi([D(10), D(11), D("10.5"), D(12)], period=3) == pytest.approx(100 - 100 / 6)


def test_rsi_edges() -> None:
    assert rsi([D(i) for i in range(14)]) is None  # 14 closes: one short
    assert rsi([D(i) for i in range(15)]) == 100.0  # only gains
    assert rsi([D(5)] * 15) == 50.0  # no movement at all
    assert rsi([D(20 - i) for i in range(15)]) == 0.0  # only losses


# --- MACD ----------------------------------------------------------------------------------


def test_ema_is_seeded_with_the_sma() -> None:
    # EMA(2), k = 2/3: seed mean(10, 11) = 10.5; then 10.5 + 2/3 * (12 - 10.5) = 11.5
    e = ema_series([D(10), D(11), D(12)], 2)
    assert [float(x) for x in e] == pytest.approx([10.5, 11.5])
    assert ema_series([D(1)], 2) == []


def test_macd_small_periods_by_hand() -> None:
    # fast 2 (k 2/3), slow 3 (k 1/2), signal 2 (k 2/3) over 10, 11, 12, 14, 13:
    # EMA2: 10.5, 11.5, 79/6, 235/18     EMA3: 11, 12.5, 12.75
    # line (from index 2): 0.5, 2/3, 11/36
    # signal: seed mean(0.5, 2/3) = 7/12, then 7/12 + 2/3 * (11/36 - 7/12) = 43/108
    # histogram: 11/36 - 43/108 = -10/108; the previous one was 2/3 - 7/12 = 1/12
    m = macd([D(10), D(11), D(12), D(14), D(13)], fast=2, slow=3, signal=2)
    assert m is not None
    assert approx_dec(m.line, 11 / 36)
    assert approx_dec(m.signal, 43 / 108)
    assert approx_dec(m.histogram, -10 / 108)
    assert approx_dec(m.prev_histogram, 1 / 12)


def test_macd_needs_slow_plus_signal_minus_one_closes() -> None:
    assert macd([D(10), D(11), D(12)], fast=2, slow=3, signal=2) is None
    assert macd([D(100)] * 33) is None
    flat = macd([D(100)] * 34)
    assert flat is not None and flat.line == 0 and flat.histogram == 0


def test_macd_of_a_rising_series_is_positive() -> None:
    m = macd([D(100 + i) for i in range(40)])
    assert m is not None and m.line > 0 and isinstance(m.line, Decimal)


def test_macd_rejects_nonsense_periods() -> None:
    with pytest.raises(ValueError):
        macd([D(1)] * 50, fast=26, slow=12)


# --- ATR -----------------------------------------------------------------------------------

ATR_ROWS = [
    ("10.5", "9.5", "10"),
    ("11", "10", "10.8"),  # TR max(1, |11-10|, |10-10|) = 1
    ("11.5", "10.5", "11"),  # TR max(1, 0.7, 0.3) = 1
    ("13", "11.5", "12.5"),  # gap up: TR max(1.5, |13-11| = 2, 0.5) = 2
    ("12.6", "9.5", "10"),  # TR max(3.1, 0.1, 3.0) = 3.1
]


def test_true_range_uses_the_previous_close() -> None:
    assert true_ranges(hlc(ATR_ROWS)) == [D(1), D(1), D(2), D("3.1")]
    # gap down: prev close 12.5, bar 12/11 -> max(1, 0.5, 1.5) = 1.5
    assert true_ranges(hlc([("13", "12", "12.5"), ("12", "11", "11.5")])) == [D("1.5")]


def test_atr_wilder_by_hand() -> None:
    bars = hlc(ATR_ROWS)
    # first ATR(3) = (1 + 1 + 2) / 3 = 4/3; then (4/3 * 2 + 3.1) / 3 = 1.92222...
    assert approx_dec(atr(bars[:4], period=3), 4 / 3)
    assert approx_dec(atr(bars, period=3), (4 / 3 * 2 + 3.1) / 3)
    assert atr(bars[:3], period=3) is None


def test_atr_default_period_needs_15_bars() -> None:
    rows = [("101", "99", "100")] * 15
    assert atr(hlc(rows[:14])) is None
    assert atr(hlc(rows)) == D(2)


# --- volume ratio, momentum ----------------------------------------------------------------


def test_volume_ratio() -> None:
    assert volume_ratio([100] * 20 + [300]) == pytest.approx(3.0)
    # recent = 2: mean(200, 400) = 300 over the 20 bars before them (100) -> 3.0
    assert volume_ratio([999] + [100] * 20 + [200, 400], recent=2) == pytest.approx(3.0)
    assert volume_ratio([100] * 20) is None  # too short
    assert volume_ratio([0] * 20 + [50]) is None  # no baseline to compare with


def test_momentum_percent_change() -> None:
    series = [D(100), D(101), D(102), D(105)]
    assert momentum(series, bars=3) == pytest.approx(5.0)
    assert momentum(series, bars=2) == pytest.approx((105 / 101 - 1) * 100)
    assert momentum(series, bars=4) is None
    assert isinstance(momentum(series, bars=1), float)
