"""Daily P&L per New York session date, realized + unrealized, fees included.

- The session date of an event is the America/New_York calendar date of its UTC
  `occurred_at`. An event dated before the current session date (late delivery) counts
  toward the current date: the projection never goes back a day.
- Positions, fills (deduplicated by order and fill id), marks, realized P&L and fees per
  date, and the carry-over below are the shared position book's (domain/book.py); this
  projection adds the running unrealized sum, the cents, the low and when to emit.
- Realized: price P&L of closing fills under average cost (domain/pnl.py).
- Unrealized: each open position at its latest mark, which is the latest `BarReceived`
  close or fill price for the symbol, whichever came last.
- Fees: every fill's fee on the date. `realized` in `DailyPnLChanged` is net of them and
  `total = realized + unrealized`; `fees` repeats the day's fees for display.
- Carry-over (our choice): a position still open when a new session date begins enters
  the new date as if bought/sold at the previous date's last mark. The new date's
  unrealized and realized are measured from that mark, so each date shows only what
  happened on it, a loss is never counted on two dates, and the daily totals add up to the
  lifetime P&L. (The positions projection keeps the true lifetime average entry.)
- Figures in the emitted event are rounded to cents; `DailyPnLChanged` is emitted whenever
  the rounded total differs from the last one emitted for the date (a new date starts
  from 0). The intraday low is the lowest rounded total on the date, starting at 0.
- Hot path: every bar passes through here. A bar for a symbol without a position costs a
  date-bounds comparison and a dict lookup; nothing else. On a date already rolled it
  changes nothing at all, so a verification need not even decode it (`ignores`).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from domain.book import PositionBook
from domain.events import BarReceived, DailyPnLChanged, Event, OrderFilled, OrderPartiallyFilled
from domain.pnl import ZERO, SessionDateCache
from domain.values import to_cents
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings

_EMITTED_DATES_KEPT = 8


class DailyPnLProjection(Handler):
    name: ClassVar[str] = "daily_pnl"
    emits: ClassVar[frozenset[str]] = frozenset({"DailyPnLChanged"})
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.order.filled", "catalyst.order.partially_filled", "catalyst.md.bar.>",
        "catalyst.pnl.daily_changed",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset(
        {"OrderFilled", "OrderPartiallyFilled", "BarReceived", "DailyPnLChanged"}
    )

    def __init__(self) -> None:
        super().__init__()
        self._dates = SessionDateCache()
        self._date: date | None = None
        # Positions (day basis), marks, realized and fees per date: the shared book.
        self._book = PositionBook()
        # Open positions only: their unrealized P&L on the current date.
        self._unreal: dict[str, Decimal] = {}
        self._unreal_sum = ZERO
        self._total_c = ZERO  # realized - fees + unrealized, in cents
        self._low = ZERO
        self._emitted: dict[date, Decimal] = {}  # last total emitted per date (from the log)

    # --- state -----------------------------------------------------------------------------

    def evolve(self, event: Event) -> None:
        if isinstance(event, BarReceived):
            if event.bar.timeframe != "1Min":
                # Daily history (republished at every start) is not a price for today.
                return
            self._on_date(event)
            old = self._unreal.get(event.symbol)
            if old is None:  # no position: the common case, O(1)
                return
            mark = event.bar.close
            book = self._book
            book.mark(event.symbol, mark)  # (the date is rolled above)
            self._set_unrealized(event.symbol, book.day_position(event.symbol).unrealized(mark),
                                 old)
            self._refresh_total()
        elif isinstance(event, OrderFilled | OrderPartiallyFilled):
            if self._book.seen(event):
                return
            self._on_date(event)
            self._on_fill(event)
            self._refresh_total()
        elif isinstance(event, DailyPnLChanged):
            self._emitted[event.session_date] = event.total
            if len(self._emitted) > _EMITTED_DATES_KEPT:
                del self._emitted[min(self._emitted)]

    def _on_date(self, event: Event) -> None:
        d = self._dates.date_of(event.occurred_at)
        if d == self._date:
            return
        if self._date is None:
            self._date = d
        elif d > self._date:
            self._roll(d, event.occurred_at)

    def _roll(self, new_date: date, at: datetime) -> None:
        """Start a new date: open positions carry over at their last mark (see module doc)."""
        self._book.roll_to(at)
        for symbol in self._unreal:
            self._unreal[symbol] = ZERO
        self._date = new_date
        self._unreal_sum = ZERO
        self._total_c = self._low = ZERO

    def _on_fill(self, event: OrderFilled | OrderPartiallyFilled) -> None:
        symbol = event.symbol
        result = self._book.apply(event)
        assert result is not None  # `seen` was asked first
        pos = result.position
        old = self._unreal.get(symbol, ZERO)
        if pos.is_flat:
            self._unreal.pop(symbol, None)
            self._unreal_sum -= old
        else:
            self._set_unrealized(symbol, pos.unrealized(event.price), old)

    def _set_unrealized(self, symbol: str, value: Decimal, old: Decimal) -> None:
        self._unreal[symbol] = value
        self._unreal_sum += value - old

    def _realized_net(self) -> Decimal:
        return self._book.realized(self._date) if self._date is not None else ZERO

    def _refresh_total(self) -> None:
        total = to_cents(self._realized_net()) + to_cents(self._unreal_sum)
        self._total_c = total
        if total < self._low:
            self._low = total

    def ignores(self, type_name: str, occurred_at: datetime, symbol: str | None,
                settings: Settings) -> bool:
        # A bar of a symbol without a position, on the current date (or an earlier one,
        # which never goes back a day): `evolve` finds no date to roll and no mark to move,
        # `decide` finds no position. The first bar of a new date is not ignored: it may
        # roll the date (a 1Min bar does, a 1Day one does not; only the payload says which).
        return (type_name == "BarReceived" and symbol not in self._unreal
                and self._date is not None
                and self._dates.date_of(occurred_at) <= self._date)

    # --- decision --------------------------------------------------------------------------

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, BarReceived):
            if event.bar.timeframe != "1Min" or event.symbol not in self._unreal:
                return []
        elif not isinstance(event, OrderFilled | OrderPartiallyFilled):
            return []
        if self._date is None or self._total_c == self._emitted.get(self._date, ZERO):
            return []
        realized = to_cents(self._realized_net())
        return [DailyPnLChanged.caused_by(
            event, 0, self.name,
            session_date=self._date,
            realized=realized,
            unrealized=self._total_c - realized,
            total=self._total_c,
            fees=to_cents(self._book.fees(self._date)),
            intraday_low=self._low,
            by_symbol=self._by_symbol(),
            open_positions=len(self._unreal),
        )]

    def _by_symbol(self) -> dict[str, str]:
        return {
            s: str(to_cents(p.realized - p.fees + self._unreal.get(s, ZERO)))
            for s, p in sorted(self._book.day_positions().items())
        }

    # --- queries ---------------------------------------------------------------------------

    @property
    def session_date(self) -> date | None:
        return self._date

    @property
    def total(self) -> Decimal:
        return self._total_c

    def snapshot(self) -> dict[str, Any]:
        realized = to_cents(self._realized_net())
        fees = self._book.fees(self._date) if self._date is not None else ZERO
        return {
            "session_date": self._date.isoformat() if self._date else None,
            "realized": str(realized),
            "unrealized": str(self._total_c - realized),
            "total": str(self._total_c),
            "fees": str(to_cents(fees)),
            "intraday_low": str(self._low),
            "by_symbol": self._by_symbol(),
            "open_positions": len(self._unreal),
        }
