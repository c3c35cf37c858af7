"""Issue 14, item 7: limits hold at the fill, not at the signal.

* An entry is a marketable limit order: limit = last price x (1 + entry_limit_slippage_pct),
  sized as floor(cap / limit), so no fill can cost more than max_position_size_usd.
* A signal for a symbol with a position or a pending entry is denied
  (`position_or_order_open`), whichever its side.
* The stop-loss budget counts the stops of open positions as well as pending ones.
"""

from __future__ import annotations

from decimal import Decimal

from config.settings import OrderExecution, RiskLimits, RiskParameters, Settings, TradingConfig
from domain.events import Event, OrderApproved, OrderDenied
from domain.values import Side
from handlers.executor import Executor, SubmitOrder
from handlers.risk_guard import RiskGuard, entry_limit
from tests.unit.risk_builders import D, at, fill, pnl_changed, signal


def cfg(slippage: float = 0.01, **limits: object) -> Settings:
    return Settings(
        risk=RiskParameters(risk_limits=RiskLimits(**limits)),  # type: ignore[arg-type]
        trading=TradingConfig(order_execution=OrderExecution(entry_limit_slippage_pct=slippage)),
    )


S = cfg()


def decide(guard: RiskGuard, ev: Event, s: Settings = S) -> Event:
    (out,) = guard.handle(ev, s)
    return out


def approve(guard: RiskGuard, ev: Event, s: Settings = S) -> OrderApproved:
    out = decide(guard, ev, s)
    assert isinstance(out, OrderApproved), out
    return out


def deny(guard: RiskGuard, ev: Event, rule: str, s: Settings = S) -> OrderDenied:
    out = decide(guard, ev, s)
    assert isinstance(out, OrderDenied), out
    assert out.rule == rule, (out.rule, out.detail)
    return out


def filled(order: OrderApproved, price: object, when=None) -> Event:
    return fill(order.symbol, order.side, order.qty, price, order_id=order.order_id,
                client_order_id=order.client_order_id, when=when or at(1))


# --- the cap at the worst fill ---------------------------------------------------------------


def test_an_entry_is_a_marketable_limit_sized_against_its_limit():
    # last price 100, 1 % slippage: limit 101.00; floor(10,000 / 101) = 99 (9,999)
    out = approve(RiskGuard(), signal("ABC", "buy", "100", "97", "106"))
    assert out.order_type == "limit" and out.limit_price == D("101.00")
    assert out.qty == 99 and out.qty * out.limit_price <= D(10_000)
    # sized at the signal's price (the old way) it would be 100 shares: a 3 % gap at the
    # next open would fill 100 x 103 = 10,300, over the cap


def test_the_slippage_setting_moves_the_limit_and_the_size():
    out = approve(RiskGuard(), signal("ABC", "buy", "100", "97", "106"), cfg(slippage=0.03))
    assert out.limit_price == D("103.00") and out.qty == 97  # floor(10,000 / 103)
    out = approve(RiskGuard(), signal("ABC", "buy", "100", "97", "106"), cfg(slippage=0))
    assert out.limit_price == D("100.00") and out.qty == 100


def test_limit_prices_round_towards_the_safe_side():
    assert entry_limit(Side.BUY, D("33.337"), Decimal("0.01")) == D("33.67")  # 33.67037
    assert entry_limit(Side.SELL, D("33.337"), Decimal("0.01")) == D("33.01")  # 33.00363
    assert entry_limit(Side.BUY, D("0.5123"), Decimal("0.01")) == D("0.5174")  # sub-dollar


def test_the_executor_sends_the_approved_limit():
    approval = approve(RiskGuard(), signal("ABC", "buy", "100", "97", "106"))
    (cmd,) = Executor().commands_for(approval, S)
    assert isinstance(cmd, SubmitOrder)
    assert (cmd.order_type, cmd.limit_price, cmd.time_in_force) == ("limit", D("101.00"), "day")


# --- one position (or pending entry) per symbol ------------------------------------------------


def test_a_same_side_signal_on_a_held_symbol_is_denied():
    guard = RiskGuard()
    first = approve(guard, signal("ABC", "buy", "100", "97", "106"))
    guard.handle(filled(first, "100"), S)
    d = deny(guard, signal("ABC", "buy", "100", "97", "106", when=at(2)),
             "position_or_order_open")
    assert d.figures["position_qty"] == "99"


def test_an_opposite_side_signal_on_a_held_symbol_is_denied():
    guard = RiskGuard()
    first = approve(guard, signal("ABC", "buy", "100", "97", "106"))
    guard.handle(filled(first, "100"), S)
    deny(guard, signal("ABC", "sell", "100", "103", "94", when=at(2)), "position_or_order_open")


def test_a_signal_on_a_symbol_with_a_pending_entry_is_denied_until_it_ends():
    guard = RiskGuard()
    approve(guard, signal("ABC", "buy", "100", "97", "106"))
    d = deny(guard, signal("ABC", "buy", "100", "97", "106", when=at(1)),
             "position_or_order_open")
    assert d.figures["pending_qty"] == "99"
    approve(guard, signal("XYZ", "buy", "100", "97", "106", when=at(1)))  # others are fine


# --- the stop-loss budget counts open positions -------------------------------------------------


def test_open_positions_stops_count_against_the_daily_limit():
    # the case: three positions with $1,500 of stop risk each vs a $2,000 limit
    s = cfg(slippage=0, max_position_size_usd=D(50_000), max_symbol_exposure_pct=1.0)
    guard = RiskGuard()
    first = approve(guard, signal("AAA", "buy", "100", "97", "106"), s)  # 500 x 3 = 1,500
    assert first.qty == 500
    guard.handle(filled(first, "100"), s)
    d = deny(guard, signal("BBB", "buy", "100", "97", "106", when=at(2)), "stop_risk", s)
    assert d.figures["open_stop_risk"] == "1500"


def test_an_open_position_in_profit_still_risks_its_stop():
    # P&L +1,000 unrealized on AAA does not pay for BBB's stop: AAA's stop takes it back
    s = cfg(slippage=0, max_position_size_usd=D(50_000), max_symbol_exposure_pct=1.0)
    guard = RiskGuard()
    first = approve(guard, signal("AAA", "buy", "100", "97", "106"), s)
    guard.handle(filled(first, "100"), s)
    guard.handle(pnl_changed("1000", when=at(3)), s)
    deny(guard, signal("BBB", "buy", "100", "97", "106", when=at(4)), "stop_risk", s)
