"""Technical indicators, pure functions over bars (oldest first).

Types in and out:
- inputs are `Decimal` prices (closes, or `Bar`s for ATR) and `int` volumes;
- price-valued outputs are `Decimal` in price units: ATR and the MACD line/signal/histogram;
- dimensionless outputs are `float`: RSI (0..100), volume ratio, momentum (percent).

Every function returns None when the input is too short to compute the value over a full
window: no padding, no partial windows, so a thin history never looks like a signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

ZERO = Decimal(0)


class HasHLC(Protocol):
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...


def _wilder(values: Sequence[Decimal], period: int) -> Decimal:
    """Wilder's smoothing: seed with the simple mean of the first `period` values, then
    avg = (avg * (period - 1) + value) / period for every later value."""
    avg = sum(values[:period], ZERO) / period
    # Decimal operands: int ones are converted (exactly) on every operation.
    n, n_1 = Decimal(period), Decimal(period - 1)
    for v in values[period:]:
        avg = (avg * n_1 + v) / n
    return avg


def ema_series(values: Sequence[Decimal], period: int) -> list[Decimal]:
    """Exponential moving average seeded with the SMA of the first `period` values.

    Returns one value per input from index `period - 1` on (empty when too short);
    k = 2 / (period + 1).
    """
    if period < 1 or len(values) < period:
        return []
    k = Decimal(2) / (period + 1)
    e = sum(values[:period], ZERO) / period
    out = [e]
    append = out.append
    for v in values[period:]:
        e = e + k * (v - e)
        append(e)
    return out


def rsi(closes: Sequence[Decimal], period: int = 14) -> float | None:
    """Wilder's RSI (0..100, float). Needs `period + 1` closes.

    With no losses in the window RSI is 100 (50 when the price did not move at all).
    """
    if period < 1 or len(closes) < period + 1:
        return None
    moves = [close_move(closes[i - 1], closes[i]) for i in range(1, len(closes))]
    return rsi_from_moves([g for g, _ in moves], [lo for _, lo in moves], period)


def close_move(prev: Decimal, close: Decimal) -> tuple[Decimal, Decimal]:
    """(gain, loss) of a close against the one before: max(change, 0), max(-change, 0).
    `ZERO if ZERO > x else x` is max(x, ZERO) exactly (max keeps the first of equals), so
    the values, and what Wilder makes of them, are the same to the digit."""
    change = close - prev
    gain = ZERO if ZERO > change else change
    change = -change
    return gain, ZERO if ZERO > change else change


def rsi_from_moves(gains: Sequence[Decimal], losses: Sequence[Decimal],
                   period: int = 14) -> float | None:
    """RSI from each close's gain and loss against the close before it (what `rsi` computes
    first; `bar_moves` gives them one bar at a time, for a caller that keeps them)."""
    if period < 1 or len(gains) < period:
        return None
    avg_gain = _wilder(gains, period)
    avg_loss = _wilder(losses, period)
    if avg_loss == 0:
        return 100.0 if avg_gain > 0 else 50.0
    rs = avg_gain / avg_loss
    return float(100 - 100 / (1 + rs))


@dataclass(frozen=True)
class Macd:
    """MACD in price units (Decimal). `prev_histogram` lets a caller see a fresh cross."""

    line: Decimal
    signal: Decimal
    histogram: Decimal
    prev_histogram: Decimal | None


def macd(
    closes: Sequence[Decimal], fast: int = 12, slow: int = 26, signal: int = 9
) -> Macd | None:
    """MACD(fast, slow, signal): line = EMA(fast) - EMA(slow), signal = EMA(signal) of the
    line, histogram = line - signal. Needs `slow + signal - 1` closes (34 by default)."""
    if not 0 < fast < slow or signal < 1:
        raise ValueError("MACD needs 0 < fast < slow and signal >= 1")
    if len(closes) < slow + signal - 1:
        return None
    # Both EMAs in one pass, the same arithmetic as ema_series: the fast one starts at index
    # fast-1, the slow one at slow-1, and the line from there.
    kf = Decimal(2) / (fast + 1)
    ks = Decimal(2) / (slow + 1)
    ef = sum(closes[:fast], ZERO) / fast
    for v in closes[fast:slow]:
        ef = ef + kf * (v - ef)
    es = sum(closes[:slow], ZERO) / slow
    line = [ef - es]
    for v in closes[slow:]:
        ef = ef + kf * (v - ef)
        es = es + ks * (v - es)
        line.append(ef - es)
    sig = ema_series(line, signal)
    hist = line[-1] - sig[-1]
    prev = line[-2] - sig[-2] if len(sig) >= 2 else None
    return Macd(line=line[-1], signal=sig[-1], histogram=hist, prev_histogram=prev)


def bar_moves(prev: HasHLC, bar: HasHLC) -> tuple[Decimal, Decimal, Decimal]:
    """One bar against the one before it: (true range, close gain, close loss), the very
    values `true_ranges` and `rsi` compute for it (a scanner keeps them per bar instead of
    recomputing them over the window at every scan)."""
    prev_close, high, low = prev.close, bar.high, bar.low
    # max(a, b, c) spelled out (it keeps the first of equals): same value, same digits.
    tr = high - low
    x = abs(high - prev_close)
    if x > tr:
        tr = x
    x = abs(low - prev_close)
    if x > tr:
        tr = x
    return (tr, *close_move(prev_close, bar.close))


def true_ranges(bars: Sequence[HasHLC]) -> list[Decimal]:
    """True range of every bar after the first: max(high-low, |high-prev close|,
    |low-prev close|). The first bar has no previous close, so it has no true range."""
    return [bar_moves(bars[i - 1], bars[i])[0] for i in range(1, len(bars))]


def atr(bars: Sequence[HasHLC], period: int = 14) -> Decimal | None:
    """Wilder's Average True Range (Decimal, price units). Needs `period + 1` bars."""
    if period < 1 or len(bars) < period + 1:
        return None
    return _wilder(true_ranges(bars), period)


def atr_from_ranges(ranges: Sequence[Decimal], period: int = 14) -> Decimal | None:
    """`atr` from the bars' true ranges (every bar after the first)."""
    if period < 1 or len(ranges) < period:
        return None
    return _wilder(ranges, period)


def volume_ratio(volumes: Sequence[int], lookback: int = 20, recent: int = 1) -> float | None:
    """Mean volume of the last `recent` bars over the mean of the `lookback` bars before
    them (float). Needs `lookback + recent` bars; None when the baseline volume is zero."""
    if lookback < 1 or recent < 1 or len(volumes) < lookback + recent:
        return None
    base = volumes[-(lookback + recent) : -recent]
    now = volumes[-recent:]
    base_avg = sum(base) / lookback
    if base_avg <= 0:
        return None
    return (sum(now) / recent) / base_avg


def momentum(closes: Sequence[Decimal], bars: int = 10) -> float | None:
    """Percent change of the last close over the close `bars` bars earlier (float, 5.0 means
    +5%). Needs `bars + 1` closes; None when the base price is not positive."""
    if bars < 1 or len(closes) < bars + 1:
        return None
    base = closes[-1 - bars]
    if base <= 0:
        return None
    return float((closes[-1] / base - 1) * 100)
