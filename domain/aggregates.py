"""The order lifecycle and the trading state per session date, as eventsourcing aggregates
that evolve from our domain events: the risk guard's state (handlers/risk_guard.py).

    Order       approved -> submitted -> partially filled -> filled
                                      \\-> canceled / expired / rejected
    TradingDay  active -> warned -> halted -> resumed (per New York session date)

The record stream holds the domain events (OrderApproved, OrderFilled, EmergencyStopTriggered,
...); the aggregates are rebuilt from them, never stored apart. `domain.aggregate_state`
(`Orders.apply`, `TradingDays.apply`) is the one mapping from a domain event to an aggregate
command. The
aggregates' own events (Order.Filled, ...) are how eventsourcing applies a command; they are
collected and dropped at once (docs/architecture.md, "Why eventsourcing's aggregates but not
its persistence").

Pure: a command takes the instant it happened (`at`: the domain event's `occurred_at`) as
its event's timestamp, so a replay builds the same aggregates. Ids derive from the order id
or the session date (uuid5).

A command the current state does not allow raises `InvalidTransition` (or
`InvalidOrderFill`). Applied from the log (domain.aggregate_state), such a command is
refused: the aggregate keeps its state and the refusal is counted; a bad broker update never
stops the handler.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.calendar import session_date as _session_date
from domain.errors import CatalystError
from domain.values import Side, ensure_utc

_ID_NAMESPACE = uuid5(NAMESPACE_URL, "catalyst:aggregates")
_ZERO = Decimal(0)


class InvalidTransition(CatalystError, ValueError):
    """A command that the aggregate's current state does not allow. Names the aggregate,
    the command and the state."""

    def __init__(self, aggregate: str, command: str, state: str, detail: str = "") -> None:
        msg = f"{aggregate}: cannot {command} when {state}"
        super().__init__(msg + (f" ({detail})" if detail else ""))
        self.aggregate = aggregate
        self.command = command
        self.state = state


class InvalidOrderFill(CatalystError, ValueError):
    """A fill that cannot belong to the order (non-positive, or more than was ordered)."""


# The New York session date an instant belongs to: the one function in domain.calendar.
session_date_of = _session_date


def _positive(name: str, value: Decimal) -> Decimal:
    value = Decimal(value)
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


# --- order -----------------------------------------------------------------------------


class OrderStatus(StrEnum):
    APPROVED = "approved"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"  # a day order the broker canceled at the close
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED,
                       OrderStatus.REJECTED})
_WORKING = (OrderStatus.APPROVED, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)


class Order(Aggregate):
    """One entry order from its approval: our ids, the price it may fill at, its stop, the
    broker's ids once submitted, and what filled.

    Two sources report on an order, the submit call and the broker's update stream, and the
    log may record them in either order: a fill can come before its `OrderSubmitted`, so
    fills are taken from approved as well, and a submission recorded after a fill or a
    cancel only adds the broker's ids.
    """

    class Approved(Aggregate.Created):
        order_id: str
        client_order_id: str
        symbol: str
        side: str
        qty: Decimal
        price: Decimal  # the limit (or the entry): what the order may fill at, at worst
        stop_loss: Decimal | None

    class Submitted(Aggregate.Event):
        broker_order_id: str
        legs: list[str]

        def apply(self, order: Order) -> None:
            order.broker_order_id = self.broker_order_id
            order.legs = list(self.legs)
            if order.status is OrderStatus.APPROVED:
                order.status = OrderStatus.SUBMITTED

    class Filled(Aggregate.Event):
        """One execution; `complete` when the broker reports the whole order filled."""

        fill_id: str
        qty: Decimal
        price: Decimal
        fee: Decimal
        complete: bool

        def apply(self, order: Order) -> None:
            order.fill_ids.add(self.fill_id)
            order.filled_qty += self.qty
            order.filled_notional += self.qty * self.price
            order.fees += self.fee
            order.status = (
                OrderStatus.FILLED if self.complete or order.filled_qty >= order.qty
                else OrderStatus.PARTIALLY_FILLED
            )

    class Canceled(Aggregate.Event):
        reason: str

        def apply(self, order: Order) -> None:
            order.status = (OrderStatus.EXPIRED if self.reason == "expired"
                            else OrderStatus.CANCELED)
            order.reason = self.reason

    class Rejected(Aggregate.Event):
        code: str
        message: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.REJECTED
            order.reason = f"{self.code}: {self.message}"

    def __init__(
        self, order_id: str, client_order_id: str, symbol: str, side: str, qty: Decimal,
        price: Decimal, stop_loss: Decimal | None,
    ) -> None:
        # Called with the Approved event's attributes (on approval and on every replay).
        self.order_id = order_id
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = Side(side)
        self.qty = qty
        self.price = price
        self.stop_loss = stop_loss
        self.status = OrderStatus.APPROVED
        self.broker_order_id: str | None = None
        self.legs: list[str] = []
        self.fill_ids: set[str] = set()
        self.filled_qty = _ZERO
        self.filled_notional = _ZERO
        self.fees = _ZERO
        self.reason = ""

    @staticmethod
    def id_for(order_id: str) -> UUID:
        return uuid5(_ID_NAMESPACE, f"order:{order_id}")

    @classmethod
    def approve(
        cls, *, order_id: str, client_order_id: str, symbol: str, side: Side | str,
        qty: Decimal, price: Decimal, at: datetime, stop_loss: Decimal | None = None,
    ) -> Order:
        if not order_id or not client_order_id or not symbol:
            raise ValueError("order_id, client_order_id and symbol are required")
        return cls._create(
            cls.Approved, id=cls.id_for(order_id), timestamp=ensure_utc(at),
            order_id=order_id, client_order_id=client_order_id, symbol=symbol,
            side=Side(side).value, qty=_positive("qty", qty), price=_positive("price", price),
            stop_loss=stop_loss,
        )

    # --- commands ----------------------------------------------------------------------

    def submit(self, *, broker_order_id: str, at: datetime, legs: Iterable[str] = ()) -> None:
        """The broker accepted it. The same submission again changes nothing."""
        if not broker_order_id:
            raise ValueError("broker_order_id is required")
        if self.broker_order_id == broker_order_id:
            return
        if self.status is OrderStatus.REJECTED or self.broker_order_id is not None:
            raise InvalidTransition(
                f"order {self.order_id}", "submit", self._state,
                "it was rejected" if self.status is OrderStatus.REJECTED
                else f"already at the broker as {self.broker_order_id}")
        self.trigger_event(self.Submitted, timestamp=ensure_utc(at),
                           broker_order_id=broker_order_id, legs=list(legs))

    def fill(
        self, *, fill_id: str, qty: Decimal, price: Decimal, at: datetime,
        fee: Decimal = _ZERO, complete: bool = False,
    ) -> None:
        """Apply one execution. A fill id already applied is ignored (broker updates are
        redelivered); a fill of a finished order, or beyond the ordered quantity, is
        refused."""
        if fill_id in self.fill_ids:
            return
        self._require("fill", *_WORKING)
        qty = _positive("fill qty", qty)
        price = _positive("fill price", price)
        total = self.filled_qty + qty
        if total > self.qty:
            raise InvalidOrderFill(
                f"order {self.order_id}: fill {fill_id} of {qty} would fill {total} "
                f"of {self.qty}"
            )
        self.trigger_event(self.Filled, timestamp=ensure_utc(at), fill_id=fill_id, qty=qty,
                           price=price, fee=Decimal(fee), complete=complete)

    def cancel(self, *, reason: str, at: datetime) -> None:
        """Before or after it reached the broker: what was filled stays. Reason `expired`:
        the broker ended a day order."""
        self._require("cancel", *_WORKING)
        self.trigger_event(self.Canceled, timestamp=ensure_utc(at), reason=reason)

    def reject(self, *, code: str, message: str, at: datetime) -> None:
        """The broker said no: at submission (approved) or after accepting it (submitted)."""
        self._require("reject", OrderStatus.APPROVED, OrderStatus.SUBMITTED)
        self.trigger_event(self.Rejected, timestamp=ensure_utc(at), code=code, message=message)

    # --- queries -----------------------------------------------------------------------

    @property
    def remaining_qty(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def avg_fill_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None

    @property
    def is_terminal(self) -> bool:
        # OrderStatus(...): a snapshot restores the status as a plain str.
        return OrderStatus(self.status).is_terminal

    @property
    def at_broker(self) -> bool:
        """Its OrderSubmitted is recorded: the broker reserves its buying power."""
        return self.broker_order_id is not None

    @property
    def stop_risk(self) -> Decimal:
        """What the unfilled rest loses between its price and its stop."""
        if self.stop_loss is None:
            return _ZERO
        return self.remaining_qty * abs(self.price - self.stop_loss)

    @property
    def _state(self) -> str:
        return str(self.status)

    def _require(self, command: str, *allowed: OrderStatus) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"order {self.order_id}", command, self._state,
                "allowed when " + " or ".join(s.value for s in allowed),
            )


# --- trading day -------------------------------------------------------------------------


class TradingStatus(StrEnum):
    ACTIVE = "active"
    WARNED = "warned"  # the daily loss warning was issued; still trading
    HALTED = "halted"  # an emergency stop halted new orders
    RESUMED = "resumed"  # trading again after a halt, by a person's decision


class TradingDay(Aggregate):
    """The risk state of one New York session date: active -> warned -> halted -> resumed.

    The loss warning is issued at most once a day, whatever the state. An emergency stop can
    come in any state (a manual stop, then the limit's own): `limit_stopped` records that the
    limit's stop fired, which stays for the date after a resume; the stop halts when its
    actions say so, for the date or (`until_resumed`) until a person resumes trading. Only a
    halted day can be resumed.
    """

    class Opened(Aggregate.Created):
        session_date: str  # ISO date: snapshot- and JSON-friendly

    class Warned(Aggregate.Event):
        pnl: Decimal
        limit: Decimal

        def apply(self, day: TradingDay) -> None:
            day.warned = True
            if day.status is not TradingStatus.HALTED:
                day.status = TradingStatus.WARNED

    class Stopped(Aggregate.Event):
        reason: str
        pnl: Decimal
        limit: Decimal
        at_limit: bool  # the limit's stop (a manual stop short of the limit is not)
        halts: bool
        until_resumed: bool

        def apply(self, day: TradingDay) -> None:
            day.stops += 1
            day.limit_stopped = day.limit_stopped or self.at_limit
            if self.halts:
                day.status = TradingStatus.HALTED
                day.until_resumed = day.until_resumed or self.until_resumed
                day.halt_reason = self.reason

    class Resumed(Aggregate.Event):
        resumed_by: str
        reason: str

        def apply(self, day: TradingDay) -> None:
            day.status = TradingStatus.RESUMED
            day.until_resumed = False
            day.halt_reason = ""

    def __init__(self, session_date: str) -> None:
        self.session_date_iso = session_date
        self.status = TradingStatus.ACTIVE
        self.warned = False
        self.limit_stopped = False
        self.until_resumed = False
        self.stops = 0
        self.halt_reason = ""

    @staticmethod
    def id_for(session_date: date) -> UUID:
        return uuid5(_ID_NAMESPACE, f"trading_day:{session_date.isoformat()}")

    @classmethod
    def open(cls, *, session_date: date, at: datetime) -> TradingDay:
        if isinstance(session_date, datetime):
            raise TypeError("session_date must be a date (see session_date_of)")
        return cls._create(cls.Opened, id=cls.id_for(session_date), timestamp=ensure_utc(at),
                           session_date=session_date.isoformat())

    def warn(self, *, pnl: Decimal, limit: Decimal, at: datetime) -> None:
        if self.warned:
            raise InvalidTransition(self._name, "warn", str(self.status),
                                    "the daily loss warning was already issued today")
        self.trigger_event(self.Warned, timestamp=ensure_utc(at), pnl=Decimal(pnl),
                           limit=Decimal(limit))

    def stop(self, *, reason: str, pnl: Decimal, limit: Decimal, at: datetime, at_limit: bool,
             halts: bool, until_resumed: bool) -> None:
        """An emergency stop, in any state: a stop that reached the log always takes effect
        (the risk guard fires the limit's own once a date, from `limit_stopped`)."""
        self.trigger_event(self.Stopped, timestamp=ensure_utc(at), reason=reason,
                           pnl=Decimal(pnl), limit=Decimal(limit), at_limit=at_limit,
                           halts=halts, until_resumed=halts and until_resumed)

    def resume(self, *, resumed_by: str, reason: str, at: datetime) -> None:
        self._require("resume", TradingStatus.HALTED)
        self.trigger_event(self.Resumed, timestamp=ensure_utc(at), resumed_by=resumed_by,
                           reason=reason)

    @property
    def session_date(self) -> date:
        return date.fromisoformat(self.session_date_iso)

    @property
    def halted(self) -> bool:
        return self.status is TradingStatus.HALTED

    @property
    def _name(self) -> str:
        return f"trading day {self.session_date_iso}"

    def _require(self, command: str, *allowed: TradingStatus) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                self._name, command, str(self.status),
                "allowed when " + " or ".join(s.value for s in allowed),
            )
