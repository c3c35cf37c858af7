"""Issue 14: order updates you can trust with money, against the fake Alpaca (HTTP + WS)
through the real alpaca-py clients.

The adapter's `trade_updates()` must yield every fill once, at the broker's price, whatever
the stream drops: a bracket leg filling while the socket is down (closed cleanly or cut),
orders filling in the reverse of their submission order, and Alpaca's states beyond the
happy path (partial fill then cancel, expired, done_for_day, replaced, rejected)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.broker.alpaca import AlpacaBroker
from adapters.broker.port import BrokerOrder, OrderRequest, TradeUpdate
from adapters.broker.translate import OrderRefs, trade_update_to_events
from domain.events import (
    EmergencyStopCompleted,
    Event,
    OrderCanceled,
    OrderRejected,
    OrderSubmitted,
)
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_alpaca_broker import (
    a_marker,
    buy,
    emergency_command,
    execution,
    feed_of,
    is_,
)

pytestmark = pytest.mark.integration

FILLS = ("fill", "partial_fill")


def fills_of(seen: list[TradeUpdate]) -> list[tuple[str, str | None, Decimal | None,
                                                      Decimal | None]]:
    return [(u.order.id, u.order.leg, u.qty, u.price) for u in seen if u.event in FILLS]


@pytest.mark.parametrize("clean", [True, False], ids=["clean-close", "tcp-abort"])
async def test_a_stop_loss_filling_during_an_outage_is_yielded_once_at_its_price(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker, clean: bool
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        entry = await alpaca_broker.submit_order(
            buy("bracket-1", stop_loss=Decimal("94"), take_profit=Decimal("110")))
        await fake_alpaca.fill(entry.id, "100")
        seen = await feed.until(is_("fill", entry.id))
        stop = next(leg for leg in fake_alpaca.order(entry.id).legs if leg.type == "stop")
        target = next(leg for leg in fake_alpaca.order(entry.id).legs if leg.type == "limit")

        listens = fake_alpaca.listen_count
        async with fake_alpaca.stream_outage(clean=clean):
            # The stop fills; its sibling's cancel is stamped a microsecond later and comes
            # first in the entry's nested listing.
            await fake_alpaca.fill(stop.id, "94")
        await fake_alpaca.wait_for_listen_count(listens + 1)
        seen += await feed.until(is_("canceled", target.id))
        seen += await feed.until(await a_marker(alpaca_broker))

    assert fills_of(seen) == [
        (entry.id, None, Decimal(10), Decimal(100)),
        (stop.id, "stop_loss", Decimal(10), Decimal(94)),
    ]


async def test_two_orders_filling_in_reverse_order_during_an_outage_are_both_yielded(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        first = await alpaca_broker.submit_order(buy("rev-1", type="limit",
                                                     limit_price=Decimal("50")))
        second = await alpaca_broker.submit_order(buy("rev-2", type="limit",
                                                      limit_price=Decimal("51")))
        await feed.until(is_("new", second.id))
        listens = fake_alpaca.listen_count
        async with fake_alpaca.stream_outage():
            await fake_alpaca.fill(second.id, "51")  # the later order fills first
            await fake_alpaca.fill(first.id, "50")
        await fake_alpaca.wait_for_listen_count(listens + 1)
        seen = await feed.until(await a_marker(alpaca_broker))

    assert sorted(fills_of(seen)) == sorted([
        (first.id, None, Decimal(10), Decimal(50)),
        (second.id, None, Decimal(10), Decimal(51)),
    ])



async def test_a_legs_cancel_the_stream_never_sends_is_read_over_rest_after_the_fill(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.mute.add("canceled")  # the stop's OCO cancel never comes on the stream
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        entry = await alpaca_broker.submit_order(
            buy("silent", stop_loss=Decimal("94"), take_profit=Decimal("110")))
        await fake_alpaca.fill(entry.id, "100")
        target = next(leg for leg in fake_alpaca.order(entry.id).legs if leg.type == "limit")
        stop = next(leg for leg in fake_alpaca.order(entry.id).legs if leg.type == "stop")
        await fake_alpaca.fill(target.id, "110")
        seen = await feed.until(is_("canceled", stop.id))

    assert [(u.event, u.order.leg) for u in seen if u.event in (*FILLS, "canceled")] == [
        ("fill", None), ("fill", "take_profit"), ("canceled", "stop_loss")]


# --- the emergency stop: a close that executed although its answer was an error -------------


async def test_a_close_answered_500_after_it_executed_is_in_the_emergency_summary(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    order = await alpaca_broker.submit_order(buy("em-500"))
    await fake_alpaca.fill(order.id, "100")
    fake_alpaca.auto_fill_market = True
    fake_alpaca.set_price("AAPL", "94")
    # Alpaca closes the position (the market order fills at 94), then the answer is a 500;
    # our retry meets 404 "position does not exist".
    fake_alpaca.fail_next(1, 500, method="DELETE", path="/v2/positions/AAPL", after=True)
    events = await execution(alpaca_broker).execute(emergency_command("em-500"))

    assert [e.type for e in events] == ["EmergencyStopCompleted"]
    done = events[0]
    assert isinstance(done, EmergencyStopCompleted)
    assert [(p.symbol, p.qty, p.price, p.realized_pnl) for p in done.positions_closed] == [
        ("AAPL", Decimal(10), Decimal(94), Decimal(-60))
    ]
    assert fake_alpaca.positions == {}


# --- Alpaca's order states beyond the happy path ----------------------------------------------


def events_of(seen: list[TradeUpdate], *submitted: BrokerOrder) -> list[Event]:
    refs = OrderRefs()  # as the execution service knows them: our orders and their legs
    for order in submitted:
        refs.remember(order, f"ord-{order.client_order_id}")
    out: list[Event] = []
    for u in seen:
        out += trade_update_to_events(u, correlation_id="test", refs=refs)
    return out


def limit_buy(cid: str, **kwargs: object) -> OrderRequest:
    return buy(cid, type="limit", limit_price=Decimal("50"), **kwargs)


async def test_partially_filled_then_canceled_records_the_part_and_the_cancel(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        order = await alpaca_broker.submit_order(limit_buy("part-cancel"))
        await fake_alpaca.fill(order.id, "50", qty="4")
        await alpaca_broker.cancel_order(order.id)
        seen = await feed.until(is_("canceled", order.id))

    events = [e for e in events_of(seen) if not isinstance(e, OrderSubmitted)]
    assert [(type(e).__name__, getattr(e, "qty", None), getattr(e, "reason", None))
            for e in events] == [("OrderPartiallyFilled", Decimal(4), None),
                                 ("OrderCanceled", None, "canceled")]


async def test_expired_after_a_partial_fill_is_a_cancel_with_its_reason(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        order = await alpaca_broker.submit_order(limit_buy("expire"))
        await fake_alpaca.fill(order.id, "50", qty="3")
        await fake_alpaca.expire(order.id)
        seen = await feed.until(is_("expired", order.id))

    events = events_of(seen)
    assert [type(e).__name__ for e in events] == ["OrderPartiallyFilled", "OrderCanceled"]
    assert isinstance(events[1], OrderCanceled) and events[1].reason == "expired"


async def test_done_for_day_records_nothing_and_later_states_still_flow(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        order = await alpaca_broker.submit_order(limit_buy("dfd", time_in_force="gtc"))
        await fake_alpaca.fill(order.id, "50", qty="2")
        await fake_alpaca.done_for_day(order.id)
        seen = await feed.until(is_("done_for_day", order.id))
        # Not an end: a GTC order works again the next day (here it expires later).
        await fake_alpaca.expire(order.id)
        seen += await feed.until(is_("expired", order.id))

    assert [type(e).__name__ for e in events_of(seen)] == ["OrderPartiallyFilled",
                                                           "OrderCanceled"]


async def test_a_stop_leg_reported_replaced_then_filling_is_the_stop_loss_fill(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        entry = await alpaca_broker.submit_order(
            buy("replaced", stop_loss=Decimal("94"), take_profit=Decimal("110")))
        await fake_alpaca.fill(entry.id, "100")
        stop = next(leg for leg in fake_alpaca.order(entry.id).legs if leg.type == "stop")
        target = next(leg for leg in fake_alpaca.order(entry.id).legs if leg.type == "limit")
        new_stop = await fake_alpaca.trigger_stop_replaced(stop.id)  # the stop triggers
        await fake_alpaca.fill(new_stop.id, "93.50")
        seen = await feed.until(is_("canceled", target.id))
        seen += await feed.until(await a_marker(alpaca_broker))

    events = [e for e in events_of(seen, entry) if e.order_id == "ord-replaced"]
    assert [(type(e).__name__, getattr(e, "leg", None), getattr(e, "price", None))
            for e in events] == [
        ("OrderFilled", None, Decimal(100)),
        ("OrderFilled", "stop_loss", Decimal("93.50")),  # not a cancel of the stop
        ("OrderCanceled", "take_profit", None),
    ]


async def test_rejected_carries_the_brokers_reason_into_order_rejected(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        order = await alpaca_broker.submit_order(limit_buy("rejected"))
        await fake_alpaca.reject(order.id, "insufficient day trading buying power")
        seen = await feed.until(is_("rejected", order.id))

    rejected = [e for e in events_of(seen) if isinstance(e, OrderRejected)]
    assert len(rejected) == 1
    assert "insufficient day trading buying power" in rejected[0].message


async def test_a_server_streaming_the_running_average_as_price_records_each_fill_at_its_own(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    """Alpaca documents a fill's `price` as "the average price per share at which the order
    was filled"; a server that sends the order's running average there must not make the
    second fill 6 @ 101.20 (it was 6 @ 102: the broker's cash says 1,012, not 1,007.20)."""
    fake_alpaca.price_is_average = True
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        order = await alpaca_broker.submit_order(buy("avg-price"))
        await fake_alpaca.fill(order.id, "100", qty="4")
        await fake_alpaca.fill(order.id, "102")
        seen = await feed.until(is_("fill", order.id))

    assert [(q, p) for _, _, q, p in fills_of(seen)] == [(Decimal(4), Decimal(100)),
                                                         (Decimal(6), Decimal(102))]


async def test_a_listing_from_a_server_paging_below_500_is_read_whole(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.page_cap = 7  # Alpaca's is 500; a compatible server may cut pages shorter
    sent = {(await alpaca_broker.submit_order(limit_buy(f"page-{i}"))).id for i in range(20)}

    assert {o.id for o in await alpaca_broker.list_open_orders()} == sent
