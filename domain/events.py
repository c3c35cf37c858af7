"""Every fact the system records: frozen pydantic models, one registry from `type` to class.

Subjects name the thing, then what happened (past tense). Market data subjects carry the
symbol as their last token (`catalyst.md.bar.AAPL`).

Past ~400 lines: this is the schema of the log, one short class per event type, and it is
read as one catalogue (what can happen, under which subject); split by area, the registry
and the subject roots below would have to be kept in step across files.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.errors import EventDecodeError
from domain.values import (
    Bar,
    Headline,
    Money,
    Qty,
    Severity,
    Side,
    UtcDatetime,
    derive_id,
)

SCHEMA_VERSION = 1


class Event(BaseModel):
    """Envelope every event carries. `occurred_at` comes from the event's source clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject_template: ClassVar[str] = ""

    event_id: UUID
    type: str
    version: int = SCHEMA_VERSION
    occurred_at: UtcDatetime
    correlation_id: str
    causation_id: UUID | None = None

    @property
    def subject(self) -> str:
        return self.subject_template.format(symbol=getattr(self, "symbol", ""))

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def caused_by(
        cls, cause: Event, index: int, handler: str, occurred_at: datetime | None = None,
        **payload: Any,
    ) -> Any:
        """Build an event whose id derives from its cause, so a re-run emits the same id."""
        return cls(
            event_id=derive_id(cause.event_id, f"{handler}:{index}"),
            type=cls.__name__,
            occurred_at=occurred_at or cause.occurred_at,
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
            **payload,
        )


REGISTRY: dict[str, type[Event]] = {}


def event(subject: str):  # type: ignore[no-untyped-def]
    """Register an event class under its class name with its subject."""

    def wrap(cls: type[Event]) -> type[Event]:
        cls.subject_template = subject
        # `type` must equal the class name: a literal default documents it in the schema.
        cls.model_fields["type"].default = cls.__name__
        cls.model_fields["type"].annotation = Literal[cls.__name__]  # type: ignore[assignment]
        cls.model_rebuild(force=True)
        REGISTRY[cls.__name__] = cls
        return cls

    return wrap


# --- session -------------------------------------------------------------------------------


@event("catalyst.session.start_requested")
class SessionStartRequested(Event):
    requested_by: str = "scheduler"
    session_date: date | None = None


@event("catalyst.session.started")
class SessionStarted(Event):
    session_id: str
    session_date: date
    mode: str
    broker: str
    market_open: datetime
    market_close: datetime
    early_close: bool = False
    symbols: tuple[str, ...] = ()
    limits: dict[str, str] = Field(default_factory=dict)


@event("catalyst.session.start_rejected")
class SessionStartRejected(Event):
    reason: str
    session_date: date | None = None


@event("catalyst.session.clock_ticked")
class ClockTicked(Event):
    """The scheduler's minute tick during regular hours; the session handler decides on it."""

    session_date: date


@event("catalyst.session.scan_requested")
class ScanRequested(Event):
    session_id: str
    scan_number: int


@event("catalyst.session.entries_stopped")
class EntriesStopped(Event):
    session_id: str
    reason: str


@event("catalyst.session.flatten_requested")
class FlattenRequested(Event):
    session_id: str
    reason: str


@event("catalyst.session.ended")
class SessionEnded(Event):
    session_id: str
    session_date: date
    trades: int
    wins: int
    losses: int
    realized_pnl: Money


# --- market data ---------------------------------------------------------------------------


@event("catalyst.md.bar.{symbol}")
class BarReceived(Event):
    symbol: str
    bar: Bar


@event("catalyst.md.quote.{symbol}")
class QuoteReceived(Event):
    symbol: str
    bid: Money
    ask: Money
    bid_size: int = 0
    ask_size: int = 0


@event("catalyst.md.news.{symbol}")
class NewsReceived(Event):
    symbol: str
    headline: Headline


# --- scan and strategy ---------------------------------------------------------------------


class CandidateScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    rank: int
    price: Money
    catalyst: float
    momentum: float
    volume: float
    technical: float
    penalty: float = 0.0
    composite: float
    atr: Money
    details: dict[str, Any] = Field(default_factory=dict)


@event("catalyst.scan.completed")
class ScanCompleted(Event):
    session_id: str
    scan_number: int
    universe_size: int
    candidates: tuple[CandidateScore, ...]


@event("catalyst.signal.generated")
class SignalGenerated(Event):
    signal_id: str
    symbol: str
    side: Side
    entry: Money
    stop_loss: Money
    take_profit: Money
    use_bracket: bool = True
    score: float | None = None
    reason: str = ""


# --- risk ----------------------------------------------------------------------------------


@event("catalyst.order.approved")
class OrderApproved(Event):
    order_id: str  # ours; the broker client_order_id derives from the approval event id
    client_order_id: str
    signal_id: str
    symbol: str
    side: Side
    qty: Qty
    entry: Money
    stop_loss: Money | None = None
    take_profit: Money | None = None
    order_type: str = "market"
    use_bracket: bool = True
    reason: str = ""
    # A limit entry's price: the worst it may fill at, which sizing and stop risk use.
    limit_price: Money | None = None


@event("catalyst.order.denied")
class OrderDenied(Event):
    signal_id: str
    symbol: str
    rule: str
    detail: str
    figures: dict[str, str] = Field(default_factory=dict)


@event("catalyst.risk.daily_loss_warning_issued")
class DailyLossWarningIssued(Event):
    session_date: date
    pnl: Money
    limit: Money
    pct_used: float
    open_positions: int = 0


@event("catalyst.risk.emergency_stop_triggered")
class EmergencyStopTriggered(Event):
    session_date: date
    pnl: Money
    limit: Money
    reason: str
    actions: dict[str, bool] = Field(default_factory=dict)
    # Who pulled the manual kill switch (the API token's name); None for the risk guard's.
    triggered_by: str | None = None


class ClosedPosition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    qty: Qty
    price: Money | None = None
    realized_pnl: Money | None = None


@event("catalyst.risk.emergency_stop_completed")
class EmergencyStopCompleted(Event):
    session_date: date
    orders_canceled: int
    positions_closed: tuple[ClosedPosition, ...] = ()
    realized_pnl_after: Money
    failures: tuple[str, ...] = ()


@event("catalyst.risk.emergency_stop_failed")
class EmergencyStopFailed(Event):
    session_date: date
    attempt: int
    error: str
    remaining_orders: int = 0
    remaining_positions: int = 0


@event("catalyst.risk.trading_resumed")
class TradingResumed(Event):
    resumed_by: str
    reason: str


# --- orders at the broker ------------------------------------------------------------------


@event("catalyst.order.submitted")
class OrderSubmitted(Event):
    order_id: str
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    qty: Qty
    order_type: str
    stop_loss: Money | None = None
    take_profit: Money | None = None
    legs: tuple[str, ...] = ()


@event("catalyst.order.rejected")
class OrderRejected(Event):
    order_id: str
    client_order_id: str
    symbol: str
    code: str
    message: str


@event("catalyst.order.partially_filled")
class OrderPartiallyFilled(Event):
    order_id: str
    client_order_id: str
    broker_order_id: str
    fill_id: str
    symbol: str
    side: Side
    qty: Qty  # this fill
    price: Money
    filled_qty: Qty  # cumulative
    fee: Money = Decimal(0)
    leg: str | None = None  # "stop_loss" / "take_profit" for bracket legs


@event("catalyst.order.filled")
class OrderFilled(Event):
    order_id: str
    client_order_id: str
    broker_order_id: str
    fill_id: str
    symbol: str
    side: Side
    qty: Qty  # this fill
    price: Money
    filled_qty: Qty  # cumulative, equals the order quantity
    fee: Money = Decimal(0)
    leg: str | None = None


@event("catalyst.order.canceled")
class OrderCanceled(Event):
    order_id: str
    client_order_id: str
    broker_order_id: str
    symbol: str
    reason: str = ""
    leg: str | None = None  # "stop_loss" / "take_profit" when a bracket leg is canceled


@event("catalyst.position.close_requested")
class PositionCloseRequested(Event):
    symbol: str
    reason: str  # "max_hold_time" / "market_close" / "manual"


@event("catalyst.position.closed")
class PositionClosed(Event):
    symbol: str
    qty: Qty
    reason: str
    broker_order_id: str = ""


@event("catalyst.broker.account_snapshotted")
class AccountSnapshotted(Event):
    """The broker's account as it reports it: at the session start, after every fill and
    every minute. The risk guard's buying power and equity come from the latest one."""

    broker: str
    cash: Money
    equity: Money
    buying_power: Money


@event("catalyst.broker.reconciliation_discrepancy_found")
class ReconciliationDiscrepancyFound(Event):
    kind: str  # "position" / "order"
    symbol: str
    broker: str
    recorded: str
    resolution: str


# --- projections ---------------------------------------------------------------------------


@event("catalyst.pnl.daily_changed")
class DailyPnLChanged(Event):
    session_date: date
    realized: Money
    unrealized: Money
    total: Money
    fees: Money = Decimal(0)
    intraday_low: Money
    by_symbol: dict[str, str] = Field(default_factory=dict)
    open_positions: int = 0


# --- alerts --------------------------------------------------------------------------------


@event("catalyst.alert.raised")
class AlertRaised(Event):
    """The alerter decided a person must hear about something; delivery is an adapter's job."""

    alert_id: str
    kind: str  # emergency_stop / daily_loss_warning / session_started / trades_executed / ...
    severity: Severity
    title: str
    context: dict[str, Any] = Field(default_factory=dict)


@event("catalyst.alert.sent")
class AlertSent(Event):
    alert_id: str
    kind: str
    severity: Severity
    channel: str
    recipients: tuple[str, ...]
    subject_line: str
    message_id: str


@event("catalyst.alert.suppressed")
class AlertSuppressed(Event):
    alert_id: str
    kind: str
    severity: Severity
    rule: str  # "cooldown" / "hourly_cap"


@event("catalyst.alert.failed")
class AlertFailed(Event):
    alert_id: str
    kind: str
    severity: Severity
    channel: str
    reason: str
    attempt: int = 1
    will_retry: bool = True


# --- config and operations -----------------------------------------------------------------


@event("catalyst.config.changed")
class ConfigChanged(Event):
    changes: dict[str, list[str]]  # dotted key -> [old, new] (secrets redacted)
    source: str
    # The whole effective config after the change (secrets redacted), so a verification
    # runs under exactly the settings that were in force; empty in logs written before it.
    config: dict[str, Any] = Field(default_factory=dict)


@event("catalyst.config.rejected")
class ConfigRejected(Event):
    source: str
    error: str


@event("catalyst.ops.handler_crash_looping")
class HandlerCrashLooping(Event):
    handler: str
    failures: int
    error: str


@event("catalyst.ops.run_started")
class RunStarted(Event):
    """A runtime began: the handler set and broker it wired and the config in force
    (secrets redacted), so `replay --verify` and `audit report` use what the run used."""

    run_id: str
    kind: str  # sim / backtest / paper / live
    broker: str
    handlers: tuple[str, ...]
    config: dict[str, Any] = Field(default_factory=dict)


@event("catalyst.ops.role_claimed")
class RoleClaimed(Event):
    """An instance took a stateful role (adapters/nats/lease.py, docs/services.md). Stored
    on `catalyst.ops.role_claimed.<role>`, the role's fence subject: its holder's decisions
    are stored only while this is the last event there. Stamped by the wall clock."""

    role: str
    instance: str
    lease_epoch: float  # the lease bucket's creation time (its revisions restart with it)
    lease_revision: int  # the revision of the lease key this instance created


# --- decoding ------------------------------------------------------------------------------


def decode_event(data: bytes | str | dict[str, Any]) -> Event:
    """Bytes/JSON/dict -> the registered event class. Errors name the offending field."""
    if isinstance(data, dict):
        obj = data
    else:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise EventDecodeError(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EventDecodeError("event must be a JSON object")
    type_name = obj.get("type")
    if not type_name:
        raise EventDecodeError("field 'type': missing")
    cls = REGISTRY.get(type_name)
    if cls is None:
        raise EventDecodeError(f"field 'type': unknown event type {type_name!r}")
    try:
        return cls.model_validate(obj)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise EventDecodeError(
            f"{type_name}: field '{where}': {first['msg']}"
            + (f" ({e.error_count()} errors)" if e.error_count() > 1 else "")
        ) from None


def json_schemas() -> dict[str, Any]:
    return {name: cls.model_json_schema() for name, cls in sorted(REGISTRY.items())}


# "es" held the eventsourcing recorders' events (removed, see docs/architecture.md); it stays
# in the list so a start does not edit the subjects of every existing record stream.
RECORD_SUBJECT_ROOTS = (
    "session", "scan", "signal", "order", "position", "risk", "pnl", "alert", "config",
    "broker", "ops", "es", "dlq",
)
