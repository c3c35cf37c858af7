"""The aggregates as the handlers' state: the one mapping from our domain events to the
commands of `Order` and `TradingDay` (domain/aggregates.py), and what the risk guard asks of
them.

Pure, like the aggregates: the instant of every command is its event's `occurred_at`. A
command the aggregate refuses (`InvalidTransition`, `InvalidOrderFill`, a non-positive fill)
leaves it as it was and is counted in `Refusals` with the latest few messages: an update from
the log is a fact already recorded, so refusing it must never stop the handler that reads it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import date, datetime

from domain.aggregates import InvalidTransition, Order, TradingDay
from domain.events import (
    DailyLossWarningIssued,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    TradingResumed,
)


class Refusals:
    """Commands the log asked for that an aggregate refused: how many, and the latest few
    messages. The state is kept as it was; an adapter reports these (never the pure core)."""

    __slots__ = ("count", "latest")

    def __init__(self) -> None:
        self.count = 0
        self.latest: deque[str] = deque(maxlen=20)

    def add(self, event: Event, error: Exception) -> None:
        self.count += 1
        self.latest.append(f"{event.type} {event.event_id}: {error}")


class Orders:
    """Our entry orders (by client_order_id) as `Order` aggregates, from the order events.

    Only approved orders are ours to follow: events of orders the log never approved (a
    position's close, a reconciliation fill) and of bracket legs (exits, under the parent's
    ids with `leg` set: their fate is the position's) change no order here.
    """

    __slots__ = ("_orders", "_open", "refusals")

    def __init__(self) -> None:
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}  # not terminal, in approval order
        self.refusals = Refusals()

    def apply(self, event: Event) -> Order | None:
        """Evolve from one event; the order it changed, or None (not ours, or refused)."""
        if isinstance(event, OrderApproved):
            if event.client_order_id in self._orders:
                return None  # the same approval again (its id is derived from the signal)
            try:
                order = Order.approve(
                    order_id=event.order_id, client_order_id=event.client_order_id,
                    symbol=event.symbol, side=event.side, qty=event.qty,
                    price=event.limit_price or event.entry, stop_loss=event.stop_loss,
                    at=event.occurred_at)
            except ValueError as e:  # no quantity or price: nothing that could fill
                self.refusals.add(event, e)
                return None
            order.collect_events()
            self._orders[event.client_order_id] = self._open[event.client_order_id] = order
            return order
        if not isinstance(event, OrderSubmitted | OrderFilled | OrderPartiallyFilled
                          | OrderCanceled | OrderRejected):
            return None
        if getattr(event, "leg", None) is not None:
            return None
        order = self._orders.get(event.client_order_id)
        if order is None:
            return None
        at = event.occurred_at
        version = order.version
        try:
            if isinstance(event, OrderFilled | OrderPartiallyFilled):
                order.fill(fill_id=event.fill_id, qty=event.qty, price=event.price,
                           fee=event.fee, at=at, complete=isinstance(event, OrderFilled))
            elif isinstance(event, OrderSubmitted):
                order.submit(broker_order_id=event.broker_order_id, legs=event.legs, at=at)
            elif isinstance(event, OrderCanceled):
                order.cancel(reason=event.reason, at=at)
            else:
                order.reject(code=event.code, message=event.message, at=at)
        except ValueError as e:  # InvalidTransition, InvalidOrderFill, a non-positive fill
            self.refusals.add(event, e)
            return None
        order.collect_events()
        if order.is_terminal:
            self._open.pop(event.client_order_id, None)
        return order if order.version != version else None

    def get(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def working(self) -> Iterable[Order]:
        """Orders not yet filled, canceled, expired or rejected."""
        return self._open.values()


class TradingDays:
    """The trading state per session date, as `TradingDay` aggregates, from the risk events.

    `TradingResumed` names no date: it resumes every halted date. A stop that halts until
    resumed holds every later date too; one that halts for its date only holds that date
    and any earlier one.
    """

    __slots__ = ("_days", "_halted", "refusals")

    def __init__(self) -> None:
        self._days: dict[date, TradingDay] = {}
        self._halted: dict[date, TradingDay] = {}
        self.refusals = Refusals()

    def apply(self, event: Event) -> None:
        try:
            if isinstance(event, DailyLossWarningIssued):
                day = self._day(event.session_date, event.occurred_at)
                day.warn(pnl=event.pnl, limit=event.limit, at=event.occurred_at)
            elif isinstance(event, EmergencyStopTriggered):
                day = self._day(event.session_date, event.occurred_at)
                actions = event.actions
                day.stop(
                    reason=event.reason, pnl=event.pnl, limit=event.limit, at=event.occurred_at,
                    # A manual stop (the API's kill switch) short of the limit leaves the
                    # limit's own stop armed: trading resumed after it still stops there.
                    at_limit=event.reason != "manual" or event.pnl <= -event.limit,
                    halts=actions.get("halt_new_trades", True),
                    until_resumed=actions.get("require_manual_restart", True),
                )
                if day.halted:
                    self._halted[event.session_date] = day
            elif isinstance(event, TradingResumed):
                for day in self._halted.values():
                    day.resume(resumed_by=event.resumed_by, reason=event.reason,
                               at=event.occurred_at)
                    day.collect_events()
                self._halted.clear()
                return
            else:
                return
        except InvalidTransition as e:
            self.refusals.add(event, e)
        day.collect_events()

    def _day(self, session_date: date, at: datetime) -> TradingDay:
        day = self._days.get(session_date)
        if day is None:
            day = self._days[session_date] = TradingDay.open(session_date=session_date, at=at)
        return day

    def get(self, session_date: date) -> TradingDay | None:
        return self._days.get(session_date)

    def warned(self, session_date: date) -> bool:
        day = self._days.get(session_date)
        return day is not None and day.warned

    def limit_stopped(self, session_date: date) -> bool:
        day = self._days.get(session_date)
        return day is not None and day.limit_stopped

    def halted_on(self, session_date: date) -> bool:
        return any(day.until_resumed or session_date <= d for d, day in self._halted.items())

    def halted_since(self) -> date | None:
        """The latest halted date, or None when nothing is halted."""
        return max(self._halted, default=None)

    def until_resumed(self) -> bool:
        """A halt in force lasts until TradingResumed (not only for its date)."""
        return any(day.until_resumed for day in self._halted.values())
