"""Request and response models of every endpoint: the OpenAPI schema a client is made from.

Money and quantities are decimal strings (as in the events); times are ISO 8601 in New York
time, as `catalyst status` prints them. Views that `catalyst status` also builds allow extra
fields, so a field added there shows up here without a schema break.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Leg(BaseModel):
    leg: str  # stop_loss / take_profit
    status: str  # pending (entry not filled), open, filled, canceled
    price: str | None = None
    fill_price: str | None = None


class Order(BaseModel):
    client_order_id: str
    symbol: str
    side: str
    qty: str
    status: str  # approved, submitted, partially_filled, filled, canceled, rejected
    created_at: str | None
    entry: str | None = None
    filled_qty: str = "0"
    avg_price: str | None = None
    legs: list[Leg] = []


class Position(BaseModel):
    symbol: str
    qty: str  # signed: > 0 long, < 0 short
    side: str
    avg_entry_price: str | None
    realized_pnl: str
    fees: str
    opened_at: str | None
    last_fill_price: str
    last_fill_at: str
    mark: str | None  # the last 1-minute close (else the last fill price)
    unrealized_pnl: str | None
    day_pnl: str | None  # realized + unrealized on the session date, from DailyPnLChanged


class Pnl(BaseModel):
    session_date: str | None
    total: str
    realized: str
    unrealized: str
    fees: str
    intraday_low: str
    by_symbol: dict[str, str]
    loss_limit: str | None  # negative: the total at which the emergency stop triggers
    warning_line: str | None
    points: list[tuple[str, str]]  # ("HH:MM" New York, total at the end of that minute)


class Alert(Open):
    alert_id: str
    at: str | None
    kind: str
    severity: str
    title: str
    status: str  # pending, pending (retrying), sent, failed, suppressed
    channel: str | None = None


class Fill(BaseModel):
    at: str | None
    symbol: str
    side: str
    qty: str | None
    price: str | None
    leg: str | None
    client_order_id: str


class Trade(BaseModel):
    symbol: str
    opened_at: str | None
    closed_at: str | None
    pnl: str


class Fills(BaseModel):
    session_date: str | None
    fills: list[Fill]
    trades: list[Trade]


class LoggedEvent(BaseModel):
    seq: int
    subject: str
    type: str
    occurred_at: str
    event: dict[str, Any]  # the event as JSON (`catalyst events schema TYPE`)


class Trading(Open):
    state: str  # active / halted
    since: str | None = None
    reason: str | None = None
    require_manual_restart: bool | None = None
    last_resumed: dict[str, Any] | None = None


class Status(Open):
    as_of: str | None
    events_read: int
    run: dict[str, Any] | None
    session: dict[str, Any]
    trading: Trading
    positions: list[dict[str, Any]]
    pnl: dict[str, Any] | None
    log: dict[str, Any]
    consumers: list[dict[str, Any]] | None = None  # durable consumers and their lag
    api: dict[str, Any] | None = None


class Dashboard(Open):
    version: int
    as_of: str | None
    run: dict[str, Any] | None
    session: dict[str, Any]
    trading: Trading
    pnl: Pnl
    positions: list[Position]
    orders: list[Order]
    fills: list[Fill]
    trades: list[Trade]
    alerts: list[Alert]


# --- the commands --------------------------------------------------------------------------


class StartRequest(BaseModel):
    """The original's body ({"mode": "normal", "max_positions": 1}) is accepted; the
    session's mode and limits come from the configuration, as they did there."""

    model_config = ConfigDict(extra="allow")
    mode: str | None = None
    max_positions: int | None = None
    session_date: date | None = Field(None, description="New York session date (default: "
                                      "today's, or the simulated day's)")


class StartResponse(BaseModel):
    status: str = "accepted"
    event_id: UUID
    event_type: str = "SessionStartRequested"
    session_date: date
    mode: str
    requested_by: str
    duplicate: bool = Field(False, description="true when this Idempotency-Key was already "
                            "used for this session date: nothing new was published")
    message: str


class ResumeRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why trading may resume "
                        "(recorded in TradingResumed)")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("say why trading may resume")
        return v.strip()


class ResumeResponse(BaseModel):
    status: str = "resumed"
    event_id: UUID
    event_type: str = "TradingResumed"
    resumed_by: str
    reason: str
    was_halted: bool


class StopResponse(BaseModel):
    status: str = "triggered"
    event_id: UUID
    event_type: str = "EmergencyStopTriggered"
    session_date: date
    pnl: Decimal
    reason: str = "manual"
    triggered_by: str
    actions: dict[str, bool]


class Health(BaseModel):
    ok: bool
