"""Event-sourced aggregates (eventsourcing's domain model): an order's life at the broker,
and the trading day's risk state.

Pure: every command takes the instant it happened (`at`, tz-aware) and that instant
becomes the event's timestamp, so replaying the same commands builds the same events.
Ids are derived (uuid5), so the aggregate for an order id or a session date can be found
again without a lookup table.

Event attributes are JSON-friendly for eventsourcing's default transcoder: str, int,
Decimal, UUID, datetime, lists (dates travel as ISO strings, enums as their values).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.calendar import NEW_YORK  # noqa: F401 - kept importable from here
from domain.calendar import session_date as _session_date
from domain.errors import CatalystError
from domain.values import Side, ensure_utc

_ID_NAMESPACE = uuid5(NAMESPACE_URL, "catalyst:aggregates")


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
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED)


class Order(Aggregate):
    """approved -> submitted -> partially filled -> filled, or canceled / rejected.

    Carries the broker's ids: our `client_order_id` (derived from the approval, sent to the
    broker), the broker's `broker_order_id` (and bracket leg ids) once submitted, and the
    id of every fill applied.
    """

    class Approved(Aggregate.Created):
        order_id: str
        client_order_id: str
        symbol: str
        side: str
        qty: Decimal

    class Submitted(Aggregate.Event):
        broker_order_id: str
        legs: list[str]

        def apply(self, order: Order) -> None:
            order.broker_order_id = self.broker_order_id
            order.legs = list(self.legs)
            order.status = OrderStatus.SUBMITTED

    class Filled(Aggregate.Event):
        """One execution; `filled_qty` is cumulative, so the status follows from it."""

        fill_id: str
        qty: Decimal
        price: Decimal
        fee: Decimal
        filled_qty: Decimal

        def apply(self, order: Order) -> None:
            order.fill_ids.append(self.fill_id)
            order.filled_qty = self.filled_qty
            order.filled_notional += self.qty * self.price
            order.fees += self.fee
            order.status = (
                OrderStatus.FILLED if self.filled_qty >= order.qty
                else OrderStatus.PARTIALLY_FILLED
            )

    class Canceled(Aggregate.Event):
        reason: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.CANCELED
            order.reason = self.reason

    class Rejected(Aggregate.Event):
        code: str
        message: str

        def apply(self, order: Order) -> None:
            order.status = OrderStatus.REJECTED
            order.reason = f"{self.code}: {self.message}"

    def __init__(
        self, order_id: str, client_order_id: str, symbol: str, side: str, qty: Decimal
    ) -> None:
        # Called with the Approved event's attributes (on approval and on every replay).
        self.order_id = order_id
        self.client_order_id = client_order_id
        self.symbol = symbol
        self.side = Side(side)
        self.qty = qty
        self.status = OrderStatus.APPROVED
        self.broker_order_id: str | None = None
        self.legs: list[str] = []
        self.fill_ids: list[str] = []
        self.filled_qty = Decimal(0)
        self.filled_notional = Decimal(0)
        self.fees = Decimal(0)
        self.reason = ""

    @staticmethod
    def id_for(order_id: str) -> UUID:
        return uuid5(_ID_NAMESPACE, f"order:{order_id}")

    @classmethod
    def approve(
        cls, *, order_id: str, client_order_id: str, symbol: str, side: Side | str,
        qty: Decimal, at: datetime,
    ) -> Order:
        if not order_id or not client_order_id or not symbol:
            raise ValueError("order_id, client_order_id and symbol are required")
        return cls._create(
            cls.Approved,
            id=cls.id_for(order_id),
            timestamp=ensure_utc(at),
            order_id=order_id,
            client_order_id=client_order_id,
            symbol=symbol,
            side=Side(side).value,
            qty=_positive("qty", qty),
        )

    # --- commands ----------------------------------------------------------------------

    def submit(self, *, broker_order_id: str, at: datetime, legs: list[str] | None = None) -> None:
        self._require("submit", OrderStatus.APPROVED)
        if not broker_order_id:
            raise ValueError("broker_order_id is required")
        self.trigger_event(self.Submitted, timestamp=ensure_utc(at),
                           broker_order_id=broker_order_id, legs=list(legs or []))

    def fill(
        self, *, fill_id: str, qty: Decimal, price: Decimal, at: datetime,
        fee: Decimal = Decimal(0),
    ) -> None:
        """Apply one execution. A fill id already applied is ignored (broker updates are
        redelivered); a fill beyond the ordered quantity is refused."""
        if fill_id in self.fill_ids:
            return
        self._require("fill", OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)
        qty = _positive("fill qty", qty)
        price = _positive("fill price", price)
        total = self.filled_qty + qty
        if total > self.qty:
            raise InvalidOrderFill(
                f"order {self.order_id}: fill {fill_id} of {qty} would fill {total} "
                f"of {self.qty}"
            )
        self.trigger_event(self.Filled, timestamp=ensure_utc(at), fill_id=fill_id, qty=qty,
                           price=price, fee=Decimal(fee), filled_qty=total)

    def cancel(self, *, reason: str, at: datetime) -> None:
        """Approved (never sent), submitted or partially filled: what was filled stays."""
        self._require("cancel", OrderStatus.APPROVED, OrderStatus.SUBMITTED,
                      OrderStatus.PARTIALLY_FILLED)
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

    def _require(self, command: str, *allowed: OrderStatus) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"order {self.order_id}", command, str(self.status),
                "allowed when " + " or ".join(s.value for s in allowed),
            )


# --- trading day -------------------------------------------------------------------------


class TradingStatus(StrEnum):
    ACTIVE = "active"
    WARNED = "warned"  # the daily loss warning was issued; still trading
    HALTED = "halted"  # emergency stop: every new order is denied
    RESUMED = "resumed"  # trading again after a halt, by a person's decision


class TradingDay(Aggregate):
    """The risk state of one New York session date: active -> warned -> halted -> resumed.

    The loss warning is issued at most once a day; a halt can follow from any trading
    state; only a halted day can be resumed (a manual restart after an emergency stop).
    """

    class Opened(Aggregate.Created):
        session_date: str  # ISO date: snapshot- and JSON-friendly

    class Warned(Aggregate.Event):
        pnl: Decimal
        limit: Decimal

        def apply(self, day: TradingDay) -> None:
            day.status = TradingStatus.WARNED
            day.warned = True
            day.last_pnl = self.pnl

    class Halted(Aggregate.Event):
        reason: str
        pnl: Decimal
        limit: Decimal

        def apply(self, day: TradingDay) -> None:
            day.status = TradingStatus.HALTED
            day.halts += 1
            day.halt_reason = self.reason
            day.last_pnl = self.pnl

    class Resumed(Aggregate.Event):
        resumed_by: str
        reason: str

        def apply(self, day: TradingDay) -> None:
            day.status = TradingStatus.RESUMED
            day.halt_reason = ""

    def __init__(self, session_date: str) -> None:
        self.session_date_iso = session_date
        self.status = TradingStatus.ACTIVE
        self.warned = False
        self.halts = 0
        self.halt_reason = ""
        self.last_pnl: Decimal | None = None

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
        self._require("warn", TradingStatus.ACTIVE, TradingStatus.RESUMED)
        if self.warned:
            raise InvalidTransition(self._name, "warn", str(self.status),
                                    "the daily loss warning was already issued today")
        self.trigger_event(self.Warned, timestamp=ensure_utc(at), pnl=Decimal(pnl),
                           limit=Decimal(limit))

    def halt(self, *, reason: str, pnl: Decimal, limit: Decimal, at: datetime) -> None:
        self._require("halt", TradingStatus.ACTIVE, TradingStatus.WARNED, TradingStatus.RESUMED)
        self.trigger_event(self.Halted, timestamp=ensure_utc(at), reason=reason,
                           pnl=Decimal(pnl), limit=Decimal(limit))

    def resume(self, *, resumed_by: str, reason: str, at: datetime) -> None:
        self._require("resume", TradingStatus.HALTED)
        if not resumed_by:
            raise ValueError("resumed_by is required: a person decides to resume")
        self.trigger_event(self.Resumed, timestamp=ensure_utc(at), resumed_by=resumed_by,
                           reason=reason)

    @property
    def session_date(self) -> date:
        return date.fromisoformat(self.session_date_iso)

    @property
    def accepts_new_orders(self) -> bool:
        return self.status is not TradingStatus.HALTED

    @property
    def _name(self) -> str:
        return f"trading day {self.session_date_iso}"

    def _require(self, command: str, *allowed: TradingStatus) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                self._name, command, str(self.status),
                "allowed when " + " or ".join(s.value for s in allowed),
            )
