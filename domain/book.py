"""The position book: one account of positions and P&L for every handler that needs them.

Before it, positions and P&L were computed in about seven places with different rules (issue
14). The book is pure (no clock, no I/O); its owner feeds it fills and, if it has them, marks:

* `apply(fill)`: a fill under average cost (domain.pnl.apply_fill). A fill seen before (same
  order id and fill id, whatever its event id: a reconnect or a REST backfill may translate it
  again) is dropped and `apply` returns None.
* `mark(symbol, price, at)`: the latest price of a held symbol (a 1-minute bar's close).
  Fills mark their symbol at the fill price.
* Session dates (domain.calendar.session_date): realized P&L and fees are kept per New York
  session date. An event dated before the current date counts toward the current date (the
  book never goes back a day). A position still open when a new date begins enters it at the
  previous date's last mark (`Position.rebased`), so each date measures only its own moves,
  as the daily P&L projection does; `day_position` is that basis, `position` keeps the true
  lifetime average entry (what the broker shows).

Owners that see no bars (the risk guard) have marks from fills only: for a position carried
overnight their day basis is its last fill price, not the last bar's close.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from domain.pnl import ZERO, FillResult, Position, SessionDateCache, apply_fill
from domain.values import Side

_FILL_KEYS_LIMIT = 100_000  # remembered fills, oldest forgotten first (a redelivery is recent)


class Fill(Protocol):
    """What the book reads of an OrderFilled / OrderPartiallyFilled."""

    @property
    def order_id(self) -> str: ...
    @property
    def fill_id(self) -> str: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def qty(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def fee(self) -> Decimal: ...
    @property
    def occurred_at(self) -> datetime: ...


@dataclass(slots=True)
class _Entry:
    position: Position  # lifetime average cost
    day: Position  # the current session date's basis (rebased at the date's start)
    mark: Decimal
    opened_at: datetime | None


class PositionBook:
    __slots__ = ("_entries", "_fill_keys", "_dates", "_date", "_realized", "_fees")

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._fill_keys: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._dates = SessionDateCache()
        self._date: date | None = None
        self._realized: dict[date, Decimal] = {}  # gross price P&L per session date
        self._fees: dict[date, Decimal] = {}

    # --- input ---------------------------------------------------------------------------

    def seen(self, fill: Fill) -> bool:
        """True when this fill (order id, fill id) was applied before."""
        return bool(fill.fill_id) and (fill.order_id, fill.fill_id) in self._fill_keys

    def apply(self, fill: Fill) -> FillResult | None:
        """Apply a fill; None when it was applied before. The result is on the day basis."""
        if fill.fill_id:
            key = (fill.order_id, fill.fill_id)
            if key in self._fill_keys:
                return None
            self._fill_keys[key] = None
            if len(self._fill_keys) > _FILL_KEYS_LIMIT:
                self._fill_keys.popitem(last=False)
        day = self._on(fill.occurred_at)
        entry = self._entries.get(fill.symbol)
        if entry is None:
            entry = self._entries[fill.symbol] = _Entry(Position(), Position(), fill.price, None)
        life = apply_fill(entry.position, fill.side, fill.qty, fill.price, fill.fee)
        result = apply_fill(entry.day, fill.side, fill.qty, fill.price, fill.fee)
        entry.position, entry.day, entry.mark = life.position, result.position, fill.price
        if life.position.is_flat:
            entry.opened_at = None
        elif life.opened:  # from flat, or flipped through zero: a new position, a new clock
            entry.opened_at = fill.occurred_at
        self._realized[day] = self._realized.get(day, ZERO) + result.realized
        self._fees[day] = self._fees.get(day, ZERO) + fill.fee
        return result

    def mark(self, symbol: str, price: Decimal, at: datetime | None = None) -> None:
        """The latest price of `symbol` (kept only while it is held). `at` may start a date."""
        entry = self._entries.get(symbol)
        if entry is None or entry.position.is_flat:
            return
        if at is not None:
            self._on(at)
        entry.mark = price

    def roll_to(self, at: datetime) -> date:
        """Start the session date of `at` if it is a later one (owners that see every bar
        roll on the first bar of a date); returns the book's current date."""
        return self._on(at)

    def _on(self, at: datetime) -> date:
        d = self._dates.date_of(at)
        current = self._date
        if current is None:
            self._date = d
            return d
        if d <= current:
            return current
        # A new date: open positions enter it at their last mark; flat ones are dropped.
        for symbol in list(self._entries):
            e = self._entries[symbol]
            if e.position.is_flat:
                del self._entries[symbol]
            else:
                e.day = e.day.rebased(e.mark)
        self._date = d
        return d

    def __eq__(self, other: object) -> bool:
        # The state, not the date cache: two books that applied the same log are equal.
        if not isinstance(other, PositionBook):
            return NotImplemented
        return (self._entries, self._date, self._realized, self._fees,
                list(self._fill_keys)) == (other._entries, other._date, other._realized,
                                           other._fees, list(other._fill_keys))

    __hash__ = None  # type: ignore[assignment]  # mutable

    # --- queries -------------------------------------------------------------------------

    @property
    def session_date(self) -> date | None:
        return self._date

    def position(self, symbol: str) -> Position:
        """The lifetime position (true average entry); flat when unknown."""
        e = self._entries.get(symbol)
        return e.position if e is not None else Position()

    def day_position(self, symbol: str) -> Position:
        """The position on the current date's basis (carried ones from the last mark)."""
        e = self._entries.get(symbol)
        return e.day if e is not None else Position()

    def day_positions(self) -> dict[str, Position]:
        """Every symbol held or traded on the current date, on the date's basis."""
        return {s: e.day for s, e in self._entries.items()}

    def open_positions(self) -> dict[str, Position]:
        return {s: e.position for s, e in self._entries.items() if not e.position.is_flat}

    def held(self, symbol: str) -> bool:
        e = self._entries.get(symbol)
        return e is not None and not e.position.is_flat

    def opened_at(self, symbol: str) -> datetime | None:
        e = self._entries.get(symbol)
        return e.opened_at if e is not None else None

    def last_price(self, symbol: str) -> Decimal | None:
        e = self._entries.get(symbol)
        return e.mark if e is not None else None

    def realized(self, day: date) -> Decimal:
        """Realized P&L of a session date, net of that date's fees."""
        return self._realized.get(day, ZERO) - self._fees.get(day, ZERO)

    def fees(self, day: date) -> Decimal:
        return self._fees.get(day, ZERO)
