"""The executor's decisions: which broker commands an event calls for, and max-hold exits.

Pure. The broker work itself is `adapters.broker.execution.ExecutionService`, which runs the
commands returned here and turns their outcomes into events.

Two kinds of output:

* `decide` (via `Handler.handle`) emits events: `PositionCloseRequested(reason=
  "max_hold_time")` for a position held `trading_session.max_hold_time_minutes` or longer,
  judged on a `ScanRequested` / `BarReceived` event's time against the time of the fill that
  opened it; once per position (a closed and reopened symbol is a new position).
* `commands_for` maps an event to broker commands: OrderApproved -> SubmitOrder,
  PositionCloseRequested -> ClosePosition, FlattenRequested -> CloseAll,
  EmergencyStopTriggered -> EmergencyClose. It is deliberately *not* gated by the
  handler's seen-set: a redelivered event re-runs its command, and the broker makes that
  harmless (client_order_id is unique, a flat position cannot be closed twice). It also
  means the `PositionCloseRequested` this handler emits gets its `ClosePosition` when it comes
  back through the log, so a crash between publishing it and acting on it loses nothing.

State (rebuilt from the log): the position book (domain.book: fills, deduplicated by fill
id; marks from the bars of held symbols; realized P&L per New York session date net of fees,
on the same basis as the daily P&L projection), and per open position when it opened and
whether its close was requested. The emergency command carries the date's realized P&L in
cents, so the completion event starts from the figure the DailyPnLChanged showed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from domain.book import PositionBook
from domain.calendar import session_date
from domain.events import (
    BarReceived,
    EmergencyStopTriggered,
    Event,
    FlattenRequested,
    OrderApproved,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    PositionCloseRequested,
    ScanRequested,
)
from domain.values import Side, to_cents
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings

_ZERO = Decimal(0)
_UNKNOWN = object()  # `Executor._oldest_open` not computed since the state last changed


# --- commands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitOrder:
    """Send one order; `client_order_id` comes from the approval (so a resend is a duplicate
    the broker refuses). A bracket when both stop_loss and take_profit are set."""

    cause: OrderApproved
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: str = "market"  # market / limit
    limit_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: str = "day"


@dataclass(frozen=True, slots=True)
class ClosePosition:
    """Close one symbol's position (its open orders are canceled first)."""

    cause: Event
    symbol: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloseAll:
    """Cancel every open order, then close every position (end-of-day flatten)."""

    cause: Event
    reason: str


@dataclass(frozen=True, slots=True)
class EmergencyClose:
    """The emergency stop's broker side: cancel, close, verify flat, report."""

    cause: EmergencyStopTriggered
    session_date: date
    cancel_orders: bool
    close_positions: bool
    realized_pnl_before: Decimal = _ZERO


@dataclass(frozen=True, slots=True)
class DropOrder:
    """Never send an approval an emergency stop overtook: recorded as an `OrderRejected`
    (the approval's one outcome), unless the broker already holds it (`submit` went out
    before, its answer lost or its process killed): then it is the order `submit` sent,
    recorded as submitted, and the stop cancels it."""

    cause: OrderApproved
    reason: str
    submit: SubmitOrder


Command = SubmitOrder | ClosePosition | CloseAll | EmergencyClose | DropOrder


# --- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class HeldPosition:
    qty: Decimal  # signed: negative is short
    avg_entry_price: Decimal
    opened_at: datetime
    close_requested: bool = False


@dataclass(slots=True)
class ExecutorState:
    positions: dict[str, HeldPosition] = field(default_factory=dict)
    book: PositionBook = field(default_factory=PositionBook)
    # client_order_ids of approvals with no OrderSubmitted / OrderRejected yet, and those
    # of them an EmergencyStopTriggered came after (see `commands_for`).
    unsent: set[str] = field(default_factory=set)
    overtaken: set[str] = field(default_factory=set)


# The one session-date function (domain.calendar).
session_date_of = session_date


class Executor(Handler):
    name: ClassVar[str] = "executor"
    emits: ClassVar[frozenset[str]] = frozenset({"PositionCloseRequested"})
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.order.>",
        "catalyst.position.close_requested",
        "catalyst.session.flatten_requested",
        "catalyst.session.scan_requested",
        "catalyst.risk.emergency_stop_triggered",
        "catalyst.md.bar.>",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset(
        {
            "OrderApproved", "OrderSubmitted", "OrderRejected", "OrderFilled",
            "OrderPartiallyFilled", "PositionCloseRequested", "FlattenRequested",
            "ScanRequested", "BarReceived", "EmergencyStopTriggered",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.state = ExecutorState()
        # For `ignores`, which a verification asks about every bar: kept until the state
        # next changes (only `evolve` changes it, and it clears this).
        self._oldest_open: datetime | None | object = _UNKNOWN
        self._max_hold: tuple[int, timedelta] = (0, timedelta(0))

    # --- state -------------------------------------------------------------------------------

    def evolve(self, event: Event) -> None:
        if isinstance(event, BarReceived):  # most events: only a held symbol's bar marks it
            if event.symbol in self.state.positions and event.bar.timeframe == "1Min":
                self.state.book.mark(event.symbol, event.bar.close, event.occurred_at)
            return
        if isinstance(event, OrderApproved):
            self.state.unsent.add(event.client_order_id)
            return
        if isinstance(event, OrderSubmitted | OrderRejected):
            self.state.unsent.discard(event.client_order_id)
            self.state.overtaken.discard(event.client_order_id)
            return
        self._oldest_open = _UNKNOWN
        if isinstance(event, OrderFilled | OrderPartiallyFilled):
            self._on_fill(event)
        elif isinstance(event, PositionCloseRequested):
            pos = self.state.positions.get(event.symbol)
            if pos is not None:
                pos.close_requested = True
        elif isinstance(event, FlattenRequested | EmergencyStopTriggered):
            for pos in self.state.positions.values():
                pos.close_requested = True
            if isinstance(event, EmergencyStopTriggered):
                self.state.overtaken |= self.state.unsent

    def _on_fill(self, fill: OrderFilled | OrderPartiallyFilled) -> None:
        book = self.state.book
        if book.apply(fill) is None:
            return  # the same fill again (another translation of it)
        symbol = fill.symbol
        pos = book.position(symbol)
        opened_at = book.opened_at(symbol)
        if pos.is_flat or opened_at is None:
            self.state.positions.pop(symbol, None)
            return
        held = self.state.positions.get(symbol)
        avg = pos.avg_price
        assert avg is not None
        if held is None or held.opened_at != opened_at:
            # new, or flipped through flat: a new position, with a new hold clock
            self.state.positions[symbol] = HeldPosition(pos.qty, avg, opened_at)
        else:
            held.qty, held.avg_entry_price = pos.qty, avg

    def ignores(self, type_name: str, occurred_at: datetime, symbol: str | None,
                settings: Settings) -> bool:
        # A bar moves no state here and decides nothing until a position is due to close:
        # before the oldest hold clock still running reaches the maximum.
        if type_name != "BarReceived":
            return False
        if symbol in self.state.positions:
            return False  # it marks a held symbol in the book
        oldest = self._oldest_open
        if oldest is _UNKNOWN:
            oldest = self._oldest_open = min(
                (p.opened_at for p in self.state.positions.values() if not p.close_requested),
                default=None)
        if oldest is None:
            return True
        minutes = settings.session.max_hold_time_minutes
        if minutes != self._max_hold[0]:
            self._max_hold = (minutes, timedelta(minutes=minutes))
        return occurred_at - oldest < self._max_hold[1]  # type: ignore[operator]

    def realized_pnl(self, session_date: date) -> Decimal:
        """The date's realized P&L net of fees, in cents: the daily P&L projection's figure."""
        return to_cents(self.state.book.realized(session_date))

    # --- decisions ---------------------------------------------------------------------------

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        positions = self.state.positions
        if not positions:  # every bar comes here; most find nothing held
            return []
        if not isinstance(event, ScanRequested | BarReceived):
            return []
        max_hold = timedelta(minutes=settings.session.max_hold_time_minutes)
        now = event.occurred_at
        due = [
            symbol for symbol, pos in positions.items()
            if not pos.close_requested and now - pos.opened_at >= max_hold
        ]
        out: list[Event] = []
        for symbol in sorted(due):
            out.append(
                PositionCloseRequested.caused_by(
                    event, len(out), self.name, symbol=symbol, reason="max_hold_time"
                )
            )
        return out

    def commands_for(self, event: Event, settings: Settings) -> list[Command]:
        """The broker commands `event` calls for, judged on this state: in the real-time
        runtime the broker effect consumes the log behind the sequencer, so the state may
        already hold events recorded after `event`. An approval still unsent when an
        emergency stop was recorded is dropped, not sent: the stop cancels what is at the
        broker, and an entry sent after it would be an order nobody may place any more.
        (In a simulation the effect runs in the approval's own step, before any later
        event, so this never happens there.)"""
        if isinstance(event, OrderApproved):
            submits = submit_commands(event, settings)
            if event.client_order_id in self.state.overtaken:
                reason = "an emergency stop was triggered before it was sent"
                return [DropOrder(event, reason, s) for s in submits]
            return list(submits)
        if isinstance(event, PositionCloseRequested):
            return [ClosePosition(event, event.symbol, event.reason)]
        if isinstance(event, FlattenRequested):
            return [CloseAll(event, event.reason)]
        if isinstance(event, EmergencyStopTriggered):
            emergency = settings.emergency
            return [
                EmergencyClose(
                    cause=event,
                    session_date=event.session_date,
                    cancel_orders=event.actions.get(
                        "cancel_all_orders", emergency.cancel_all_orders
                    ),
                    close_positions=event.actions.get(
                        "close_all_positions", emergency.close_all_positions
                    ),
                    realized_pnl_before=self.realized_pnl(event.session_date),
                )
            ]
        return []


def submit_commands(approval: OrderApproved, settings: Settings) -> list[SubmitOrder]:
    """The order an approval sends (none for a zero quantity)."""
    if approval.qty <= 0:
        return []
    bracket = (
        approval.use_bracket
        and settings.execution.use_bracket_orders
        and approval.stop_loss is not None
        and approval.take_profit is not None
    )
    order_type = "limit" if approval.order_type == "limit" else "market"
    return [
        SubmitOrder(
            cause=approval,
            order_id=approval.order_id,
            client_order_id=approval.client_order_id,
            symbol=approval.symbol,
            side=approval.side,
            qty=approval.qty,
            order_type=order_type,
            limit_price=(approval.limit_price or approval.entry) if order_type == "limit"
            else None,
            stop_loss=approval.stop_loss if bracket else None,
            take_profit=approval.take_profit if bracket else None,
        )
    ]
