"""Scan scoring, pure: universe filter, component scores in [0, 1], composite, ranking.

The config models live in `config/`, which `domain` may not import, so the settings come in
as anything with the right attributes (`UniverseBounds`, `Weights` protocols); the pydantic
`Universe` and `ScoringWeights` models satisfy them.

Component scores (each in [0, 1]):
- momentum: percent change over `momentum_bars`, 0 at or below 0%, 1 at `momentum_full_pct`;
- volume: recent/baseline volume ratio, 0 at or below 1x, 1 at `volume_full_ratio`;
- technical: 0.4 RSI zone + 0.3 MACD + 0.3 best pattern (see `technical_score`);
- catalyst: from `domain.news`.
composite = weighted sum - climax penalty, clamped to [0, 1]. Ranking: composite high to
low, ties by symbol, so equal scores always rank the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from domain import indicators, patterns
from domain.events import CandidateScore
from domain.indicators import Macd
from domain.news import catalyst_score
from domain.patterns import PatternResult
from domain.values import Bar, Headline

ATR_PLACES = Decimal("0.0001")


class UniverseBounds(Protocol):
    @property
    def min_price(self) -> Decimal: ...
    @property
    def max_price(self) -> Decimal: ...
    @property
    def min_avg_daily_volume(self) -> int: ...


class Weights(Protocol):
    @property
    def catalyst(self) -> float: ...
    @property
    def momentum(self) -> float: ...
    @property
    def volume(self) -> float: ...
    @property
    def technical(self) -> float: ...


@dataclass(frozen=True)
class ScanParams:
    """Indicator periods and score scales. Not config keys: these are the strategy's
    definition, versioned with the code; change them here, with their tests."""

    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_period: int = 14
    volume_lookback: int = 20
    volume_recent: int = 5
    momentum_bars: int = 30
    momentum_full_pct: float = 3.0
    volume_full_ratio: float = 3.0
    breakout_lookback: int = 19
    breakout_pct: float = 0.02
    double_bottom_lookback: int = 40
    double_bottom_tolerance: float = 0.02
    tight_range_bars: int = 10
    tight_range_pct: float = 0.02
    tight_range_atr: float = 2.0
    adv_lookback: int = 20  # daily bars in the average daily volume
    intraday_history: int = 120  # 1Min bars kept per symbol (Wilder/EMA warm-up included)
    daily_history: int = 30  # 1Day bars kept per symbol

    @property
    def intraday_needed(self) -> int:
        """Bars for every indicator to exist (the scanner keeps at least this many)."""
        return max(
            self.rsi_period + 1,
            self.macd_slow + self.macd_signal - 1,
            self.atr_period + 1,
            self.volume_lookback + self.volume_recent,
            self.momentum_bars + 1,
            self.breakout_lookback + 1,
            self.double_bottom_lookback,
            self.tight_range_bars,
        )


# --- universe ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniverseCheck:
    passed: bool
    reason: str  # "" when passed
    price: Decimal
    avg_daily_volume: int | None


def average_daily_volume(daily_bars: Sequence[Bar], lookback: int = 20) -> int | None:
    """Mean volume of the last `lookback` daily bars (fewer if that is all there is)."""
    window = list(daily_bars)[-lookback:]
    if not window:
        return None
    return sum(b.volume for b in window) // len(window)


def universe_check(
    price: Decimal, daily_bars: Sequence[Bar], universe: UniverseBounds, lookback: int = 20
) -> UniverseCheck:
    """Price within [min_price, max_price] and average daily volume >= the minimum.

    `price` is the latest price (the scanner passes the last intraday close); the volume
    comes from the daily bars. Without daily bars the volume cannot be checked, so the
    symbol fails unless the minimum is 0."""
    adv = average_daily_volume(daily_bars, lookback)
    if price < universe.min_price:
        return UniverseCheck(False, f"price {price} < min {universe.min_price}", price, adv)
    if price > universe.max_price:
        return UniverseCheck(False, f"price {price} > max {universe.max_price}", price, adv)
    if universe.min_avg_daily_volume > 0:
        if adv is None:
            return UniverseCheck(False, "no daily bars for the volume check", price, adv)
        if adv < universe.min_avg_daily_volume:
            return UniverseCheck(
                False, f"avg daily volume {adv} < min {universe.min_avg_daily_volume}",
                price, adv,
            )
    return UniverseCheck(True, "", price, adv)


# --- component scores ----------------------------------------------------------------------


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def momentum_score(momentum_pct: float | None, full_pct: float = 3.0) -> float:
    """0 at or below 0% (long-only: falling prices are no setup), linear to 1 at full_pct."""
    if momentum_pct is None:
        return 0.0
    return _clamp(momentum_pct / full_pct)


def volume_score(ratio: float | None, full_ratio: float = 3.0) -> float:
    """0 at or below 1x the baseline, linear to 1 at full_ratio."""
    if ratio is None:
        return 0.0
    return _clamp((ratio - 1.0) / (full_ratio - 1.0))


def rsi_score(value: float | None) -> float:
    """The momentum zone scores best: 0 at <= 30, up to 1 at 55, 1 through 70, down to 0 at
    85 (overbought: late to the move)."""
    if value is None:
        return 0.0
    if value <= 30:
        return 0.0
    if value < 55:
        return (value - 30) / 25
    if value <= 70:
        return 1.0
    if value < 85:
        return (85 - value) / 15
    return 0.0


def macd_score(m: Macd | None) -> float:
    """Half for the histogram above zero (line above signal), half for the line above zero
    (fast average above slow)."""
    if m is None:
        return 0.0
    return 0.5 * (m.histogram > 0) + 0.5 * (m.line > 0)


PATTERN_WEIGHTS = {"breakout": 1.0, "double_bottom": 0.8, "tight_range": 0.5}


def pattern_score(found: Iterable[PatternResult | None]) -> float:
    """The weight of the strongest detected pattern (0 with none)."""
    return max(
        (PATTERN_WEIGHTS.get(p.name, 0.0) for p in found if p is not None and p.detected),
        default=0.0,
    )


def technical_score(
    rsi: float | None, macd: Macd | None, found: Iterable[PatternResult | None]
) -> float:
    """0.4 RSI zone + 0.3 MACD + 0.3 patterns; a missing indicator contributes 0."""
    return 0.4 * rsi_score(rsi) + 0.3 * macd_score(macd) + 0.3 * pattern_score(found)


def climax_penalty(ratio: float | None, climax_ratio: float, penalty: float) -> float:
    """Climax volume (ratio >= climax_ratio) often marks the end of a move: subtract."""
    return penalty if ratio is not None and ratio >= climax_ratio else 0.0


def composite_score(
    catalyst: float, momentum: float, volume: float, technical: float, weights: Weights,
    penalty: float = 0.0,
) -> float:
    raw = (
        weights.catalyst * catalyst + weights.momentum * momentum
        + weights.volume * volume + weights.technical * technical
    )
    return _clamp(raw - penalty)


# --- one symbol, then the ranking ----------------------------------------------------------


@dataclass(frozen=True)
class SymbolScore:
    symbol: str
    price: Decimal
    atr: Decimal
    catalyst: float
    momentum: float
    volume: float
    technical: float
    penalty: float
    composite: float
    details: dict[str, Any] = field(default_factory=dict)


def _r(x: float | None, places: int = 4) -> float | None:
    return None if x is None else round(x, places)


class BarColumns(NamedTuple):
    """The indicators' inputs, oldest first: every bar's close and volume, and
    `indicators.bar_moves` (true range, close gain, close loss) of every bar after the
    first against the one before it."""

    closes: Sequence[Decimal]
    volumes: Sequence[int]
    ranges: Sequence[Decimal]
    gains: Sequence[Decimal]
    losses: Sequence[Decimal]

    @classmethod
    def of(cls, bars: Sequence[Bar]) -> BarColumns:
        moves = [indicators.bar_moves(bars[i - 1], bars[i]) for i in range(1, len(bars))]
        ranges, gains, losses = zip(*moves, strict=True) if moves else ((), (), ())
        return cls([b.close for b in bars], [b.volume for b in bars], ranges, gains, losses)


def score_symbol(
    symbol: str,
    bars: Sequence[Bar],
    headlines: Iterable[Headline],
    as_of: datetime,
    *,
    weights: Weights,
    climax_volume_ratio: float,
    climax_penalty_value: float,
    news_half_life_hours: float,
    params: ScanParams = ScanParams(),
    columns: BarColumns | None = None,
) -> SymbolScore | None:
    """Every component for one symbol from its intraday bars (oldest first) and headlines.

    `columns`: the bars' `BarColumns`, from a caller that keeps them per bar (computed here
    otherwise; the same values).

    None when there are too few bars for an ATR: without it no stop can be placed, so the
    symbol is no candidate. Other missing indicators score 0 and show as None in details."""
    closes, volumes, ranges, gains, losses = columns or BarColumns.of(bars)
    exact_atr = indicators.atr_from_ranges(ranges, params.atr_period)
    if exact_atr is None:
        return None
    # Four places: exact enough for a stop in cents, short enough to read in the event.
    atr = exact_atr.quantize(ATR_PLACES)
    if atr <= 0:
        return None
    p = params
    rsi = indicators.rsi_from_moves(gains, losses, p.rsi_period)
    macd = indicators.macd(closes, p.macd_fast, p.macd_slow, p.macd_signal)
    vol_ratio = indicators.volume_ratio(volumes, p.volume_lookback, p.volume_recent)
    mom = indicators.momentum(closes, p.momentum_bars)
    found = {
        "breakout": patterns.breakout(bars, p.breakout_lookback, p.breakout_pct),
        "double_bottom": patterns.double_bottom(
            bars, p.double_bottom_lookback, p.double_bottom_tolerance
        ),
        "tight_range": patterns.tight_range(
            bars, p.tight_range_bars, p.tight_range_pct, atr, p.tight_range_atr
        ),
    }
    news = catalyst_score(headlines, as_of, news_half_life_hours)

    cat_s = news.score
    mom_s = momentum_score(mom, p.momentum_full_pct)
    vol_s = volume_score(vol_ratio, p.volume_full_ratio)
    tech_s = technical_score(rsi, macd, found.values())
    penalty = climax_penalty(vol_ratio, climax_volume_ratio, climax_penalty_value)
    composite = composite_score(cat_s, mom_s, vol_s, tech_s, weights, penalty)

    details: dict[str, Any] = {
        "rsi": _r(rsi, 2),
        "macd": None if macd is None else {
            "line": _r(float(macd.line)), "signal": _r(float(macd.signal)),
            "histogram": _r(float(macd.histogram)),
        },
        "atr": str(atr),
        "volume_ratio": _r(vol_ratio, 3),
        "momentum_pct": _r(mom, 3),
        "patterns": {
            name: (None if res is None else res.as_detail()) for name, res in found.items()
        },
        "patterns_detected": [n for n, res in found.items() if res is not None and res.detected],
        "catalysts": list(news.catalysts),
        "news_net": _r(news.net),
        "headlines": [h.as_detail() for h in news.headlines[:3]],
        "climax_volume": penalty > 0,
        "bars": len(bars),
    }
    return SymbolScore(
        symbol=symbol, price=bars[-1].close, atr=atr,
        catalyst=round(cat_s, 6), momentum=round(mom_s, 6), volume=round(vol_s, 6),
        technical=round(tech_s, 6), penalty=penalty, composite=round(composite, 6),
        details=details,
    )


def rank_candidates(
    scores: Iterable[SymbolScore], extra_details: dict[str, dict[str, Any]] | None = None
) -> tuple[CandidateScore, ...]:
    """Composite high to low, ties broken by symbol; ranks start at 1."""
    ordered = sorted(scores, key=lambda s: (-s.composite, s.symbol))
    extra_details = extra_details or {}
    return tuple(
        CandidateScore(
            symbol=s.symbol, rank=i, price=s.price, catalyst=s.catalyst, momentum=s.momentum,
            volume=s.volume, technical=s.technical, penalty=s.penalty, composite=s.composite,
            atr=s.atr, details={**s.details, **extra_details.get(s.symbol, {})},
        )
        for i, s in enumerate(ordered, start=1)
    )
