"""Properties of the P&L maths, the daily P&L projection and the risk guard.

Each property checks the code against an independent recomputation from the raw history:
cash flows instead of average cost, exact fractions instead of Decimal, a brute-force
replay of the whole log instead of the guard's incremental state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.settings import Settings
from domain.events import (
    DailyLossWarningIssued,
    DailyPnLChanged,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    TradingResumed,
)
from domain.pnl import Position, apply_fill
from domain.values import Side
from handlers.risk_guard import RiskGuard
from projections.daily_pnl import DailyPnLProjection
from tests.unit.risk_builders import T0, bar, canceled, fill, pnl_changed, resumed, signal
from tests.unit.risk_builders import settings as make_settings

NY = ZoneInfo("America/New_York")
# No example database: nothing written into the repository; failures print their example.
PROPS = hsettings(
    max_examples=200, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CENT = Decimal("0.01")

sides = st.sampled_from([Side.BUY, Side.SELL])
prices = st.integers(1, 100_000).map(lambda c: Decimal(c) / 100)  # 0.01 .. 1000.00
quantities = st.one_of(
    st.integers(1, 500).map(Decimal),
    st.integers(1, 50_000).map(lambda m: Decimal(m) / 1000),  # fractional shares
)
fees = st.integers(0, 300).map(lambda c: Decimal(c) / 100)


# --- 1. average cost vs cash flows and exact fractions ----------------------------------------

fill_steps = st.tuples(st.just("fill"), sides, quantities, prices, fees)
mark_steps = st.tuples(st.just("mark"), prices)


@PROPS
@given(st.lists(st.one_of(fill_steps, mark_steps), min_size=1, max_size=40))
def test_average_cost_pnl_equals_the_cash_flow_method(steps):
    pos = Position()
    cash = Decimal(0)  # money in minus money out, fees apart
    paid = Decimal(0)
    mark = None
    # exact average cost with fractions, written independently of domain/pnl.py
    f_qty, f_avg, f_realized = Fraction(0), Fraction(0), Fraction(0)
    for step in steps:
        if step[0] == "mark":
            mark = step[1]
        else:
            _, side, qty, price, fee = step
            pos = apply_fill(pos, side, qty, price, fee).position
            d = qty if side is Side.BUY else -qty
            cash -= d * price
            paid += fee
            mark = price
            fd, fp = Fraction(d), Fraction(price)
            if f_qty == 0 or (f_qty > 0) == (fd > 0):
                f_avg = (f_avg * f_qty + fp * fd) / (f_qty + fd)
                f_qty += fd
            else:
                closing = min(abs(fd), abs(f_qty))
                direction = 1 if f_qty > 0 else -1
                f_realized += closing * (fp - f_avg) * direction
                if abs(fd) > abs(f_qty):
                    f_avg, f_qty = fp, f_qty + fd
                else:
                    f_qty += fd
                    if f_qty == 0:
                        f_avg = Fraction(0)
        if mark is None:
            continue
        # realized + unrealized - fees == cash flows + qty x mark - fees, exactly
        assert pos.total(mark) == cash + pos.qty * mark - paid
        assert pos.fees == paid
        assert Fraction(pos.qty) == f_qty
        assert abs(Fraction(pos.realized) - f_realized) < Fraction(1, 10**9)
        if pos.qty:
            assert abs(Fraction(pos.avg_price) - f_avg) < Fraction(1, 10**9)


# --- 2. daily P&L per New York date vs cash flows per date ------------------------------------

SYMBOLS = ("AAA", "BBB", "CCC")
whole = st.integers(1, 300).map(Decimal)
daily_steps = st.one_of(
    st.tuples(st.just("fill"), st.sampled_from(SYMBOLS), sides, whole, prices, fees),
    st.tuples(st.just("bar"), st.sampled_from(SYMBOLS), prices),
    st.tuples(st.just("wait"), st.integers(1, 2200)),  # minutes; crosses dates and DST
)


@PROPS
@given(st.lists(daily_steps, min_size=1, max_size=60),
       st.sampled_from([T0, datetime.fromisoformat("2024-03-09T12:00:00+00:00")]))
def test_daily_pnl_equals_each_dates_cash_flows_and_mark_changes(steps, start):
    proj = DailyPnLProjection()
    s = Settings()
    now = start
    qty: dict[str, Decimal] = defaultdict(Decimal)
    mark: dict[str, Decimal] = {}
    # per date: cash flows, fees, and the (qty, mark) each symbol started the date with
    flows: dict[date, Decimal] = defaultdict(Decimal)
    start_value: dict[date, Decimal] = {}
    end_total: dict[date, Decimal] = {}
    totals_seen: dict[date, list[Decimal]] = defaultdict(list)
    emitted: dict[date, DailyPnLChanged] = {}

    def value() -> Decimal:
        return sum((q * mark[sym] for sym, q in qty.items() if q), Decimal(0))

    for step in steps:
        if step[0] == "wait":
            now += timedelta(minutes=step[1])
            continue
        day = now.astimezone(NY).date()
        start_value.setdefault(day, value())  # what was carried in, at the last marks
        if step[0] == "fill":
            _, sym, side, q, price, fee = step
            ev = fill(sym, side, q, price, fee=fee, when=now)
            d = q if side is Side.BUY else -q
            qty[sym] += d
            flows[day] += -d * price - fee
            mark[sym] = price
        else:
            _, sym, price = step
            ev = bar(sym, price, when=now)
            mark[sym] = price
        for out in proj.handle(ev, s):
            assert out.total == out.realized + out.unrealized
            emitted[out.session_date] = out
        assert proj.session_date == day
        # the projection's day total vs flows + change in marked value, within the cents
        # each of realized and unrealized is rounded to
        expected = flows[day] + value() - start_value[day]
        assert abs(proj.total - expected) <= CENT
        end_total[day] = proj.total
        totals_seen[day].append(proj.total)

    for day, total in end_total.items():
        # every change was published: the last event of the date carries the final total
        assert (emitted[day].total if day in emitted else Decimal(0)) == total
        if day in emitted:
            assert emitted[day].intraday_low == min([Decimal(0), *totals_seen[day]])


# --- 3. no approved order ever breaks a limit -------------------------------------------------

LIMIT_SETS = [
    make_settings(),
    make_settings(max_positions=2, max_position_size_usd=Decimal(3000), min_reward_risk=1.0,
                  max_symbol_exposure_pct=0.1, max_daily_loss_usd=Decimal(500)),
    make_settings(max_positions=3, max_position_size_usd=Decimal(20000),
                  max_symbol_exposure_pct=0.25, max_daily_loss_usd=Decimal(1000),
                  emergency={"require_manual_restart": False}),
    make_settings(max_positions=1, min_reward_risk=2.5, max_daily_loss_usd=Decimal(300),
                  emergency={"halt_new_trades": False}),
    # loose position limits, so buying power is what binds
    make_settings(max_positions=20, max_position_size_usd=Decimal(40000),
                  max_symbol_exposure_pct=1.0, min_reward_risk=1.0),
]
GUARD_SYMBOLS = ("AAA", "BBB", "CCC", "DDD")

signal_op = st.tuples(
    st.just("signal"), st.sampled_from(GUARD_SYMBOLS), sides, st.integers(100, 40_000),
    st.integers(20, 800), st.integers(10, 40), st.sampled_from([0, 0, 0, 1, 2, 3, 4, 4]),
)
fill_op = st.tuples(st.just("fill"), st.integers(0, 50), st.integers(1, 100),
                    st.integers(-300, 300))
pnl_op = st.tuples(st.just("pnl"), st.integers(-250_000, 50_000),
                   st.integers(0, len(LIMIT_SETS) - 1))
OPS = {
    "signal": signal_op,
    "fill": fill_op,
    "pnl": pnl_op,
    "exit": st.tuples(st.just("exit"), st.sampled_from(GUARD_SYMBOLS), st.integers(-500, 500)),
    "cancel": st.tuples(st.just("cancel"), st.integers(0, 50)),
    # minutes: within the session, to the next date, over a weekend
    "wait": st.tuples(st.just("wait"), st.sampled_from([1, 30, 390, 1000, 1440, 4000])),
    "resume": st.just(("resume",)),
    "restart": st.just(("restart",)),
}
# signals and fills drawn more often than the rest, so approvals and positions stack up
OP_MIX = ["signal"] * 6 + ["fill"] * 4 + ["pnl"] * 2 + ["wait"] * 2 + [
    "exit", "cancel", "resume", "restart"]
guard_ops = st.sampled_from(OP_MIX).flatmap(OPS.__getitem__)


@dataclass
class Model:
    """The account and the guard's memory, recomputed from the whole history each time."""

    cash: Decimal
    qty: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    last: dict[str, Decimal] = field(default_factory=dict)
    pending: dict[str, list] = field(default_factory=dict)  # order_id -> [approval, remaining]
    pnl: dict[date, Decimal] = field(default_factory=dict)
    halts: list[tuple[date, bool]] = field(default_factory=list)
    warnings: dict[date, int] = field(default_factory=lambda: defaultdict(int))
    stops: dict[date, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def replay(cls, history: list[Event], cash: Decimal) -> Model:
        m = cls(cash=cash)
        seen_fills = set()
        for ev in history:
            if isinstance(ev, OrderApproved):
                m.pending[ev.order_id] = [ev, ev.qty]
            elif isinstance(ev, OrderFilled | OrderPartiallyFilled):
                if (ev.order_id, ev.fill_id) in seen_fills:
                    continue
                seen_fills.add((ev.order_id, ev.fill_id))
                d = ev.qty if ev.side is Side.BUY else -ev.qty
                m.qty[ev.symbol] += d
                m.last[ev.symbol] = ev.price
                m.cash -= d * ev.price + ev.fee
                if ev.leg is None and ev.order_id in m.pending:
                    m.pending[ev.order_id][1] -= ev.qty
                    if isinstance(ev, OrderFilled) or m.pending[ev.order_id][1] <= 0:
                        del m.pending[ev.order_id]
            elif isinstance(ev, OrderCanceled | OrderRejected):
                if getattr(ev, "leg", None) is None:
                    m.pending.pop(ev.order_id, None)
            elif isinstance(ev, DailyPnLChanged):
                m.pnl[ev.session_date] = ev.total
            elif isinstance(ev, DailyLossWarningIssued):
                m.warnings[ev.session_date] += 1
            elif isinstance(ev, EmergencyStopTriggered):
                m.stops[ev.session_date] += 1
                if ev.actions["halt_new_trades"]:
                    m.halts.append((ev.session_date, ev.actions["require_manual_restart"]))
            elif isinstance(ev, TradingResumed):
                m.halts.clear()
        return m

    def halted(self, day: date) -> bool:
        return any(manual or day <= d for d, manual in self.halts)

    def equity(self) -> Decimal:
        return self.cash + sum((q * self.last[s] for s, q in self.qty.items() if q), Decimal(0))

    def buying_power(self) -> Decimal:
        gross = sum((abs(q) * self.last[s] for s, q in self.qty.items() if q), Decimal(0))
        notional = sum((a.entry * rem for a, rem in self.pending.values()), Decimal(0))
        return self.equity() - gross - notional

    def symbols(self) -> set[str]:
        return {s for s, q in self.qty.items() if q} | {a.symbol for a, _ in self.pending.values()}

    def signed_pending(self, symbol: str) -> Decimal:
        return sum((rem if a.side is Side.BUY else -rem
                    for a, rem in self.pending.values() if a.symbol == symbol), Decimal(0))

    def pending_stop_risk(self) -> Decimal:
        return sum((rem * abs(a.entry - a.stop_loss) for a, rem in self.pending.values()),
                   Decimal(0))


def check_approval(a: OrderApproved, m: Model, s: Settings, day: date) -> None:
    lim = s.limits
    notional = a.qty * a.entry
    assert not m.halted(day), "approved while halted"
    assert a.qty >= 1 and a.qty == a.qty.to_integral_value(ROUND_FLOOR), "whole shares"
    assert notional <= lim.max_position_size_usd, "max_position_size_usd"
    assert notional <= m.buying_power(), "buying power"
    assert len(m.symbols() | {a.symbol}) <= lim.max_positions, "max_positions"
    risk = a.entry - a.stop_loss if a.side is Side.BUY else a.stop_loss - a.entry
    reward = a.take_profit - a.entry if a.side is Side.BUY else a.entry - a.take_profit
    assert risk > 0 and reward >= Decimal(str(lim.min_reward_risk)) * risk, "min_reward_risk"
    net = m.qty[a.symbol] + m.signed_pending(a.symbol) + (a.qty if a.side is Side.BUY
                                                           else -a.qty)
    pct = Decimal(str(lim.max_symbol_exposure_pct))
    assert abs(net) * a.entry <= pct * m.equity(), "max_symbol_exposure_pct"
    pnl = m.pnl.get(day, Decimal(0))
    assert pnl > -lim.max_daily_loss_usd, "daily loss"
    assert pnl - m.pending_stop_risk() - a.qty * risk >= -lim.max_daily_loss_usd, "stop risk"


@PROPS
@given(st.lists(guard_ops, min_size=10, max_size=80),
       st.sampled_from([Decimal(5000), Decimal(100000), Decimal(250000)]))
def test_no_approved_order_ever_breaks_a_limit(ops, start_cash):
    guard = RiskGuard(starting_cash=start_cash)
    history: list[Event] = []
    now = T0
    approvals = 0
    rules: set[str] = set()

    def feed(ev: Event, s: Settings) -> list[Event]:
        out = guard.handle(ev, s)
        history.append(ev)
        history.extend(out)
        return out

    for op in ops:
        kind = op[0]
        day = now.astimezone(NY).date()
        if kind == "signal":
            _, sym, side, entry_c, stop_bp, rr10, si = op
            entry = Decimal(entry_c) / 100
            dist = max(CENT, (entry * stop_bp / 10_000).quantize(CENT))
            sgn = 1 if side is Side.BUY else -1
            stop, target = entry - sgn * dist, entry + sgn * dist * rr10 / 10
            if stop <= 0 or target <= 0:
                continue
            s = LIMIT_SETS[si]
            before = Model.replay(history, start_cash)
            (out,) = feed(signal(sym, side, entry, stop, target, when=now), s)
            if isinstance(out, OrderApproved):
                approvals += 1
                check_approval(out, before, s, day)
            else:
                assert isinstance(out, OrderDenied)
                assert (out.rule == "halted") == before.halted(day)
                rules.add(out.rule)
        elif kind in ("fill", "cancel"):
            m = Model.replay(history, start_cash)
            if not m.pending:
                continue
            order_id = sorted(m.pending)[op[1] % len(m.pending)]
            a, remaining = m.pending[order_id]
            if kind == "cancel":
                feed(canceled(order_id, a.symbol, now, client_order_id=a.client_order_id),
                     LIMIT_SETS[0])
                continue
            _, _, pct, move_bp = op
            q = (remaining * pct / 100).to_integral_value(ROUND_FLOOR)
            price = max(CENT, (a.entry * (10_000 + move_bp) / 10_000).quantize(CENT))
            if q >= remaining or q < 1:
                ev = fill(a.symbol, a.side, remaining, price, order_id=order_id, when=now,
                          client_order_id=a.client_order_id)
            else:
                ev = fill(a.symbol, a.side, q, price, order_id=order_id, partial=True, when=now,
                          client_order_id=a.client_order_id)
            feed(ev, LIMIT_SETS[0])
        elif kind == "exit":
            _, sym, move_bp = op
            m = Model.replay(history, start_cash)
            q = m.qty[sym]
            if q:
                price = max(CENT, (m.last[sym] * (10_000 + move_bp) / 10_000).quantize(CENT))
                side = Side.SELL if q > 0 else Side.BUY
                feed(fill(sym, side, abs(q), price, leg="stop_loss", when=now), LIMIT_SETS[0])
        elif kind == "pnl":
            _, cents, si = op
            s = LIMIT_SETS[si]
            total = Decimal(cents) / 100
            out = feed(pnl_changed(total, session_date=day, when=now), s)
            m = Model.replay(history, start_cash)
            lim = s.limits
            # each alarm exactly once per date, as soon as its threshold is reached
            warn_at = -lim.max_daily_loss_usd * Decimal(str(lim.warning_threshold_pct))
            assert m.warnings[day] == (1 if total <= warn_at or m.warnings[day] else 0)
            assert m.stops[day] == (1 if total <= -lim.max_daily_loss_usd or m.stops[day]
                                    else 0)
            for ev in out:
                assert isinstance(ev, DailyLossWarningIssued | EmergencyStopTriggered)
                assert ev.pnl == total and ev.session_date == day
        elif kind == "wait":
            now += timedelta(minutes=op[1])
        elif kind == "resume":
            feed(resumed(now), LIMIT_SETS[0])
        elif kind == "restart":
            guard = RiskGuard(starting_cash=start_cash)
            guard.rebuild(history)
    event(f"approvals: {min(approvals, 3)}{'+' if approvals >= 3 else ''}")
    for rule in rules:
        event(f"denied: {rule}")
