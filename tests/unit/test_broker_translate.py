"""Broker trade updates -> domain events: deterministic ids, legs under their parent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from uuid import uuid4

from adapters.broker.port import BrokerOrder, TradeUpdate
from adapters.broker.translate import OrderRefs, trade_update_to_events
from domain.events import (
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
)
from domain.values import Side

TS = datetime(2025, 1, 6, 15, 0, tzinfo=UTC)


def order(id_: str = "b1", filled: str = "0", **kw: object) -> BrokerOrder:
    fields: dict[str, object] = dict(
        id=id_, client_order_id="coid-1", symbol="AAPL", side=Side.BUY, qty=D(10),
        type="market", status="new", filled_qty=D(filled),
    )
    fields.update(kw)
    return BrokerOrder(**fields)  # type: ignore[arg-type]


def update(event: str, o: BrokerOrder, **kw: object) -> TradeUpdate:
    return TradeUpdate(event=event, order=o, timestamp=TS, **kw)  # type: ignore[arg-type]


def test_a_fill_becomes_order_filled_with_an_id_derived_from_the_broker_fact() -> None:
    up = update("fill", order(filled="10", status="filled"), execution_id="x1", price=D(100),
                qty=D(10), fee=D("0.1"))
    refs = OrderRefs(order_ids={"coid-1": "ord-1"})
    [ev] = trade_update_to_events(up, correlation_id="s1", refs=refs)
    assert isinstance(ev, OrderFilled)
    assert (ev.order_id, ev.client_order_id, ev.broker_order_id, ev.fill_id) == (
        "ord-1", "coid-1", "b1", "x1"
    )
    assert (ev.qty, ev.price, ev.filled_qty, ev.fee, ev.leg) == (D(10), D(100), D(10),
                                                                D("0.1"), None)
    assert (ev.occurred_at, ev.correlation_id) == (TS, "s1")
    # Seen again (reconnect) -- or rebuilt from a REST snapshot without an execution id and
    # with "10.00" for 10 -- it is the same event id.
    again = update("fill", order(filled="10.00", status="filled", filled_avg_price=D(100)))
    [ev2] = trade_update_to_events(again, correlation_id="s1", refs=refs)
    assert ev2.event_id == ev.event_id
    assert (ev2.qty, ev2.price) == (D("10.00"), D(100))


def test_partial_fills_each_have_their_own_id() -> None:
    a = update("partial_fill", order(filled="4"), price=D(100), qty=D(4))
    b = update("partial_fill", order(filled="7"), price=D(101), qty=D(3))
    [ea] = trade_update_to_events(a, correlation_id="s1")
    [eb] = trade_update_to_events(b, correlation_id="s1")
    assert isinstance(ea, OrderPartiallyFilled) and isinstance(eb, OrderPartiallyFilled)
    assert ea.event_id != eb.event_id
    assert (eb.qty, eb.filled_qty, eb.order_id) == (D(3), D(7), "coid-1")  # no refs: coid


def test_a_leg_is_reported_under_its_parent() -> None:
    leg = order("leg-sl", filled="10", side=Side.SELL, type="stop", stop_price=D(95),
                status="filled", client_order_id="leg-coid", parent_id="b1", leg="stop_loss")
    refs = OrderRefs()
    refs.remember(order(legs=(leg,)), "ord-1")
    [ev] = trade_update_to_events(update("fill", leg, price=D(95), qty=D(10)),
                                  correlation_id="s1", refs=refs)
    assert (ev.order_id, ev.client_order_id, ev.broker_order_id, ev.leg, ev.side) == (  # type: ignore[attr-defined]
        "ord-1", "coid-1", "leg-sl", "stop_loss", Side.SELL
    )


def test_refs_rebuilt_from_the_log_resolve_legs_without_port_hints() -> None:
    submitted = OrderSubmitted(
        event_id=uuid4(), type="OrderSubmitted", occurred_at=TS, correlation_id="s1",
        order_id="ord-1", client_order_id="coid-1", broker_order_id="b1", symbol="AAPL",
        side=Side.BUY, qty=D(10), order_type="market", legs=("leg-sl", "leg-tp"),
    )
    refs = OrderRefs()
    refs.record_submitted(submitted)
    tp = order("leg-tp", side=Side.SELL, type="limit", limit_price=D(110), status="canceled",
               client_order_id="leg-coid-2")
    [ev] = trade_update_to_events(update("canceled", tp), correlation_id="s1", refs=refs)
    assert isinstance(ev, OrderCanceled)
    assert (ev.order_id, ev.client_order_id, ev.leg, ev.reason) == (
        "ord-1", "coid-1", "take_profit", "canceled"
    )


def test_expired_rejected_and_informational_updates() -> None:
    [exp] = trade_update_to_events(update("expired", order(status="expired")),
                                   correlation_id="s1")
    assert isinstance(exp, OrderCanceled) and exp.reason == "expired"
    [rej] = trade_update_to_events(update("rejected", order(status="rejected")),
                                   correlation_id="s1")
    assert isinstance(rej, OrderRejected) and rej.code == "rejected"
    for kind in ("new", "accepted", "pending_new", "replaced", "done_for_day"):
        assert trade_update_to_events(update(kind, order()), correlation_id="s1") == []
