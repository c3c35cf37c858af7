"""Response models of the read endpoints: the OpenAPI schema a client is generated from.

Money and quantities are decimal strings (as in the events); times are ISO 8601 in New York
time, as `catalyst status` prints them. Views that `catalyst status` also builds allow extra
fields, so a field added there shows up here without a schema break.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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
