"""Pure P&L maths: average-cost position accounting with Decimal.

A position is a signed quantity (long > 0, short < 0) and its *cost basis*: the signed sum
of quantity x price still open. The average entry price is `cost / qty`. We carry the cost
rather than the average because then every step is a sum, and

    realized + unrealized(mark) == cash flows + qty x mark          (fees kept apart)

holds exactly, not just to 28 digits: the one division (the share of cost a partial close
removes) is rounded once, and whatever it rounds away stays in the cost of the open rest.

Fees are kept apart from prices (the average entry price is the price paid, as a broker
shows it); `net_realized` and `total` subtract them.

Session dates: the trading day is the America/New_York calendar date of an event's UTC
time. `SessionDateCache` answers that with two datetime comparisons on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from domain.calendar import NEW_YORK, session_date
from domain.values import Side

ZERO = Decimal(0)
# The cost a partial close removes is rounded to this quantum (far below a cent) so sums of
# costs stay exact within Decimal's 28 significant digits.
COST_QUANTUM = Decimal("1e-12")


def signed_qty(side: Side, qty: Decimal) -> Decimal:
    return qty if side is Side.BUY else -qty


@dataclass(frozen=True, slots=True)
class Position:
    """One symbol's position under average cost. Immutable: `apply_fill` returns a new one."""

    qty: Decimal = ZERO  # signed: > 0 long, < 0 short
    cost: Decimal = ZERO  # signed cost basis of the open quantity
    realized: Decimal = ZERO  # price P&L of closing fills, before fees
    fees: Decimal = ZERO  # every fee paid on this position's fills

    @property
    def is_flat(self) -> bool:
        return self.qty == 0

    @property
    def side(self) -> str:
        return "long" if self.qty > 0 else "short" if self.qty < 0 else "flat"

    @property
    def avg_price(self) -> Decimal | None:
        """Average entry price (positive for longs and shorts); None when flat."""
        return self.cost / self.qty if self.qty else None

    @property
    def net_realized(self) -> Decimal:
        return self.realized - self.fees

    def unrealized(self, mark: Decimal) -> Decimal:
        # qty x (mark - avg) without the division: qty x mark - cost.
        return self.qty * mark - self.cost

    def total(self, mark: Decimal) -> Decimal:
        """Realized + unrealized at `mark`, fees subtracted."""
        return self.realized - self.fees + self.unrealized(mark)

    def rebased(self, mark: Decimal) -> Position:
        """The same open quantity as if bought at `mark`, with no realized P&L or fees.

        The daily P&L uses this to carry a position into the next session date: the new day
        measures only what happens from the previous day's last mark.
        """
        return Position(qty=self.qty, cost=self.qty * mark)


@dataclass(frozen=True, slots=True)
class FillResult:
    position: Position
    realized: Decimal  # price P&L this fill realized (0 for a purely opening fill)
    closed_qty: Decimal  # unsigned quantity this fill closed
    opened: bool  # True when the fill opened a position from flat or flipped through zero


def apply_fill(
    pos: Position, side: Side, qty: Decimal, price: Decimal, fee: Decimal = ZERO
) -> FillResult:
    """Apply one fill under average cost.

    Same direction (or from flat): add to quantity and cost; the average moves.
    Opposite direction: close up to the open quantity at the average; realized is
    closed x (price - avg) for a long, closed x (avg - price) for a short. Any quantity
    left over opens a new position the other way at the fill price (a flip).
    """
    if qty <= 0:
        raise ValueError(f"fill quantity must be positive, got {qty}")
    if price <= 0:
        raise ValueError(f"fill price must be positive, got {price}")
    d = signed_qty(side, qty)
    fees = pos.fees + fee
    q = pos.qty
    if q == 0 or (q > 0) == (d > 0):
        return FillResult(
            Position(qty=q + d, cost=pos.cost + d * price, realized=pos.realized, fees=fees),
            realized=ZERO, closed_qty=ZERO, opened=q == 0,
        )
    open_abs = abs(q)
    closed = min(qty, open_abs)
    if closed == open_abs:
        cost_removed = pos.cost  # full close: no division, no rounding
    else:
        cost_removed = (pos.cost * closed / open_abs).quantize(
            COST_QUANTUM, rounding=ROUND_HALF_EVEN
        )
    qty_removed = closed if q > 0 else -closed
    realized = qty_removed * price - cost_removed
    rest = qty - closed
    if rest > 0:  # flip through zero: the rest opens the other way at the fill price
        new_qty = d + q  # == sign(d) x rest
        new_cost = new_qty * price
    else:
        new_qty = q - qty_removed
        new_cost = pos.cost - cost_removed
    return FillResult(
        Position(qty=new_qty, cost=new_cost, realized=pos.realized + realized, fees=fees),
        realized=realized, closed_qty=closed, opened=rest > 0,
    )


def reward_risk(side: Side, entry: Decimal, stop: Decimal, target: Decimal) -> Decimal | None:
    """Reward per unit of risk; None when the stop is not on the losing side of the entry."""
    risk = entry - stop if side is Side.BUY else stop - entry
    if risk <= 0:
        return None
    reward = target - entry if side is Side.BUY else entry - target
    return reward / risk


# --- session dates ---------------------------------------------------------------------------


# The one session-date function (domain.calendar), under the name this module's users know.
ny_session_date = session_date


def ny_day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a New York calendar date in UTC (23 or 25 hours around DST changes)."""
    start = datetime.combine(day, time(0), NEW_YORK).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), NEW_YORK).astimezone(UTC)
    return start, end


class SessionDateCache:
    """Caches the UTC bounds of the last date seen: O(1) comparisons per event."""

    __slots__ = ("_start", "_end", "_date")

    def __init__(self) -> None:
        self._start: datetime | None = None
        self._end: datetime | None = None
        self._date: date | None = None

    def date_of(self, ts: datetime) -> date:
        start, end = self._start, self._end
        if start is not None and end is not None and start <= ts < end:
            return self._date  # type: ignore[return-value]
        d = ny_session_date(ts)
        start, end = ny_day_bounds(d)
        tz = ts.tzinfo
        if tz is not UTC and tz is not None and tz.utcoffset(ts) == timedelta(0):
            # The same instants in the events' own UTC tzinfo object: comparing datetimes
            # that share one tzinfo skips two utcoffset() calls (this runs for every bar).
            start, end = start.replace(tzinfo=tz), end.replace(tzinfo=tz)
        self._start, self._end = start, end
        self._date = d
        return d


def win_rate(wins: int, trades: int) -> float | None:
    """The share of round trips that made money: wins / trades, a break-even trade counting
    as a trade that did not win. The one definition the run summary, the daily email and
    the backtest report use (None when there was no trade)."""
    return wins / trades if trades else None
