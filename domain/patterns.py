"""Chart patterns over bars (oldest first), pure.

Each detector returns a `PatternResult`: whether the pattern is there, plus the figures that
decided it (plain floats/ints, ready to show a person and to serialise). Too-short input
returns None, like the indicators: "not enough bars" is not the same as "not detected".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from domain.indicators import HasHLC


@dataclass(frozen=True)
class PatternResult:
    name: str
    detected: bool
    figures: dict[str, float | int | bool] = field(default_factory=dict)

    def as_detail(self) -> dict[str, object]:
        return {"detected": self.detected, **self.figures}


def _f(value: Decimal, places: int = 4) -> float:
    return round(float(value), places)


def breakout(
    bars: Sequence[HasHLC], lookback: int = 19, threshold: float = 0.02
) -> PatternResult | None:
    """The last close is at least `threshold` (2%) above the highest high of the
    `lookback` (19) bars before it. Needs `lookback + 1` bars."""
    if lookback < 1 or len(bars) < lookback + 1:
        return None
    prior_high = max(b.high for b in bars[-lookback - 1 : -1])
    close = bars[-1].close
    level = prior_high * (1 + Decimal(str(threshold)))
    pct_above = (close / prior_high - 1) * 100 if prior_high > 0 else Decimal(0)
    return PatternResult(
        "breakout",
        close >= level,
        {
            "prior_high": _f(prior_high),
            "level": _f(level),
            "close": _f(close),
            "pct_above_prior_high": _f(pct_above, 3),
        },
    )


def _local_minima(lows: Sequence[Decimal], order: int) -> list[int]:
    """Indices whose low is <= every low within `order` bars either side (edges included
    with the neighbours they have, so the last bar may be a bottom that is forming now)."""
    # Each pair of bars `d` apart is compared once: the higher of the two is no minimum
    # (prices are totally ordered, so "not <=" is ">").
    n = len(lows)
    ok = [True] * n
    for d in range(1, order + 1):
        for i, (a, b) in enumerate(zip(lows, lows[d:], strict=False)):
            if b < a:
                ok[i] = False
            elif a < b:
                ok[i + d] = False
    return [j for j in range(n) if ok[j]]


def _between(lows: Sequence[Decimal], highs: Sequence[Decimal], b: int
             ) -> tuple[list[Decimal], list[Decimal]]:
    """min(lows[a + 1 : b]) and max(highs[a + 1 : b]) for every a in 0..b-2."""
    mins = [lows[0]] * (b - 1)
    maxs = [highs[0]] * (b - 1)
    lo, hi = lows[b - 1], highs[b - 1]
    for a in range(b - 2, -1, -1):
        mins[a] = lo
        maxs[a] = hi
        x = lows[a]
        if x < lo:
            lo = x
        x = highs[a]
        if x > hi:  # max keeps the first of equals; equal values are the same number
            hi = x
    return mins, maxs


def double_bottom(
    bars: Sequence[HasHLC],
    lookback: int = 40,
    tolerance: float = 0.02,
    min_separation: int = 5,
    min_rebound: float = 0.01,
    order: int = 2,
) -> PatternResult | None:
    """Two local lows (within `order` bars) in the last `lookback` bars whose prices are
    within `tolerance` (2%) of each other, at least `min_separation` bars apart, with a peak
    between them at least `min_rebound` above the higher low, no lower low between them and
    no undercut since the second. The most recent second bottom wins (then the widest pair).
    Needs `lookback` bars. `neckline_broken` says whether the last close is above the peak.
    """
    if lookback < 3 or len(bars) < lookback:
        return None
    window = bars[-lookback:]
    lows = [b.low for b in window]
    highs = [b.high for b in window]
    minima = _local_minima(lows, order)
    tol = Decimal(str(tolerance))
    rebound = Decimal(str(min_rebound))
    sep = max(min_separation, 2)
    # min(lows[i:]) for every i, and per second bottom min(lows[a+1:b]) for every a: the
    # same tests as slicing each pair, in O(1) each (the scanner runs this per symbol and
    # scan). The tests only reject a pair, so their order does not change the answer.
    since = lows[:]
    for i in range(len(since) - 2, -1, -1):
        if since[i + 1] < since[i]:
            since[i] = since[i + 1]
    for b in reversed(minima):
        low_b = lows[b]
        after = since[b]
        between: tuple[list[Decimal], list[Decimal]] | None = None
        for a in minima:
            if b - a < sep:
                break
            low_a = lows[a]
            bottom = min(low_a, low_b)
            if after < bottom:
                continue
            if bottom <= 0 or abs(low_a - low_b) / bottom > tol:
                continue
            if between is None:
                between = _between(lows, highs, b)
            if between[0][a] < bottom:
                continue
            peak = between[1][a]
            if peak < max(low_a, low_b) * (1 + rebound):
                continue
            return PatternResult(
                "double_bottom",
                True,
                {
                    "first_low": _f(low_a),
                    "second_low": _f(low_b),
                    "peak": _f(peak),
                    "low_diff_pct": _f(abs(low_a - low_b) / bottom * 100, 3),
                    "rebound_pct": _f((peak / max(low_a, low_b) - 1) * 100, 3),
                    "bars_apart": b - a,
                    "bars_since_second": len(window) - 1 - b,
                    "neckline_broken": window[-1].close > peak,
                },
            )
    return PatternResult("double_bottom", False, {"lookback": lookback})


def tight_range(
    bars: Sequence[HasHLC],
    period: int = 10,
    max_range_pct: float = 0.02,
    atr: Decimal | None = None,
    max_atr_multiple: float = 2.0,
) -> PatternResult | None:
    """The last `period` bars trade in a narrow band: (max high - min low) is at most
    `max_range_pct` of the last close and, when an ATR is given, at most
    `max_atr_multiple` ATRs. Needs `period` bars."""
    if period < 1 or len(bars) < period:
        return None
    window = bars[-period:]
    band = max(b.high for b in window) - min(b.low for b in window)
    close = window[-1].close
    if close <= 0:
        return PatternResult("tight_range", False, {"range": _f(band)})
    range_pct = band / close
    detected = range_pct <= Decimal(str(max_range_pct))
    figures: dict[str, float | int | bool] = {
        "range": _f(band),
        "range_pct": _f(range_pct * 100, 3),
        "bars": period,
    }
    if atr is not None and atr > 0:
        in_atr = band / atr
        figures["range_atr"] = _f(in_atr, 3)
        detected = detected and in_atr <= Decimal(str(max_atr_multiple))
    return PatternResult("tight_range", detected, figures)
