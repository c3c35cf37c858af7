"""The broker port: what the executor needs from any broker, real or simulated.

Both implementations (Alpaca over alpaca-py, and the simulated broker) speak these types,
and `adapters.broker.translate` turns them into domain events, so the same scenario gives
the same events on either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from domain.errors import CatalystError
from domain.values import Side

OrderStatus = Literal[
    "new", "accepted", "pending_new", "held", "partially_filled", "filled", "canceled",
    "expired", "rejected", "replaced", "pending_cancel", "done_for_day",
]
OPEN_STATUSES = frozenset(
    {"new", "accepted", "pending_new", "held", "partially_filled", "pending_cancel"}
)


class Port(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderRequest(Port):
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    type: Literal["market", "limit"] = "market"
    limit_price: Decimal | None = None
    # A bracket when both are set: entry + stop-loss leg + take-profit leg (OCO).
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    time_in_force: Literal["day", "gtc"] = "day"

    @property
    def is_bracket(self) -> bool:
        return self.stop_loss is not None and self.take_profit is not None


class BrokerOrder(Port):
    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    type: str  # market / limit / stop
    status: str
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    order_class: str = "simple"  # simple / bracket
    legs: tuple[BrokerOrder, ...] = ()
    parent_id: str | None = None
    leg: Literal["stop_loss", "take_profit"] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class BrokerPosition(Port):
    symbol: str
    qty: Decimal  # negative for short
    avg_entry_price: Decimal
    current_price: Decimal | None = None
    unrealized_pl: Decimal | None = None


class BrokerAccount(Port):
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    status: str = "ACTIVE"


class TradeUpdate(Port):
    """One order-update from the broker (Alpaca's trade_updates vocabulary)."""

    event: Literal[
        "new", "fill", "partial_fill", "canceled", "expired", "rejected", "replaced",
        "done_for_day", "pending_new", "accepted", "pending_cancel",
    ]
    order: BrokerOrder
    timestamp: datetime
    execution_id: str | None = None
    price: Decimal | None = None  # this execution's price
    qty: Decimal | None = None  # this execution's quantity
    position_qty: Decimal | None = None
    fee: Decimal | None = None  # commission on this execution (the simulated broker's)
    reason: str | None = None  # why, when the broker says (a rejection's reason, say)


class BrokerRejection(CatalystError):
    """The broker said no (4xx): becomes OrderRejected with its code and message."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class BrokerUnavailable(CatalystError):
    """The broker could not be reached after retries (network, 5xx, 429)."""


class BrokerPort(Protocol):
    name: str  # "sim" / "paper" / "live"

    async def submit_order(self, request: OrderRequest) -> BrokerOrder: ...
    async def get_order(self, order_id: str) -> BrokerOrder: ...
    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None: ...
    async def list_open_orders(self) -> list[BrokerOrder]: ...
    async def list_orders_since(self, since: datetime) -> list[BrokerOrder]: ...
    async def cancel_order(self, order_id: str) -> None: ...
    async def cancel_all_orders(self) -> int: ...
    async def list_positions(self) -> list[BrokerPosition]: ...
    async def close_position(self, symbol: str) -> BrokerOrder: ...
    async def close_all_positions(self) -> list[BrokerOrder]: ...
    async def get_account(self) -> BrokerAccount: ...
    def trade_updates(self) -> AsyncIterator[TradeUpdate]: ...
    async def close(self) -> None: ...
