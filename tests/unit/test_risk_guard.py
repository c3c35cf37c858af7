"""Risk guard: sizing, the rules in order, the daily-loss alarms and the halt.

Defaults unless a test says otherwise: starting cash 100,000; max_daily_loss_usd 2,000;
max_positions 5; max_position_size_usd 10,000; warning at 75 %; min_reward_risk 1.5;
max_symbol_exposure_pct 40 %.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import uuid5

from domain.events import (
    DailyLossWarningIssued,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderDenied,
)
from domain.values import Side, derive_id
from handlers.risk_guard import RiskGuard, order_ids_for
from tests.unit.risk_builders import (
    D0,
    D,
    at,
    canceled,
    fill,
    pnl_changed,
    resumed,
    settings,
    signal,
)

S = settings()
D1 = date(2024, 3, 5)


def decide(guard: RiskGuard, ev: Event, s=S) -> Event:
    (out,) = guard.handle(ev, s)
    return out


def approved(guard: RiskGuard, ev: Event, s=S) -> OrderApproved:
    out = decide(guard, ev, s)
    assert isinstance(out, OrderApproved), out
    return out


def denied(guard: RiskGuard, ev: Event, rule: str, s=S) -> OrderDenied:
    out = decide(guard, ev, s)
    assert isinstance(out, OrderDenied), out
    assert out.rule == rule, (out.rule, out.detail)
    return out


def fill_of(order: OrderApproved, *args, **kw) -> Event:
    """A fill of an approved order: it carries the order's ids."""
    return fill(*args, order_id=order.order_id, client_order_id=order.client_order_id, **kw)


def cancel_of(order: OrderApproved, **kw) -> Event:
    return canceled(order.order_id, order.symbol, client_order_id=order.client_order_id, **kw)


def aapl(when=None, **kw):
    # entry 150, stop 147 (risk 3), target 156 (reward 6): reward/risk 2
    return signal("AAPL", "buy", "150", "147", "156", when=when or at(0), **kw)


def test_an_ordinary_signal_is_sized_and_approved():
    guard = RiskGuard(starting_cash=D(100_000))
    sig = aapl()
    out = approved(guard, sig)
    # qty = floor(10,000 / 150) = 66 (9,900); reward/risk 2 >= 1.5; exposure 9,900 <= 40,000;
    # stop risk 66 x 3 = 198 -> worst P&L -198 >= -2,000
    assert out.qty == 66
    assert (out.entry, out.stop_loss, out.take_profit) == (D(150), D(147), D(156))
    assert out.side == Side.BUY and out.signal_id == sig.signal_id and out.use_bracket
    # ids: the event's from the signal, the order ids from the approval event id
    assert out.event_id == derive_id(sig.event_id, "risk_guard:0")
    assert out.client_order_id == str(uuid5(out.event_id, "client_order_id"))
    assert (out.order_id, out.client_order_id) == order_ids_for(out.event_id)
    assert out.causation_id == sig.event_id


def test_bracket_orders_follow_the_signal_and_the_setting():
    guard = RiskGuard()
    assert not approved(guard, aapl(use_bracket=False)).use_bracket
    off = settings(use_bracket_orders=False)
    assert not approved(guard, signal("MSFT", "buy", 100, 98, 106), off).use_bracket


def test_size_is_capped_by_buying_power_including_pending_orders():
    s = settings(max_symbol_exposure_pct=1)  # (40 % of 15,000 would stop it first)
    guard = RiskGuard(starting_cash=D(15_000))
    assert approved(guard, aapl(), s).qty == 66  # 9,900 of 15,000
    # buying power 15,000 - 9,900 pending = 5,100 -> floor(5,100 / 150) = 34
    out = approved(guard, signal("MSFT", "buy", "150", "147", "156"), s)
    assert out.qty == 34
    # 5,100 - 5,100 = 0 left
    d = denied(guard, signal("NVDA", "buy", "150", "147", "156"), "buying_power", s)
    assert d.figures["buying_power"] == "0.00"


def test_one_share_above_the_position_size_is_denied():
    d = denied(RiskGuard(), signal("BRK", "buy", "10500", "10400", "10800"), "position_size")
    assert d.figures["max_position_size_usd"] == "10000"


def test_signals_with_the_stop_on_the_wrong_side_are_invalid():
    denied(RiskGuard(), signal("AAPL", "buy", "150", "151", "156"), "invalid_signal")
    denied(RiskGuard(), signal("AAPL", "sell", "150", "149", "140"), "invalid_signal")


def test_short_signals_mirror_the_arithmetic():
    # sell at 50, stop 51 (risk 1), target 48 (reward 2): 2 >= 1.5; qty floor(10,000/50) = 200
    out = approved(RiskGuard(), signal("XYZ", "sell", "50", "51", "48"))
    assert out.qty == 200 and out.side == Side.SELL


def test_max_positions_counts_pending_orders():
    s = settings(max_positions=2)
    guard = RiskGuard()
    first = approved(guard, aapl(), s)
    msft = approved(guard, signal("MSFT", "buy", "100", "98", "104"), s)
    # two pending (not yet filled): a third symbol would make 3 > 2
    d = denied(guard, signal("NVDA", "buy", "100", "98", "104"), "max_positions", s)
    assert (d.figures["open_positions"], d.figures["max_positions"]) == ("2", "2")
    # a symbol already held or pending is denied by its own rule (issue 14), not this one
    denied(guard, aapl(), "position_or_order_open", s)
    # once AAPL's order fills, AAPL is still one position; canceling MSFT's order frees a slot
    guard.handle(fill_of(first, "AAPL", "buy", first.qty, "150"), s)
    denied(guard, signal("NVDA", "buy", "100", "98", "104"), "max_positions", s)
    guard.handle(cancel_of(msft), s)
    approved(guard, signal("NVDA", "buy", "100", "98", "104"), s)


def test_reward_risk_below_the_minimum_is_denied():
    # entry 100, stop 98, target 102: 2 / 2 = 1 < 1.5
    d = denied(RiskGuard(), signal("AAPL", "buy", "100", "98", "102"), "reward_risk")
    assert Decimal(d.figures["reward_risk"]) == 1
    # with min_reward_risk 1.0 it passes
    approved(RiskGuard(), signal("AAPL", "buy", "100", "98", "102"), settings(min_reward_risk=1))


def test_symbol_exposure_is_measured_against_equity():
    # (Issue 14: a symbol with a position or pending order is denied before this rule, so
    # the exposure is this order's own: qty x its limit price.)
    s = settings(max_symbol_exposure_pct=0.05)  # 5 % of 100,000 = 5,000
    guard = RiskGuard()
    d = denied(guard, aapl(), "symbol_exposure", s)  # 66 x 150 = 9,900 > 5,000
    assert d.figures["exposure"] == "9900.00" and d.figures["max_exposure"] == "5000.00"
    # equity falls with a loss: 10 % of 40,000 is 4,000, below the 9,900 of this order
    poorer = RiskGuard(starting_cash=D(40_000))
    denied(poorer, aapl(), "symbol_exposure", settings(max_symbol_exposure_pct=0.1))
    approved(RiskGuard(), aapl(), settings(max_symbol_exposure_pct=0.1))  # 10,000 >= 9,900


def test_equity_follows_fills_and_fees():
    guard = RiskGuard(starting_cash=D(10_000))
    guard.handle(fill("AAPL", "buy", 50, "100", fee="1"), S)  # cash 10,000 - 5,000 - 1
    guard.handle(fill("AAPL", "sell", 50, "90", fee="1"), S)  # + 4,500 - 1
    acct = guard.account()
    # cash 10,000 - 5,000 - 1 + 4,500 - 1 = 9,498; flat, so equity = cash = buying power
    assert acct.cash == acct.equity == acct.buying_power == D(9_498)


def test_todays_loss_at_the_limit_denies_after_a_resume():
    guard = RiskGuard()
    guard.handle(pnl_changed("-2100"), S)  # warns and stops (see below)
    guard.handle(resumed(at(1)), S)  # the operator resumes; P&L is still past the limit
    d = denied(guard, aapl(at(2)), "daily_loss")
    assert (d.figures["pnl"], d.figures["max_daily_loss_usd"]) == ("-2100", "2000")


def test_the_stop_loss_must_fit_in_what_is_left_of_the_daily_limit():
    guard = RiskGuard()
    guard.handle(pnl_changed("-1900"), S)
    # 66 x (150 - 147) = 198: -1,900 - 198 = -2,098 < -2,000
    d = denied(guard, aapl(), "stop_risk")
    assert (d.figures["stop_risk"], d.figures["pnl"]) == ("198.00", "-1900")

    guard = RiskGuard()
    guard.handle(pnl_changed("-1800"), S)
    approved(guard, aapl())  # -1,800 - 198 = -1,998 >= -2,000
    # a burst: the pending order's 198 counts too: -1,800 - 198 - 198 = -2,196
    d = denied(guard, signal("MSFT", "buy", "150", "147", "156"), "stop_risk")
    assert d.figures["pending_stop_risk"] == "198.00"


def test_pnl_of_another_date_is_not_todays():
    guard = RiskGuard()
    guard.handle(pnl_changed("-1900", session_date=D0), S)
    approved(guard, aapl(at(0, days=1)))  # 5 March: today's P&L is 0


def test_warning_once_per_date_even_after_a_restart():
    guard = RiskGuard()
    log: list[Event] = []

    def run(g: RiskGuard, ev: Event) -> list[Event]:
        out = g.handle(ev, S)
        log.extend([ev, *out])
        return out

    assert run(guard, pnl_changed("-1499.99")) == []  # threshold is -0.75 x 2,000 = -1,500
    (warn,) = run(guard, cause := pnl_changed("-1500"))
    assert isinstance(warn, DailyLossWarningIssued)
    assert (warn.session_date, warn.pnl, warn.limit, warn.pct_used) == (
        D0, D(-1500), D(2000), 0.75)
    assert warn.event_id == derive_id(cause.event_id, "risk_guard:0")
    assert run(guard, pnl_changed("-1600")) == []

    restarted = RiskGuard()
    restarted.rebuild(log)
    assert run(restarted, pnl_changed("-1700")) == []
    # a new date warns again
    (warn,) = run(restarted, pnl_changed("-1500", session_date=D1))
    assert warn.session_date == D1


def test_emergency_stop_carries_the_crossing_pnl_time_and_actions():
    guard = RiskGuard()
    cause = pnl_changed("-2000.01", when=at(42), open_positions=3)
    warn, stop = guard.handle(cause, S)  # both thresholds crossed by one change
    assert isinstance(warn, DailyLossWarningIssued) and warn.open_positions == 3
    assert isinstance(stop, EmergencyStopTriggered)
    assert (stop.pnl, stop.limit, stop.occurred_at) == (D("-2000.01"), D(2000), at(42))
    assert stop.actions == {
        "close_all_positions": True, "cancel_all_orders": True, "halt_new_trades": True,
        "notify_via_email": True, "require_manual_restart": True,
    }
    assert stop.event_id == derive_id(cause.event_id, "risk_guard:1")
    # once: further losses the same day emit nothing
    assert guard.handle(pnl_changed("-2500", when=at(43)), S) == []


def test_a_manual_restart_halt_lasts_across_restarts_and_dates():
    guard = RiskGuard()
    log: list[Event] = [cause := pnl_changed("-2000")]
    log.extend(guard.handle(cause, S))
    d = denied(guard, aapl(at(5)), "halted")
    assert "TradingResumed" in d.detail

    restarted = RiskGuard()
    restarted.rebuild(log)
    denied(restarted, aapl(at(0, days=1)), "halted")  # the next day: still halted
    restarted.handle(resumed(at(1, days=1)), S)
    approved(restarted, aapl(at(2, days=1)))


def test_without_manual_restart_the_next_session_date_starts_active():
    s = settings(emergency={"require_manual_restart": False})
    guard = RiskGuard()
    (_, stop) = guard.handle(pnl_changed("-2500"), s)
    assert stop.actions["require_manual_restart"] is False
    denied(guard, aapl(at(300)), "halted", s)
    approved(guard, aapl(at(0, days=1)), s)


def test_without_halt_new_trades_the_daily_loss_rule_still_denies_that_day():
    s = settings(emergency={"halt_new_trades": False})
    guard = RiskGuard()
    guard.handle(pnl_changed("-2500"), s)
    denied(guard, aapl(at(1)), "daily_loss", s)
    approved(guard, aapl(at(0, days=1)), s)


def test_halted_comes_before_every_other_rule():
    guard = RiskGuard()
    guard.handle(pnl_changed("-2000"), S)
    denied(guard, signal("BRK", "buy", "10500", "10600", "10000"), "halted")


def test_limits_are_read_on_every_event():
    guard = RiskGuard()
    assert approved(guard, aapl()).qty == 66
    # hot reload: 5,000 per position -> floor(5,000 / 150) = 33
    msft = signal("MSFT", "buy", "150", "147", "156")
    assert approved(guard, msft, settings(max_position_size_usd=5000)).qty == 33
    # a lower loss limit changes the alarms at the next P&L change
    (stop,) = [e for e in guard.handle(pnl_changed("-600"), settings(max_daily_loss_usd=500))
               if isinstance(e, EmergencyStopTriggered)]
    assert stop.limit == D(500)


def test_fills_release_pending_orders_and_bracket_legs_do_not():
    guard = RiskGuard()
    order = approved(guard, aapl())
    assert guard.account().pending_notional == D(9900)
    guard.handle(fill_of(order, "AAPL", "buy", 16, "150", partial=True), S)
    assert guard.account().pending_notional == D(50 * 150)  # 66 - 16 = 50 left
    guard.handle(fill_of(order, "AAPL", "buy", 50, "150", filled_qty=66), S)
    assert guard.account().pending_notional == 0
    assert guard.open_symbols() == {"AAPL"}
    # the bracket's stop leg closes the position (same parent order id)
    guard.handle(fill_of(order, "AAPL", "sell", 66, "147", leg="stop_loss"), S)
    assert guard.open_symbols() == set()
    # cash 100,000 - 9,900 + 66 x 147 = 99,802
    assert guard.account().equity == D(99_802)


def test_a_canceled_bracket_leg_leaves_the_entry_order_pending():
    guard = RiskGuard()
    order = approved(guard, aapl())
    guard.handle(fill_of(order, "AAPL", "buy", 16, "150", partial=True), S)
    guard.handle(cancel_of(order, leg="take_profit"), S)
    assert guard.account().pending_notional == D(50 * 150)  # 66 - 16 still to fill
    guard.handle(cancel_of(order), S)  # the entry order itself
    assert guard.account().pending_notional == 0


def test_the_same_signal_twice_is_decided_once_and_a_replay_decides_the_same():
    guard = RiskGuard()
    sig = aapl()
    first = guard.handle(sig, S)
    assert guard.handle(sig, S) == []  # redelivered: already applied
    again = RiskGuard().handle(sig, S)  # a crash before the output was published
    assert again == first  # same ids, so the server and broker drop the duplicate


def test_a_fill_recorded_before_its_submit_clears_the_pending_entry_by_client_order_id():
    # a crash between submit and publish: the broker's fill is translated with
    # order_id = client_order_id, so only the client_order_id matches the approval
    guard = RiskGuard()
    order = approved(guard, aapl())
    assert order.order_id != order.client_order_id
    guard.handle(fill("AAPL", "buy", 66, "150", order_id=order.client_order_id,
                      client_order_id=order.client_order_id), S)
    acct = guard.account()
    assert acct.pending_notional == 0 and acct.pending_stop_risk == 0
    assert guard.open_symbols() == {"AAPL"}  # the position, not a pending entry too


def test_a_broker_update_the_order_cannot_take_is_refused_counted_and_changes_nothing():
    # A fill after the order was canceled: the order keeps its state (no stop is armed for
    # it), the guard goes on deciding, and the refusal is counted for the runtime to report.
    guard = RiskGuard()
    order = approved(guard, aapl())
    guard.handle(cancel_of(order), S)
    assert guard.refused_transitions == 0
    assert guard.handle(fill_of(order, "AAPL", "buy", order.qty, "150", when=at(5)), S) == []
    assert guard.refused_transitions == 1
    assert guard.open_stop_risk() == 0
    denied(guard, aapl(when=at(6)), "position_or_order_open")  # the fill's position is held
