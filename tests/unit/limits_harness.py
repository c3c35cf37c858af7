"""Harness for the limit tests: run generated or bundled bars through the in-process
pipeline (every handler, the simulated broker, no NATS) and check the log.

`check_limits` asserts, over a run's events in dispatch order:

1. no buy fill takes a position over max_position_size_usd (at the fill price; shorts are
   sized with a buffer only, see docs/execution.md);
2. no position without a signal behind it: every fill that opens or grows a position is an
   approved entry of that side on a flat symbol; any other fill (legs, closes) only reduces;
3. no approval lets the open and pending stops together break the daily limit: at every
   OrderApproved, today's realized P&L - open positions' losses to their stops - pending and
   this entry's losses from their limits to their stops >= -max_daily_loss_usd.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from adapters.runtime.app import build_sim_pipeline
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.pipeline import Recorder
from adapters.runtime.simulation import MarketTape, SimulatedClock, data_event_id
from config.settings import Settings
from domain.calendar import session_date
from domain.events import (
    Event,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    SignalGenerated,
)
from domain.pnl import ZERO, Position, apply_fill
from domain.values import Bar, Side

CENT = Decimal("0.01")
DAY = date(2024, 3, 4)  # a Monday; the session is 14:30-21:00 UTC
OPEN = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@dataclass
class _Pending:
    symbol: str
    side: Side
    remaining: Decimal
    limit: Decimal
    stop: Decimal | None


def check_limits(events: list[Event], settings: Settings) -> dict[str, int]:
    """Assert the three properties over a run's events (in dispatch order)."""
    cap = settings.limits.max_position_size_usd
    loss_limit = settings.limits.max_daily_loss_usd
    approvals: dict[str, OrderApproved] = {}
    pending: dict[str, _Pending] = {}
    positions: dict[str, Position] = {}
    stops: dict[str, Decimal] = {}
    realized: dict[date, Decimal] = {}
    counts = {"approvals": 0, "fills": 0, "entries": 0}
    for ev in events:
        if isinstance(ev, OrderApproved):
            counts["approvals"] += 1
            day = session_date(ev.occurred_at)
            limit = ev.limit_price or ev.entry
            open_risk = sum((max(ZERO, (p.avg_price - stops[s]) * p.qty)  # type: ignore[operator]
                             for s, p in positions.items() if p.qty and s in stops), ZERO)
            pending_risk = sum((p.remaining * abs(p.limit - p.stop)
                                for p in pending.values() if p.stop is not None), ZERO)
            new_risk = ev.qty * abs(limit - ev.stop_loss) if ev.stop_loss is not None else ZERO
            worst = realized.get(day, ZERO) - open_risk - pending_risk - new_risk
            assert worst >= -loss_limit, (ev, worst)
            approvals[ev.client_order_id] = ev
            pending[ev.client_order_id] = _Pending(ev.symbol, ev.side, ev.qty, limit,
                                                   ev.stop_loss)
        elif isinstance(ev, OrderCanceled | OrderRejected):
            if getattr(ev, "leg", None) is None:
                pending.pop(ev.client_order_id, None)
        elif isinstance(ev, OrderFilled | OrderPartiallyFilled):
            counts["fills"] += 1
            before = positions.get(ev.symbol, Position())
            result = apply_fill(before, ev.side, ev.qty, ev.price, ev.fee)
            after = result.position
            day = session_date(ev.occurred_at)
            realized[day] = realized.get(day, ZERO) + result.realized - ev.fee
            grows = abs(after.qty) > abs(before.qty) or result.opened
            if grows:
                counts["entries"] += 1
                approval = approvals.get(ev.client_order_id)
                assert ev.leg is None and approval is not None, f"no signal behind {ev}"
                assert approval.side == ev.side and approval.symbol == ev.symbol, ev
                assert before.qty == 0 or (before.qty > 0) == (after.qty > 0), ev
                assert not result.opened or before.qty == 0, f"flipped through zero: {ev}"
                if ev.side is Side.BUY:
                    # (A sell short fills at its limit or higher, so its cap is a buffer,
                    # not a bound: docs/execution.md. The strategy is long only.)
                    assert abs(after.qty) * ev.price <= cap, f"over the cap: {ev}"
            else:
                assert after.qty == 0 or (after.qty > 0) == (before.qty > 0), ev
            positions[ev.symbol] = after
            if after.is_flat:
                stops.pop(ev.symbol, None)
            if ev.leg is None and ev.client_order_id in pending:
                p = pending[ev.client_order_id]
                if grows and p.stop is not None:
                    stops[ev.symbol] = p.stop
                p.remaining -= ev.qty
                if isinstance(ev, OrderFilled) or p.remaining <= 0:
                    del pending[ev.client_order_id]
    return counts


def run_pipeline(settings: Settings, tape: MarketTape, signals: Sequence[SignalGenerated] = (),
                 scanner: bool = False, days: list[date] | None = None) -> list[Event]:
    events: list[Event] = []

    async def go() -> None:
        pipeline, _ = build_sim_pipeline(settings, SettingsHolder(settings), Recorder(None),
                                         [events.append], scanner=scanner, alerts=False)
        extra: dict[datetime, list[Event]] = {}
        for s in signals:
            extra.setdefault(s.occurred_at, []).append(s)
        await SimulatedClock(pipeline, tape, "limits-test", extra_events=extra).run(days)

    asyncio.run(go())
    return events


# --- generated series -------------------------------------------------------------------------


def _cents(x: float) -> Decimal:
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_HALF_UP)


def generate(seed: int, symbols: int = 3, minutes: int = 150, n_signals: int = 14
             ) -> tuple[MarketTape, list[SignalGenerated]]:
    """Random walks with gaps (2-5 % at ~4 % of bars, either way) and signals at the last
    close: mostly buys, some sells, repeats on the same symbol."""
    rng = random.Random(seed)
    names = [f"S{i}" for i in range(symbols)]
    closes: dict[str, list[Decimal]] = {}
    bars: list[Bar] = []
    for name in names:
        price = rng.uniform(8, 300)
        closes[name] = []
        for m in range(minutes):
            gap = rng.choice((-1, 1)) * rng.uniform(0.02, 0.05) if rng.random() < 0.04 else 0
            o = price * (1 + gap)
            c = o * (1 + rng.gauss(0, 0.004))
            h = max(o, c) * (1 + abs(rng.gauss(0, 0.002)))
            lo = min(o, c) * (1 - abs(rng.gauss(0, 0.002)))
            bar = Bar(symbol=name, timestamp=OPEN + m * MINUTE, open=_cents(o), high=_cents(h),
                      low=_cents(lo), close=_cents(c), volume=1000)
            bars.append(bar)
            closes[name].append(bar.close)
            price = c
    signals = []
    for i in range(n_signals):
        name = rng.choice(names)
        m = rng.randrange(1, minutes - 5)
        entry = closes[name][m - 1]  # the last close known at the start of minute m
        side = Side.BUY if rng.random() < 0.8 else Side.SELL
        dist = entry * Decimal(str(round(rng.uniform(0.005, 0.03), 4)))
        sign = 1 if side is Side.BUY else -1
        stop = (entry - sign * dist).quantize(CENT)
        target = (entry + sign * dist * Decimal("2.5")).quantize(CENT)
        at = OPEN + m * MINUTE
        signals.append(SignalGenerated(
            event_id=data_event_id("signal", f"{seed}:{i}", "limits-test"),
            type="SignalGenerated", occurred_at=at, correlation_id="limits-test",
            signal_id=f"sig-{seed}-{i}", symbol=name, side=side, entry=entry,
            stop_loss=stop, take_profit=target))
    return MarketTape.from_data(bars), signals


def limits_settings(slippage: float = 0.01, **limits: object) -> Settings:
    return Settings.model_validate({
        "risk": {"risk_limits": {"max_positions": 5, **limits}},
        "trading": {"order_execution": {"entry_limit_slippage_pct": slippage},
                    "alerts": {"enabled": False}},
    })


