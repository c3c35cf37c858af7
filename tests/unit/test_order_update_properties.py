"""The order-update contract as a property (issue 14): whatever the broker's update stream
drops, repeats or reorders, however often the feed reconnects (a REST listing behind the
cursor) or the process restarts (the ledger rebuilt from the log), the fills recorded equal
the broker's fills: each execution counted once, the quantities summing to the broker's
filled quantity, the value to the broker's (so the price is the broker's).

It runs the pure core the Alpaca adapter and the runtime use: `accept_update` (live),
`catch_up` + `listing_max_updated` (the backfill and its cursor), `ledger_from_log` (a
restart) and `trade_update_to_events` (what is recorded)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.broker.port import BrokerOrder, TradeUpdate
from adapters.broker.translate import (
    FeedLedger,
    OrderRefs,
    accept_update,
    catch_up,
    ledger_from_log,
    listing_max_updated,
    trade_update_to_events,
)
from domain.events import Event, OrderFilled, OrderPartiallyFilled, OrderSubmitted
from domain.values import Side

T0 = datetime(2026, 7, 6, 14, 0, tzinfo=UTC)
SLACK = timedelta(seconds=1)  # the adapter's _CURSOR_SLACK
ORDER_QTY = Decimal(10)
PROPS = hsettings(max_examples=300, deadline=None, database=None)


@dataclass
class Broker:
    """The broker's truth: executions per order, and every live message it sent."""

    orders: int
    executions: dict[str, list[tuple[Decimal, Decimal, datetime]]] = field(default_factory=dict)
    wire: list[TradeUpdate] = field(default_factory=list)
    clock: int = 0

    def now(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(milliseconds=self.clock)

    def ids(self) -> list[str]:
        return [f"b{i}" for i in range(self.orders)]

    def filled(self, oid: str) -> Decimal:
        return sum((q for q, _, _ in self.executions.get(oid, [])), Decimal(0))

    def value(self, oid: str) -> Decimal:
        return sum((q * p for q, p, _ in self.executions.get(oid, [])), Decimal(0))

    def snapshot(self, oid: str) -> BrokerOrder:
        filled = self.filled(oid)
        done = self.executions.get(oid, [])
        return BrokerOrder(
            id=oid, client_order_id=f"c-{oid}", symbol="AAPL", side=Side.BUY,
            qty=ORDER_QTY, type="limit",
            status="filled" if filled == ORDER_QTY else "partially_filled" if filled else "new",
            filled_qty=filled, filled_avg_price=self.value(oid) / filled if filled else None,
            created_at=T0, updated_at=done[-1][2] if done else T0,
        )

    def execute(self, index: int, qty: int, cents: int) -> None:
        oid = self.ids()[index % self.orders]
        q = min(Decimal(qty), ORDER_QTY - self.filled(oid))
        if q <= 0:
            return
        price = Decimal(cents) / 100
        self.executions.setdefault(oid, []).append((q, price, self.now()))
        snap = self.snapshot(oid)
        self.wire.append(TradeUpdate(
            event="fill" if snap.status == "filled" else "partial_fill", order=snap,
            timestamp=snap.updated_at, execution_id=f"x{len(self.wire)}", price=price, qty=q))


@dataclass
class Runtime:
    """The recording side: a feed (ledger + cursor) and the log it records into."""

    broker: Broker
    known: bool = True
    refs: OrderRefs = field(default_factory=OrderRefs)
    log: list[Event] = field(default_factory=list)
    ledger: FeedLedger = field(default_factory=FeedLedger)
    since: datetime = T0

    def __post_init__(self) -> None:
        for oid in self.broker.ids():  # the orders were sent (and recorded) by us
            submitted = OrderSubmitted(
                event_id=_uuid(f"sub:{oid}"), type="OrderSubmitted", occurred_at=T0,
                correlation_id="p", order_id=f"ord-{oid}", client_order_id=f"c-{oid}",
                broker_order_id=oid, symbol="AAPL", side=Side.BUY, qty=ORDER_QTY,
                order_type="limit")
            self.log.append(submitted)
            self.refs.record_submitted(submitted)
        self.restart(self.known)

    def record(self, updates: list[TradeUpdate]) -> None:
        for u in updates:
            self.log += trade_update_to_events(u, correlation_id="p", refs=self.refs)

    def deliver(self, k: int) -> None:
        if self.broker.wire:
            accepted = accept_update(self.broker.wire[k % len(self.broker.wire)], self.ledger)
            self.record([accepted] if accepted is not None else [])

    def reconnect(self) -> None:
        listing = [self.broker.snapshot(oid) for oid in self.broker.ids()]
        self.record(catch_up(listing, self.ledger, self.since - SLACK))
        self.since = max(self.since, listing_max_updated(listing, self.since))

    def restart(self, known: bool = True) -> None:
        """A new process: the ledger and the cursor come from the log (as `Services` does);
        `known=False` models a feed that starts without the log's list of sent orders."""
        self.ledger = ledger_from_log(self.log)
        if not known:
            self.ledger.known.clear()
        times = [e.occurred_at for e in self.log if isinstance(e, FILLS)]
        self.since = max(times, default=T0)


FILLS = (OrderFilled, OrderPartiallyFilled)


def _uuid(label: str):  # type: ignore[no-untyped-def]
    from uuid import NAMESPACE_URL, uuid5

    return uuid5(NAMESPACE_URL, label)


step = st.one_of(
    st.tuples(st.just("exec"), st.integers(0, 5), st.integers(1, 6), st.integers(9000, 11000)),
    st.tuples(st.just("deliver"), st.integers(0, 60)),
    st.tuples(st.just("deliver_last")),
    st.tuples(st.just("reconnect")),
    st.tuples(st.just("restart"), st.booleans()),
)


@PROPS
@given(orders=st.integers(1, 3), known=st.booleans(), steps=st.lists(step, max_size=40))
def test_recorded_fills_equal_the_brokers_fills_each_once_at_its_price(
    orders: int, known: bool, steps: list[tuple]  # type: ignore[type-arg]
) -> None:
    broker = Broker(orders)
    runtime = Runtime(broker, known)
    for s in steps:
        match s:
            case ("exec", index, qty, cents):
                broker.execute(index, qty, cents)
            case ("deliver", k):
                runtime.deliver(k)
            case ("deliver_last",):
                runtime.deliver(-1)
            case ("reconnect",):
                runtime.reconnect()
            case ("restart", known):
                runtime.restart(known)
    runtime.reconnect()  # the contract: after the last (re)connect the log has caught up

    fills = [e for e in runtime.log if isinstance(e, FILLS)]
    assert len({e.event_id for e in fills}) == len(fills)  # each recorded once
    for oid in broker.ids():
        mine = [e for e in fills if e.broker_order_id == oid]
        assert sum((e.qty for e in mine), Decimal(0)) == broker.filled(oid)
        assert len(mine) <= len(broker.executions.get(oid, []))
        recorded_value = sum((e.qty * e.price for e in mine), Decimal(0))
        assert abs(recorded_value - broker.value(oid)) < Decimal("1e-12")
        if mine:  # the cumulative quantity is the broker's, in order
            assert [e.filled_qty for e in mine] == sorted(e.filled_qty for e in mine)
            assert mine[-1].filled_qty == broker.filled(oid)
            assert isinstance(mine[-1], OrderFilled) == (broker.filled(oid) == ORDER_QTY)
