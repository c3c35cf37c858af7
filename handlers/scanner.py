"""Scanner: market data in, ranked candidates out.

State (rebuilt from the log): per symbol, the last `intraday_history` 1Min bars, the last
`daily_history` 1Day bars and the last `MAX_HEADLINES` headlines, all in bounded
containers. On `ScanRequested` it scores every symbol it has intraday bars for and emits one
`ScanCompleted` whose candidates carry every component and the figures behind them.

Only complete bars count: a bar is used when `timestamp + its duration <= scan time`, so a
replay never sees a bar (or a daily volume) the live scan could not have seen. A symbol whose
last complete 1Min bar is older than `max_bar_age` (halted, not trading, stale feed) is no
candidate: its price is not a price one could trade at.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any, ClassVar

from domain.events import BarReceived, Event, NewsReceived, ScanCompleted, ScanRequested
from domain.indicators import bar_moves
from domain.scoring import (
    BarColumns,
    ScanParams,
    SymbolScore,
    rank_candidates,
    score_symbol,
    universe_check,
)
from domain.values import Bar, Headline
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings

INTRADAY = "1Min"
DAILY = "1Day"
BAR_DURATION = {INTRADAY: timedelta(minutes=1), DAILY: timedelta(days=1)}
MAX_HEADLINES = 50


APPENDED, REPLACED, REBUILT = 0, 1, 2


def _insert(bars: deque[Bar], bar: Bar) -> int:
    """Keep bars ordered by timestamp; a bar with a known timestamp replaces the old one
    (Alpaca re-sends corrected bars). Returns what it did to the deque."""
    if not bars or bar.timestamp > bars[-1].timestamp:
        bars.append(bar)
        return APPENDED
    if bar.timestamp == bars[-1].timestamp:
        bars[-1] = bar
        return REPLACED
    # late or corrected older bar: rare, so a rebuild is fine
    kept = [b for b in bars if b.timestamp != bar.timestamp] + [bar]
    kept.sort(key=lambda b: b.timestamp)
    bars.clear()
    bars.extend(kept[-(bars.maxlen or len(kept)) :])
    return REBUILT


# The move of the first bar kept: it has no bar before it, and no window uses its move.
_NO_MOVE = (Decimal(0), Decimal(0), Decimal(0))
# Per bar: (close, volume, true range, close gain, close loss), the last three against the
# bar before it (indicators.bar_moves).
_Column = tuple[Decimal, int, Decimal, Decimal, Decimal]


def _column(prev: Bar | None, bar: Bar) -> _Column:
    return (bar.close, bar.volume, *(bar_moves(prev, bar) if prev is not None else _NO_MOVE))


class _SymbolState:
    __slots__ = ("intraday", "columns", "daily", "news")

    def __init__(self, params: ScanParams) -> None:
        keep = max(params.intraday_history, params.intraday_needed)
        self.intraday: deque[Bar] = deque(maxlen=keep)
        # columns[i] = _column(intraday[i - 1], intraday[i]): the indicators' inputs, computed
        # once per bar rather than over the whole window at every scan (the same values).
        self.columns: deque[_Column] = deque(maxlen=keep)
        self.daily: deque[Bar] = deque(maxlen=max(params.daily_history, params.adv_lookback))
        self.news: OrderedDict[str, Headline] = OrderedDict()


class Scanner(Handler):
    name: ClassVar[str] = "scanner"
    emits: ClassVar[frozenset[str]] = frozenset({"ScanCompleted"})
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.md.bar.>",
        "catalyst.md.news.>",
        "catalyst.session.scan_requested",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset(
        {"BarReceived", "NewsReceived", "ScanRequested"}
    )

    def __init__(
        self, params: ScanParams | None = None, max_bar_age: timedelta = timedelta(minutes=10)
    ) -> None:
        super().__init__()
        self.params = params or ScanParams()
        self.max_bar_age = max_bar_age
        self.symbols: dict[str, _SymbolState] = {}

    def _state(self, symbol: str) -> _SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            st = self.symbols[symbol] = _SymbolState(self.params)
        return st

    # --- evolve ----------------------------------------------------------------------------

    def evolve(self, event: Event) -> None:
        if isinstance(event, BarReceived):
            tf = event.bar.timeframe
            if tf == INTRADAY:
                st = self._state(event.symbol)
                bars, columns = st.intraday, st.columns
                done = _insert(bars, event.bar)
                if done != REBUILT:
                    col = _column(bars[-2] if len(bars) > 1 else None, bars[-1])
                    if done == APPENDED:
                        columns.append(col)  # drops the oldest with its bar when full
                    else:
                        columns[-1] = col
                else:
                    columns.clear()
                    columns.extend(_column(bars[i - 1] if i else None, bars[i])
                                   for i in range(len(bars)))
            elif tf == DAILY:
                _insert(self._state(event.symbol).daily, event.bar)
        elif isinstance(event, NewsReceived):
            news = self._state(event.symbol).news
            news.pop(event.headline.id, None)  # an update moves to the newest position
            news[event.headline.id] = event.headline
            while len(news) > MAX_HEADLINES:
                news.popitem(last=False)

    # --- decide ----------------------------------------------------------------------------

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        if not isinstance(event, ScanRequested):
            return []
        wf = settings.workflow
        as_of = event.occurred_at
        scores: list[SymbolScore] = []
        universe_details: dict[str, dict[str, Any]] = {}
        passed = 0
        for symbol in sorted(self.symbols):
            st = self.symbols[symbol]
            bars = _complete(st.intraday, INTRADAY, as_of)
            if not bars or as_of - bars[-1].timestamp > self.max_bar_age + BAR_DURATION[INTRADAY]:
                continue
            daily = _complete(st.daily, DAILY, as_of)
            check = universe_check(bars[-1].close, daily, wf.universe, self.params.adv_lookback)
            if not check.passed:
                continue
            passed += 1
            scored = score_symbol(
                symbol, bars, st.news.values(), as_of,
                weights=wf.weights,
                climax_volume_ratio=wf.climax_volume_ratio,
                climax_penalty_value=wf.climax_penalty,
                news_half_life_hours=wf.news_half_life_hours,
                params=self.params,
                columns=_columns(st.columns, len(bars)),
            )
            if scored is None:
                continue
            scores.append(scored)
            universe_details[symbol] = {
                "universe": {"price": str(check.price), "avg_daily_volume": check.avg_daily_volume}
            }
        return [
            ScanCompleted.caused_by(
                event, 0, self.name,
                session_id=event.session_id,
                scan_number=event.scan_number,
                universe_size=passed,
                candidates=rank_candidates(scores, universe_details),
            )
        ]


def _columns(columns: deque[_Column], n: int) -> BarColumns:
    """The BarColumns of the first `n` bars kept."""
    closes, volumes, ranges, gains, losses = zip(*islice(columns, n), strict=True)
    return BarColumns(closes, volumes, ranges[1:], gains[1:], losses[1:])


def _complete(bars: deque[Bar], timeframe: str, as_of: datetime) -> list[Bar]:
    """The bars that had closed by `as_of` (`timestamp + duration <= as_of`)."""
    cutoff = as_of - BAR_DURATION[timeframe]
    # `_insert` keeps the bars in timestamp order, so the complete ones are a prefix and
    # only the newest few need looking at.
    n = len(bars)
    while n and bars[n - 1].timestamp > cutoff:
        n -= 1
    out = list(bars)
    del out[n:]
    return out
