"""The simulated broker's fill rules, one hand-made bar at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from adapters.broker.port import BrokerRejection, OrderRequest, TradeUpdate
from adapters.broker.sim import SimEngine, SimulatedBroker
from config.settings import SimBroker
from domain.values import Bar, Side

T0 = datetime(2025, 1, 6, 14, 30, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def bar(minute: int, o: str, h: str, lo: str, c: str, symbol: str = "AAPL") -> Bar:
    return Bar(
        symbol=symbol, timestamp=at(minute), open=D(o), high=D(h), low=D(lo), close=D(c),
        volume=1000,
    )


def flat(minute: int, price: str, symbol: str = "AAPL") -> Bar:
    return bar(minute, price, price, price, price, symbol)


def buy(coid: str = "c1", qty: str = "10", symbol: str = "AAPL", **kw: object) -> OrderRequest:
    return OrderRequest(client_order_id=coid, symbol=symbol, side=Side.BUY, qty=D(qty), **kw)


def bracket(coid: str = "c1", qty: str = "10", sl: str = "95", tp: str = "110",
            side: Side = Side.BUY) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid, symbol="AAPL", side=side, qty=D(qty),
        stop_loss=D(sl), take_profit=D(tp),
    )


def fills(updates: list[TradeUpdate]) -> list[tuple[str | None, D | None]]:
    return [(u.order.leg, u.price) for u in updates if u.event == "fill"]


def engine_with_long_bracket(sl: str = "95", tp: str = "110") -> SimEngine:
    """Long 10 AAPL at 100 with working stop and target legs."""
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    eng.submit(bracket(sl=sl, tp=tp))
    assert fills(eng.on_bar(flat(1, "100"))) == [(None, D("100"))]
    return eng


# --- market orders and time --------------------------------------------------------------


def test_market_order_fills_at_the_open_of_the_next_bar_after_its_submit_time() -> None:
    eng = SimEngine()
    eng.on_bar(bar(0, "100", "101", "99", "100.5"))
    order = eng.submit(buy())
    assert order.status == "new" and order.created_at == at(0)

    # Another symbol's bar at the same minute, then the order's own bar at minute 0 again:
    # neither is strictly after the submit time.
    assert eng.on_bar(flat(0, "50", symbol="MSFT")) == []
    assert eng.on_bar(bar(0, "100", "101", "99", "100.5")) == []

    updates = eng.on_bar(bar(1, "101", "102", "100", "101.5"))
    assert fills(updates) == [(None, D("101"))]
    assert updates[0].qty == D(10) and updates[0].position_qty == D(10)
    assert updates[0].timestamp == at(1)
    assert eng.get(order.id).status == "filled"


def test_an_explicit_now_is_the_submit_time() -> None:
    eng = SimEngine()
    eng.submit(buy(), now=at(5))
    assert eng.on_bar(flat(4, "99")) == []
    assert eng.on_bar(flat(5, "100")) == []
    assert fills(eng.on_bar(flat(6, "101"))) == [(None, D("101"))]


def test_limit_entry_fills_at_its_limit_or_at_a_better_open() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    eng.submit(buy("a", type="limit", limit_price=D("98")))
    eng.submit(buy("b", type="limit", limit_price=D("99")))
    assert eng.on_bar(bar(1, "100", "100.5", "98.5", "99")) != []  # b at 99, a not yet
    assert eng.get_by_client_id("a").status == "new"  # type: ignore[union-attr]
    assert eng.get_by_client_id("b").filled_avg_price == D("99")  # type: ignore[union-attr]
    assert fills(eng.on_bar(bar(2, "97", "98", "96", "97"))) == [(None, D("97"))]  # gap down


# --- brackets ------------------------------------------------------------------------------


def test_bracket_legs_are_held_until_the_entry_fills_then_work() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    order = eng.submit(bracket())
    assert order.order_class == "bracket"
    assert [(leg.leg, leg.status) for leg in order.legs] == [
        ("stop_loss", "held"), ("take_profit", "held")
    ]
    assert all(leg.parent_id == order.id for leg in order.legs)
    eng.on_bar(bar(1, "100", "100", "100", "100"))
    legs = eng.get(order.id).legs
    assert [(leg.status, leg.stop_price, leg.limit_price) for leg in legs] == [
        ("new", D("95"), None), ("new", None, D("110"))
    ]


def test_stop_leg_fills_at_the_stop_when_the_low_reaches_it() -> None:
    eng = engine_with_long_bracket()
    assert eng.on_bar(bar(2, "99", "100", "95.01", "96")) == []
    updates = eng.on_bar(bar(3, "96", "97", "94", "94.5"))
    assert fills(updates) == [("stop_loss", D("95"))]
    assert [(u.event, u.order.leg) for u in updates] == [
        ("fill", "stop_loss"), ("canceled", "take_profit")
    ]
    assert eng.positions() == []
    assert eng.realized_pnl == D("-50")


def test_gap_through_the_stop_fills_at_the_open() -> None:
    eng = engine_with_long_bracket()
    assert fills(eng.on_bar(bar(2, "90", "92", "89", "91"))) == [("stop_loss", D("90"))]


def test_target_leg_fills_at_the_target_and_gap_through_fills_at_the_open() -> None:
    eng = engine_with_long_bracket()
    assert fills(eng.on_bar(bar(2, "105", "110", "104", "109"))) == [("take_profit", D("110"))]
    assert eng.realized_pnl == D("100")

    eng = engine_with_long_bracket()
    assert fills(eng.on_bar(bar(2, "112", "113", "111", "112"))) == [("take_profit", D("112"))]


def test_both_legs_crossed_in_one_bar_the_stop_fills_first() -> None:
    eng = engine_with_long_bracket()
    updates = eng.on_bar(bar(2, "100", "111", "94", "105"))
    assert fills(updates) == [("stop_loss", D("95"))]
    assert [u.event for u in updates] == ["fill", "canceled"]


def test_a_bar_opening_through_the_target_fills_the_target_even_if_it_later_hits_the_stop() -> (
    None
):
    # The open is the bar's first trade: no ambiguity about which leg was reached first.
    eng = engine_with_long_bracket()
    assert fills(eng.on_bar(bar(2, "111", "112", "90", "91"))) == [("take_profit", D("111"))]


def test_legs_work_in_the_bar_their_entry_filled_in() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    eng.submit(bracket())
    updates = eng.on_bar(bar(1, "100", "101", "94", "96"))
    assert fills(updates) == [(None, D("100")), ("stop_loss", D("95"))]


def test_oco_one_leg_filling_cancels_the_other_for_good() -> None:
    eng = engine_with_long_bracket()
    eng.on_bar(bar(2, "105", "111", "104", "110"))
    assert eng.open_orders() == []
    assert eng.on_bar(bar(3, "100", "100", "80", "85")) == []  # the stop is gone
    assert eng.positions() == []


def test_short_bracket_uses_a_buy_stop_above_and_a_buy_limit_below() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    eng.submit(bracket(sl="105", tp="90", side=Side.SELL))
    eng.on_bar(flat(1, "100"))
    assert eng.positions()[0].qty == D(-10)
    assert fills(eng.on_bar(bar(2, "101", "106", "100", "104"))) == [("stop_loss", D("105"))]
    assert eng.realized_pnl == D("-50")


def test_an_inverted_bracket_is_refused() -> None:
    eng = SimEngine()
    with pytest.raises(BrokerRejection) as e:
        eng.submit(bracket(sl="110", tp="95"))
    assert e.value.code == "42210000"


# --- positions, money ----------------------------------------------------------------------


def test_average_entry_price_across_two_buys_and_realized_pnl_on_a_partial_sell() -> None:
    eng = SimEngine()
    eng.submit(buy("a"), now=at(0))
    eng.on_bar(flat(1, "100"))
    eng.submit(buy("b"), now=at(1))
    eng.on_bar(flat(2, "110"))
    [pos] = eng.positions()
    assert (pos.qty, pos.avg_entry_price) == (D(20), D(105))
    assert pos.current_price == D(110) and pos.unrealized_pl == D(100)

    eng.submit(OrderRequest(client_order_id="s", symbol="AAPL", side=Side.SELL, qty=D(5)))
    eng.on_bar(flat(3, "120"))
    [pos] = eng.positions()
    assert (pos.qty, pos.avg_entry_price) == (D(15), D(105))
    assert eng.realized_pnl == D(75)
    assert eng.cash == D(100000) - D(1000) - D(1100) + D(600)
    assert eng.equity() == eng.cash + 15 * D(120)


def test_commission_per_share_and_slippage_bps() -> None:
    eng = SimEngine(commission_per_share=D("0.01"), slippage_bps=D("10"))
    eng.on_bar(flat(0, "100"))
    eng.submit(bracket(qty="100"))
    [entry] = eng.on_bar(flat(1, "100"))
    assert (entry.price, entry.fee) == (D("100.1"), D("1"))  # buys pay up 10 bps
    assert eng.cash == D(100000) - D("10010") - D("1")
    # The target is a limit: no slippage. The stop would be a market sale: slipped down.
    [tp, _] = eng.on_bar(bar(2, "105", "110", "104", "109"))
    assert (tp.price, tp.fee) == (D("110"), D("1"))
    assert eng.realized_pnl == (D("110") - D("100.1")) * 100 - 2
    assert eng.fees == D(2)

    eng = SimEngine(slippage_bps=D("10"))
    eng.on_bar(flat(0, "100"))
    eng.submit(bracket())
    eng.on_bar(flat(1, "100"))
    assert fills(eng.on_bar(bar(2, "96", "96", "94", "94"))) == [("stop_loss", D("94.905"))]


def test_settings_build_the_broker() -> None:
    broker = SimulatedBroker.from_settings(
        SimBroker(starting_cash=D("5000"), commission_per_share=D("0.005"))
    )
    assert broker.engine.cash == D(5000)
    assert broker.engine.commission_per_share == D("0.005")


# --- Alpaca's refusals ---------------------------------------------------------------------


def test_a_client_order_id_is_unique_forever() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    first = eng.submit(buy())
    eng.on_bar(flat(1, "100"))  # filled: the id stays taken
    with pytest.raises(BrokerRejection) as e:
        eng.submit(buy())
    assert (e.value.code, e.value.message) == ("40010001", "client_order_id must be unique")
    assert eng.get_by_client_id("c1").id == first.id  # type: ignore[union-attr]
    assert eng.get_by_client_id("nope") is None


def test_insufficient_buying_power_is_refused_403() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    with pytest.raises(BrokerRejection) as e:
        eng.submit(buy("big", qty="1001"))
    assert (e.value.code, e.value.status) == ("40310000", 403)
    assert e.value.message == "insufficient buying power"

    eng.submit(buy("a", qty="600"))
    assert eng.account().buying_power == D(40000)  # the open order reserves its notional
    with pytest.raises(BrokerRejection):
        eng.submit(buy("b", qty="401"))
    eng.submit(buy("b", qty="400"))
    eng.on_bar(flat(1, "100"))
    acct = eng.account()
    assert (acct.cash, acct.equity, acct.buying_power) == (D(0), D(100000), D(0))
    # Selling what we hold needs no buying power.
    eng.submit(OrderRequest(client_order_id="s", symbol="AAPL", side=Side.SELL, qty=D(1000)))


def test_buying_power_multiplier() -> None:
    eng = SimEngine(buying_power_multiplier=D(2))
    eng.on_bar(flat(0, "100"))
    eng.submit(buy(qty="2000"))
    with pytest.raises(BrokerRejection):
        eng.submit(buy("c2", qty="1"))


def test_unknown_orders_and_positions() -> None:
    eng = SimEngine()
    with pytest.raises(BrokerRejection) as e:
        eng.get("nope")
    assert e.value.status == 404
    with pytest.raises(BrokerRejection) as e:
        eng.close_position("AAPL")
    assert (e.value.code, e.value.message) == ("40410000", "position does not exist")


# --- canceling and closing -----------------------------------------------------------------


def test_canceling_a_bracket_cancels_its_held_legs() -> None:
    eng = SimEngine()
    eng.on_bar(flat(0, "100"))
    order = eng.submit(bracket())
    assert len(eng.open_orders()) == 3
    assert eng.cancel(order.id) == 3
    assert eng.open_orders() == []
    assert eng.on_bar(flat(1, "100")) == []
    with pytest.raises(BrokerRejection) as e:
        eng.cancel(order.id)
    assert e.value.code == "42210000"


def test_cancel_all_counts_every_order_it_ended() -> None:
    eng = engine_with_long_bracket()  # two working legs
    eng.submit(buy("other", symbol="MSFT"))  # plus a plain order
    assert eng.cancel_all() == 3
    assert eng.open_orders() == []


def test_close_position_is_refused_while_legs_hold_the_shares() -> None:
    eng = engine_with_long_bracket()
    with pytest.raises(BrokerRejection) as e:
        eng.close_position("AAPL")
    assert e.value.code == "40310000"
    assert "available: 0" in e.value.message


def test_close_position_fills_at_the_next_bar_open() -> None:
    eng = engine_with_long_bracket()
    eng.cancel_all()
    close = eng.close_position("AAPL")
    assert (close.side, close.qty, close.type, close.status) == (Side.SELL, D(10), "market", "new")
    with pytest.raises(BrokerRejection) as e:  # a second close while the first is working
        eng.close_position("AAPL")
    assert e.value.code == "40310000"
    assert eng.on_bar(bar(1, "100", "100", "100", "100")) == []  # not after its submit time
    updates = eng.on_bar(bar(2, "102", "103", "101", "102"))
    assert fills(updates) == [(None, D("102"))]
    assert eng.positions() == [] and eng.realized_pnl == D(20)


def test_close_at_the_last_known_price_when_no_next_bar_comes() -> None:
    eng = engine_with_long_bracket()
    eng.on_bar(bar(2, "101", "104", "100", "103"))
    [order] = eng.close_all(immediate_price=True)
    assert (order.status, order.filled_avg_price) == ("filled", D("103"))
    assert eng.positions() == [] and eng.open_orders() == []
    assert eng.realized_pnl == D(30)

    eng = engine_with_long_bracket()
    eng.immediate_close = True
    eng.cancel_all()
    assert eng.close_position("AAPL").filled_avg_price == D("100")


def test_orders_since_and_open_orders() -> None:
    eng = SimEngine()
    eng.submit(buy("a"), now=at(0))
    eng.submit(buy("b"), now=at(5))
    assert [o.client_order_id for o in eng.orders_since(at(1))] == ["b"]
    assert [o.client_order_id for o in eng.open_orders()] == ["a", "b"]


def test_ids_are_deterministic() -> None:
    def run() -> list[tuple[str, str | None]]:
        eng = engine_with_long_bracket()
        updates = eng.on_bar(bar(2, "100", "111", "94", "105"))
        eng.close_all()
        return [(u.order.id, u.execution_id) for u in updates]

    assert run() == run()


# --- the async port ------------------------------------------------------------------------


async def test_port_streams_every_update_to_trade_update_subscribers() -> None:
    broker = SimulatedBroker()
    stream = broker.trade_updates()
    broker.on_bar(flat(0, "100"))
    order = await broker.submit_order(bracket())
    broker.on_bar(flat(1, "100"))
    await broker.cancel_order(order.legs[1].id)
    await broker.close()
    seen = [(u.event, u.order.leg) async for u in stream]
    assert seen == [("new", None), ("fill", None), ("canceled", "take_profit")]
    assert (await broker.get_account()).equity == D(100000)
    assert broker.name == "sim"


async def test_port_methods_delegate_to_the_engine() -> None:
    broker = SimulatedBroker(immediate_close=True)
    broker.set_clock(at(0))
    broker.on_bar(flat(0, "100"))
    order = await broker.submit_order(buy(), now=at(0))
    assert (await broker.get_order(order.id)).status == "new"
    assert len(await broker.list_open_orders()) == 1
    assert len(await broker.list_orders_since(at(0))) == 1
    broker.on_bar(flat(1, "100"))
    assert [p.symbol for p in await broker.list_positions()] == ["AAPL"]
    [closed] = await broker.close_all_positions()
    assert closed.status == "filled"
    assert await broker.cancel_all_orders() == 0
    assert await asyncio.wait_for(broker.close(), 1) is None
