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
from adapters.broker.port import TradeUpdate
from domain.events import EmergencyStopCompleted
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
