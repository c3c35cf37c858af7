"""Issue 14, item 7, end to end: in a backtest, whatever the prices do, the limits hold at the
fill. Every handler and the simulated broker run in-process (no NATS), over

* seeded random-walk series with gaps (some up through the entry's slippage), with random
  signals, repeated and opposite ones included (a hypothesis property), and
* the bundled dataset with the scanner and strategy, as `catalyst run` trades it.

The properties are `tests.unit.limits_harness.check_limits`: no buy fill over
max_position_size_usd, no position without a signal behind it, no approval that lets the open
and pending stops together break the daily limit.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.runtime.app import bundled_tape, default_session
from adapters.runtime.simulation import MarketTape, data_event_id
from config.settings import Settings
from domain.events import OrderApproved, OrderCanceled, OrderFilled, SignalGenerated
from domain.values import Bar, Side
from tests.unit.limits_harness import (
    CENT,
    DAY,
    MINUTE,
    OPEN,
    check_limits,
    generate,
    limits_settings,
    run_pipeline,
)


@hsettings(max_examples=12, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), slippage=st.sampled_from([0.0, 0.005, 0.01, 0.03]),
       cap=st.sampled_from([Decimal(5000), Decimal(10_000), Decimal(20_000)]),
       loss=st.sampled_from([Decimal(500), Decimal(2000)]))
def test_limits_hold_at_the_fill_on_generated_series(seed, slippage, cap, loss):
    s = limits_settings(slippage, max_position_size_usd=cap, max_daily_loss_usd=loss,
                        max_symbol_exposure_pct=1.0)
    tape, signals = generate(seed)
    check_limits(run_pipeline(s, tape, signals), s)


def test_a_gap_up_through_the_slippage_leaves_the_entry_unfilled_or_under_the_cap():
    # last close 100, limit 101 (1 %); the next bar opens at 103 and never trades <= 101: the
    # old market entry filled 100 shares at 103 (10,300). Now nothing fills, and the day
    # order expires at the close.
    bars = [Bar(symbol="GAP", timestamp=OPEN, open=Decimal(100), high=Decimal(100),
                low=Decimal(100), close=Decimal(100), volume=1000)]
    for m in range(1, 30):
        p = Decimal(103) + m * CENT
        bars.append(Bar(symbol="GAP", timestamp=OPEN + m * MINUTE, open=p, high=p + CENT,
                        low=p - CENT, close=p, volume=1000))
    sig = SignalGenerated(
        event_id=data_event_id("signal", "gap", "limits-test"), type="SignalGenerated",
        occurred_at=OPEN + MINUTE, correlation_id="limits-test", signal_id="sig-gap",
        symbol="GAP", side=Side.BUY, entry=Decimal(100), stop_loss=Decimal(97),
        take_profit=Decimal(107))
    s = limits_settings()
    events = run_pipeline(s, MarketTape.from_data(bars), [sig])
    (approval,) = [e for e in events if isinstance(e, OrderApproved)]
    assert (approval.qty, approval.limit_price) == (99, Decimal("101.00"))
    assert not [e for e in events if isinstance(e, OrderFilled)]
    # the day order ends with the session (canceled at the close, as Alpaca expires it)
    canceled = [e for e in events if isinstance(e, OrderCanceled)]
    assert {(e.client_order_id, e.leg) for e in canceled} == {
        (approval.client_order_id, None), (approval.client_order_id, "stop_loss"),
        (approval.client_order_id, "take_profit")}
    check_limits(events, s)


def test_signal_after_signal_on_one_symbol_never_adds_or_flips():
    # buy, buy again, then sell: only the first is approved; no position appears that no
    # signal asked for (the old legs cannot outlive the position either)
    tape, _ = generate(7, symbols=1, minutes=60)
    s = limits_settings()
    closes = {b.timestamp: b.close for bs in tape.minute_bars[DAY].values() for b in bs}

    def sig(i: int, minute: int, side: Side) -> SignalGenerated:
        entry = closes[OPEN + (minute - 1) * MINUTE]
        sign = 1 if side is Side.BUY else -1
        return SignalGenerated(
            event_id=data_event_id("signal", f"rep:{i}", "limits-test"),
            type="SignalGenerated", occurred_at=OPEN + minute * MINUTE,
            correlation_id="limits-test", signal_id=f"rep-{i}", symbol="S0", side=side,
            entry=entry, stop_loss=(entry * (1 - sign * Decimal("0.05"))).quantize(CENT),
            take_profit=(entry * (1 + sign * Decimal("0.15"))).quantize(CENT))

    events = run_pipeline(s, tape, [sig(0, 5, Side.BUY), sig(1, 10, Side.BUY),
                                    sig(2, 15, Side.SELL)])
    rules = [e.rule for e in events if e.type == "OrderDenied"]  # type: ignore[attr-defined]
    assert rules == ["position_or_order_open", "position_or_order_open"]
    check_limits(events, s)


# --- the bundled data ---------------------------------------------------------------------------


def test_limits_hold_on_the_bundled_data():
    # every bundled date (the demo day included), scanner and strategy as `catalyst run`
    s = Settings.model_validate({"trading": {"alerts": {"enabled": False}}})
    tape = bundled_tape(s)
    assert default_session(s) in tape.dates
    counts = check_limits(run_pipeline(s, tape, scanner=True), s)
    assert counts["approvals"] > 0 and counts["entries"] > 0
