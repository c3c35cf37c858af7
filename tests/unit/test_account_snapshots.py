"""Issue 14, item 6: the risk guard works from the broker's account, not a simulated $100,000.

`AccountSnapshotted` (cash, equity, buying power as the broker reports them) is published by
the broker effect at the session start, after every fill and every minute (ClockTicked), by
the simulated broker too, from simulated time, so a backtest stays deterministic. The risk
guard evolves on it: buying power = the snapshot's, less pending entries the broker had not
yet been sent when it was taken; equity (for the exposure rule) = the snapshot's.
"""

from __future__ import annotations

from decimal import Decimal

from adapters.runtime.app import build_sim_pipeline  # noqa: F401 - the runtime under test
from domain.events import AccountSnapshotted, Event, OrderApproved, OrderDenied, OrderSubmitted
from handlers.risk_guard import RiskGuard
from tests.unit.limits_harness import generate, limits_settings, run_pipeline
from tests.unit.risk_builders import CORR, D, at, new_id, settings, signal

S = settings(max_symbol_exposure_pct=1)


def snapshot(cash: object, equity: object, bp: object, minute: float = 0) -> AccountSnapshotted:
    return AccountSnapshotted(
        event_id=new_id(), type="AccountSnapshotted", occurred_at=at(minute),
        correlation_id=CORR, broker="alpaca", cash=D(cash), equity=D(equity),
        buying_power=D(bp))


def submitted(order: OrderApproved) -> OrderSubmitted:
    return OrderSubmitted(
        event_id=new_id(), type="OrderSubmitted", occurred_at=order.occurred_at,
        correlation_id=CORR, order_id=order.order_id, client_order_id=order.client_order_id,
        broker_order_id=f"b-{order.order_id}", symbol=order.symbol, side=order.side,
        qty=order.qty, order_type="limit")


def decide(guard: RiskGuard, ev: Event, s=S) -> Event:
    (out,) = guard.handle(ev, s)
    return out


def test_buying_power_comes_from_the_broker_not_the_starting_cash():
    guard = RiskGuard(starting_cash=D(100_000))
    guard.handle(snapshot(5_000, 5_000, 3_000), S)  # a small live account
    out = decide(guard, signal("AAPL", "buy", "150", "147", "156", when=at(1)))
    assert isinstance(out, OrderApproved)
    assert out.qty == 20  # floor(3,000 / 150), not 66 from the simulated 100,000
    acct = guard.account()
    assert (acct.cash, acct.equity) == (D(5_000), D(5_000))


def test_exposure_is_measured_against_the_brokers_equity():
    guard = RiskGuard(starting_cash=D(100_000))
    guard.handle(snapshot(20_000, 20_000, 80_000), S)
    # 40 % of the broker's 20,000 = 8,000 < 66 x 150 = 9,900
    out = decide(guard, signal("AAPL", "buy", "150", "147", "156", when=at(1)), settings())
    assert isinstance(out, OrderDenied) and out.rule == "symbol_exposure"
    assert out.figures["equity"] == "20000"


def test_pending_entries_count_once_whether_or_not_the_snapshot_saw_them():
    guard = RiskGuard()
    guard.handle(snapshot(100_000, 100_000, 12_000), S)
    first = decide(guard, signal("AAPL", "buy", "100", "98", "104", when=at(1)))
    assert isinstance(first, OrderApproved) and first.qty == 100  # 10,000 of 12,000
    # not yet in any snapshot: the guard reserves it itself
    assert guard.account().buying_power == D(2_000)
    guard.handle(submitted(first), S)
    # the broker reserves it now: a snapshot taken after the submit already shows 2,000
    guard.handle(snapshot(100_000, 100_000, 2_000, minute=2), S)
    assert guard.account().buying_power == D(2_000)  # not 2,000 - 10,000 again


def test_the_simulated_broker_publishes_snapshots_at_start_after_fills_and_every_minute():
    s = limits_settings()
    tape, signals = generate(3, symbols=2, minutes=60, n_signals=4)
    events = run_pipeline(s, tape, signals)
    snaps = [e for e in events if isinstance(e, AccountSnapshotted)]
    ticks = [e for e in events if e.type == "ClockTicked"]
    fills = [e for e in events if e.type in ("OrderFilled", "OrderPartiallyFilled")]
    starts = [e for e in events if e.type == "SessionStarted"]
    assert fills and starts
    causes = {e.causation_id for e in snaps}
    assert {e.event_id for e in [*ticks, *fills, *starts]} <= causes
    assert len(snaps) == len(ticks) + len(fills) + len(starts)
    first = next(e for e in snaps if e.causation_id == starts[0].event_id)
    assert first.cash == first.equity == first.buying_power == Decimal(100_000)
    assert first.broker == "sim" and first.occurred_at == starts[0].occurred_at
    # every fill's snapshot moves the cash by exactly what the fill cost
    cash = Decimal(100_000)
    for f in fills:
        (snap,) = [e for e in snaps if e.causation_id == f.event_id]
        sign = 1 if f.side == "buy" else -1  # type: ignore[attr-defined]
        cash -= sign * f.qty * f.price + f.fee  # type: ignore[attr-defined]
        assert snap.cash == cash
    # deterministic: the same data gives the same snapshots, ids included
    again = [e for e in run_pipeline(s, tape, signals) if isinstance(e, AccountSnapshotted)]
    assert again == snaps
