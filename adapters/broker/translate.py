"""Broker port objects -> domain events. Pure: same update in, same events (same ids) out.

Submission outcomes (`OrderSubmitted` / `OrderRejected` at submit time) come from the submit
call, in `adapters.execution`; here are only the broker's later trade updates.

Event ids derive from the broker fact, not from when we saw it: a fill's id is
uuid5(order id + cumulative filled quantity), so the same execution read from the stream, or
again after a reconnect, or from a REST order snapshot during reconciliation, gets the same
id and the event log drops the repeat.

Bracket legs are reported under their parent: `order_id` / `client_order_id` are the
parent's (ours), `broker_order_id` is the leg's, and `leg` says which one. `OrderRefs` is the
small lookup that knows our order id and the parent of each leg; the execution service fills
it at submit time, and `OrderRefs.record_submitted` rebuilds it from the log on start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from uuid import NAMESPACE_URL, UUID, uuid5

from adapters.broker.port import BrokerOrder, TradeUpdate
from domain.events import (
    Event,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
)

__all__ = ["OrderRefs", "Resolved", "broker_event_id", "trade_update_to_events"]

BROKER_NAMESPACE = uuid5(NAMESPACE_URL, "catalyst:broker")
_CANCELED = frozenset({"canceled", "expired"})


def _num(value: Decimal) -> str:
    """Canonical text of a quantity: 10, 10.0 and 1E+1 are the same fact."""
    text = format(value.normalize(), "f")
    return text


def broker_event_id(order_id: str, kind: str, key: str = "") -> UUID:
    return uuid5(BROKER_NAMESPACE, f"{order_id}:{kind}:{key}")


@dataclass(frozen=True, slots=True)
class Resolved:
    order_id: str  # ours (the parent's for a leg)
    client_order_id: str  # the parent's for a leg
    leg: str | None


@dataclass(slots=True)
class OrderRefs:
    """client_order_id -> our order id, and leg broker id -> parent client_order_id."""

    order_ids: dict[str, str] = field(default_factory=dict)
    client_ids: dict[str, str] = field(default_factory=dict)  # broker id -> client_order_id
    leg_parent: dict[str, str] = field(default_factory=dict)  # leg broker id -> parent broker id

    def remember(self, order: BrokerOrder, order_id: str | None = None) -> None:
        if order_id is not None:
            self.order_ids[order.client_order_id] = order_id
        self.client_ids[order.id] = order.client_order_id
        for leg in order.legs:
            self.leg_parent[leg.id] = order.id

    def record_submitted(self, event: OrderSubmitted) -> None:
        self.order_ids[event.client_order_id] = event.order_id
        self.client_ids[event.broker_order_id] = event.client_order_id
        for leg_id in event.legs:
            self.leg_parent[leg_id] = event.broker_order_id

    def resolve(self, order: BrokerOrder) -> Resolved:
        parent = order.parent_id or self.leg_parent.get(order.id)
        if parent is not None:
            client_id = self.client_ids.get(parent, order.client_order_id)
            leg = order.leg or _leg_from_type(order.type)
        else:
            client_id = order.client_order_id
            leg = None
        return Resolved(self.order_ids.get(client_id, client_id), client_id, leg)


def _leg_from_type(order_type: str) -> str | None:
    return {"stop": "stop_loss", "stop_limit": "stop_loss", "limit": "take_profit"}.get(
        order_type
    )


def trade_update_to_events(
    update: TradeUpdate,
    *,
    correlation_id: str,
    refs: OrderRefs | None = None,
    causation_id: UUID | None = None,
) -> list[Event]:
    """One trade update -> zero or one domain event (new/accepted/... give none)."""
    order = update.order
    ids = (refs or OrderRefs()).resolve(order)
    common = dict(
        occurred_at=update.timestamp,
        correlation_id=correlation_id,
        causation_id=causation_id,
        order_id=ids.order_id,
        client_order_id=ids.client_order_id,
        symbol=order.symbol,
    )
    kind = update.event
    if kind in ("fill", "partial_fill"):
        cumulative = order.filled_qty
        qty = update.qty if update.qty is not None else cumulative
        price = update.price if update.price is not None else order.filled_avg_price
        if price is None:
            raise ValueError(f"trade update {kind} for order {order.id}: no price")
        key = _num(cumulative)
        cls = OrderFilled if kind == "fill" else OrderPartiallyFilled
        return [
            cls(
                event_id=broker_event_id(order.id, "fill", key),
                type=cls.__name__,
                broker_order_id=order.id,
                fill_id=update.execution_id or f"{order.id}:{key}",
                side=order.side,
                qty=qty,
                price=price,
                filled_qty=cumulative,
                fee=update.fee or Decimal(0),
                leg=ids.leg,
                **common,  # type: ignore[arg-type]
            )
        ]
    if kind in _CANCELED:
        return [
            OrderCanceled(
                event_id=broker_event_id(order.id, "canceled"),
                type="OrderCanceled",
                broker_order_id=order.id,
                reason=kind,
                leg=ids.leg,
                **common,  # type: ignore[arg-type]
            )
        ]
    if kind == "rejected":
        return [
            OrderRejected(
                event_id=broker_event_id(order.id, "rejected"),
                type="OrderRejected",
                code="rejected",
                message=f"the broker rejected order {order.id} ({order.status})",
                **common,  # type: ignore[arg-type]
            )
        ]
    return []
