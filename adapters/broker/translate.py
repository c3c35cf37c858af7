"""Broker port objects -> domain events. Pure: same update in, same events (same ids) out.

Submission outcomes (`OrderSubmitted` / `OrderRejected` at submit time) come from the submit
call, in `adapters.broker.execution`; here are only the broker's later trade updates.

Event ids derive from the broker fact, not from when we saw it: a fill's id is
uuid5(order id + cumulative filled quantity), so the same execution read from the stream, or
again after a reconnect, or from a REST order snapshot during reconciliation, gets the same
id and the event log drops the repeat.

The order-update ledger (`FeedLedger`, `accept_update`, `catch_up`, `ledger_from_log`) is the
pure core of "broker updates and order snapshots + what is already recorded -> the fills to
record": per broker order, a fill is recorded only for cumulative quantity above what is
already recorded, priced by the difference of the cumulative averages. Whatever the stream
drops, repeats or reorders, and across restarts (the ledger is rebuilt from the log), each
broker execution is recorded once, at the broker's price (docs/execution.md, "The
order-update contract").

Bracket legs are reported under their parent: `order_id` / `client_order_id` are the
parent's (ours), `broker_order_id` is the leg's, and `leg` says which one. `OrderRefs` is the
small lookup that knows our order id and the parent of each leg; the execution service fills
it at submit time, and `OrderRefs.record_submitted` rebuilds it from the log on start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from uuid import NAMESPACE_URL, UUID, uuid5

from adapters.broker.port import BrokerOrder, TradeUpdate
from domain.events import (
    Event,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
)

__all__ = [
    "FeedLedger", "OrderRefs", "Resolved", "accept_update", "broker_event_id", "catch_up",
    "ledger_from_log", "missed_price", "trade_update_to_events",
]

BROKER_NAMESPACE = uuid5(NAMESPACE_URL, "catalyst:broker")
_CANCELED = frozenset({"canceled", "expired"})
_ZERO = Decimal(0)
FILL_EVENTS = frozenset({"fill", "partial_fill"})
BEFORE_FILL_EVENTS = frozenset({"pending_new", "accepted", "new"})
# An order in one of these states trades no more. `done_for_day` is not one of them: a GTC
# order works again the next day, so its later updates must still flow.
TERMINAL_EVENTS = frozenset({"canceled", "expired", "rejected", "replaced"})
# States a REST snapshot reports as an update of their own (fills are derived from the
# cumulative quantity instead).
SNAPSHOT_EVENTS = TERMINAL_EVENTS | {"done_for_day"}


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

    def expect(self, approval: OrderApproved) -> None:
        """Our order id for the approval's client_order_id, known before the order is sent:
        its fill may come over the stream before the broker answers the submit."""
        self.order_ids[approval.client_order_id] = approval.order_id

    def learn(self, order: BrokerOrder) -> None:
        """An update's order: its broker id and its legs, if it lists them (the stream may
        report a leg before the submit's answer gave us the legs' ids)."""
        if order.client_order_id in self.order_ids and order.legs:
            self.remember(order)

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
    # "market": the order a triggered stop leg was `replaced` by.
    return {"stop": "stop_loss", "stop_limit": "stop_loss", "trailing_stop": "stop_loss",
            "market": "stop_loss", "limit": "take_profit"}.get(order_type)


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
                message=f"the broker rejected order {order.id}: {update.reason}"
                if update.reason else f"the broker rejected order {order.id} ({order.status})",
                **common,  # type: ignore[arg-type]
            )
        ]
    return []


# --- the order-update ledger (pure) ----------------------------------------------------------


@dataclass
class FeedLedger:
    """What is already recorded (in the log, or yielded by this feed) per broker order.

    `fills`: broker order id -> cumulative (filled qty, average price) already recorded.
    `known`: broker ids of orders the log sent (entries and legs): a snapshot of them is
    always compared with `fills`, whatever its `updated_at` (a cursor never hides them).
    """

    fills: dict[str, tuple[Decimal, Decimal | None]] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)
    finished: set[str] = field(default_factory=set)
    known: set[str] = field(default_factory=set)


_AVERAGE_ROUNDING = Decimal("0.005")  # half a cent


def missed_price(prev_qty: Decimal, prev_avg: Decimal | None, qty: Decimal,
                 avg: Decimal | None) -> Decimal | None:
    """Average price of the executions between two cumulative (qty, avg) snapshots."""
    if avg is None:
        return None
    if prev_qty == 0 or prev_avg is None:
        return avg
    return (qty * avg - prev_qty * prev_avg) / (qty - prev_qty)


def accept_update(update: TradeUpdate, ledger: FeedLedger) -> TradeUpdate | None:
    """Record-or-drop one update, and note it in the ledger.

    A fill whose cumulative quantity is already recorded is a repeat (dropped); one that
    covers more than the recorded part is trimmed to the rest, at the price the cumulative
    averages imply. Late `new`/`accepted` for an order already further along are dropped;
    other non-fill updates are taken once per (order, kind).
    """
    order = update.order
    if update.event in FILL_EVENTS:
        prev_qty, prev_avg = ledger.fills.get(order.id, (_ZERO, None))
        if order.filled_qty <= prev_qty:
            return None
        delta = order.filled_qty - prev_qty
        implied = missed_price(prev_qty, prev_avg, order.filled_qty, order.filled_avg_price)
        # Alpaca documents `price` as "the average price per share at which the order was
        # filled": the execution's price on the wire we know, but a server that sends the
        # order's running average instead would misprice every fill after the first. A
        # `price` equal to that average, past the first fill, is taken for the average
        # when the two differ by more than a broker's rounding of an average could.
        if (update.qty != delta or update.price is None
                or (prev_qty > 0 and implied is not None
                    and update.price == order.filled_avg_price
                    and abs(implied - update.price) > _AVERAGE_ROUNDING)):
            update = update.model_copy(update={"qty": delta, "price": implied or update.price})
        ledger.fills[order.id] = (order.filled_qty, order.filled_avg_price)
        return update
    if update.event in BEFORE_FILL_EVENTS and (
        order.id in ledger.fills or order.id in ledger.finished
    ):
        return None  # late news of an order we already reported further along
    key = (order.id, update.event)
    if key in ledger.seen:
        return None
    ledger.seen.add(key)
    if update.event in TERMINAL_EVENTS:
        ledger.finished.add(order.id)
    return update


def catch_up(listing: Iterable[BrokerOrder], ledger: FeedLedger,
             since: datetime | None) -> list[TradeUpdate]:
    """What the stream would have said about a REST listing (entries with their legs).

    `since` is fixed for the whole listing: a member is compared with the ledger if it
    changed at or after `since`, or if the log knows its family. The caller advances its
    cursor only after the whole listing is processed (`listing_max_updated`): a cursor that
    moves while its own listing is walked skips whatever came earlier in time but later in
    the listing (a leg's fill behind its sibling's cancel, orders filling in reverse).
    """
    updates: list[TradeUpdate] = []
    for entry in listing:
        family_known = entry.id in ledger.known
        members = [
            order for order in (entry, *entry.legs)
            if family_known or order.id in ledger.known or since is None
            or order.updated_at is None or order.updated_at >= since
        ]
        # Within a family, fills before ends: a leg's fill is what cancels its sibling.
        for order in members:
            if order.filled_qty > ledger.fills.get(order.id, (_ZERO, None))[0]:
                event = "fill" if order.status == "filled" else "partial_fill"
                accepted = accept_update(
                    TradeUpdate(event=event, order=order, timestamp=_when(order, since)),
                    ledger)
                if accepted is not None:
                    updates.append(accepted)
        for order in members:
            if order.status in SNAPSHOT_EVENTS:
                accepted = accept_update(
                    TradeUpdate(event=order.status, order=order,
                                timestamp=_when(order, since)), ledger)
                if accepted is not None:
                    updates.append(accepted)
    return updates


def _when(order: BrokerOrder, since: datetime | None) -> datetime:
    return order.updated_at or since or datetime.min.replace(tzinfo=UTC)


def listing_max_updated(listing: Iterable[BrokerOrder], since: datetime) -> datetime:
    """Where a cursor may move once a listing is fully processed: its latest update."""
    latest = since
    for entry in listing:
        for order in (entry, *entry.legs):
            if order.updated_at is not None and order.updated_at > latest:
                latest = order.updated_at
    return latest


def ledger_from_log(events: Iterable[Event]) -> FeedLedger:
    """The ledger a restart starts from: each broker order's recorded cumulative quantity
    and average price (from its fill events), and the broker ids the log sent."""
    qty: dict[str, Decimal] = {}
    value: dict[str, Decimal] = {}
    ledger = FeedLedger()
    for ev in events:
        if isinstance(ev, OrderSubmitted):
            ledger.known.add(ev.broker_order_id)
            ledger.known.update(ev.legs)
        elif isinstance(ev, OrderFilled | OrderPartiallyFilled) and ev.broker_order_id:
            bid = ev.broker_order_id
            qty[bid] = qty.get(bid, _ZERO) + ev.qty
            value[bid] = value.get(bid, _ZERO) + ev.qty * ev.price
        elif isinstance(ev, OrderCanceled) and ev.broker_order_id:
            ledger.finished.add(ev.broker_order_id)
    for bid, total in qty.items():
        # What the log holds is what its fills add up to (their cumulative field agrees
        # unless a fill was ever recorded twice; the sum is what the positions counted).
        ledger.fills[bid] = (total, value[bid] / total if total else None)
    return ledger
