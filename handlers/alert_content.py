"""What each alert says: its title and the context its templates render
(adapters/templates/alert_<kind>.*), built from the triggering event and the alerter's record
of the day (`DayRecord`: entries, round trips and closes, the P&L curve). Pure, like the
alerter, which decides whether and when an alert goes (handlers/alerter.py); nothing here
decides.

Context values are JSON-native (Decimal as str, datetimes as ISO strings, lists not tuples),
so an AlertRaised decoded from the log equals the one decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.events import (
    AlertFailed,
    DailyLossWarningIssued,
    DailyPnLChanged,
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    HandlerCrashLooping,
    OrderFilled,
    OrderPartiallyFilled,
    ReconciliationDiscrepancyFound,
    SessionEnded,
    SessionStarted,
    TradingResumed,
)
from domain.pnl import Position, apply_fill, win_rate
from domain.values import to_cents

if TYPE_CHECKING:
    from config.settings import Settings

RESUME_COMMAND = 'catalyst resume --reason "..."'
Content = tuple[str, dict[str, Any]]  # (title, context)
_MAX_CURVE_POINTS = 24 * 60  # one point per minute at most


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _iso(value: datetime | date) -> str:
    return value.isoformat()


def signed_money(value: Decimal) -> str:
    sign = "+" if value > 0 else "-" if value < 0 else ""
    return f"{sign}${abs(to_cents(value)):,}"


@dataclass
class RoundTrip:
    """Per-symbol round trip: open -> flat, for the day's largest win/loss."""

    book: Position = field(default_factory=Position)  # the shared P&L maths (domain.pnl)
    realized: Decimal = Decimal(0)  # this round trip's, net of fees
    peak: Decimal = Decimal(0)  # the largest size held in this round trip
    entry_price: Decimal = Decimal(0)  # average entry of the round trip


@dataclass
class DayRecord:
    """The session date as the daily summary tells it."""

    session_date: date | None = None
    session: dict[str, Any] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)  # every entry fill today
    round_trips: list[Decimal] = field(default_factory=list)  # closed trades' P&L
    closes: list[dict[str, Any]] = field(default_factory=list)  # every close today
    positions: dict[str, RoundTrip] = field(default_factory=dict)
    curve: dict[str, str] = field(default_factory=dict)  # minute ISO -> total P&L
    pnl_low: Decimal | None = None
    pnl_high: Decimal | None = None

    def apply_fill(self, fill: OrderFilled | OrderPartiallyFilled, reason: str
                   ) -> dict[str, Any] | None:
        """A fill, new to the alerter, on its symbol's round trip (average cost,
        domain.pnl); the close it completes (`reason`: why it closed), if it does."""
        pos = self.positions.setdefault(fill.symbol, RoundTrip())
        direction = "long" if pos.book.qty > 0 else "short"
        result = apply_fill(pos.book, fill.side, fill.qty, fill.price, fill.fee)
        pos.book = result.position
        pos.realized += result.realized - fill.fee
        if result.closed_qty and (result.position.is_flat or result.opened):
            pnl = to_cents(pos.realized)
            self.round_trips.append(pnl)
            close = {
                "close_id": str(fill.event_id),
                "symbol": fill.symbol,
                "direction": direction,
                "qty": str(pos.peak),
                "entry": str(to_cents(pos.entry_price)),
                "exit": str(fill.price),
                "pnl": str(pnl),
                "reason": reason,
                "closed_at": _iso(fill.occurred_at),
            }
            self.closes.append(close)
            pos.realized = Decimal(0)
            pos.peak = abs(pos.book.qty)
            pos.entry_price = pos.book.avg_price or Decimal(0)
            return close
        if not result.closed_qty:
            pos.peak = max(pos.peak, abs(pos.book.qty))
            pos.entry_price = pos.book.avg_price or Decimal(0)
        return None

    def follow_pnl(self, event: DailyPnLChanged) -> DayRecord:
        """The P&L curve and range; a later date starts a new record (returned)."""
        day = self
        if day.session_date is not None and event.session_date != day.session_date:
            if event.session_date < day.session_date:
                return day  # a late tick from an earlier day
            day = DayRecord(session_date=event.session_date)
        day.session_date = event.session_date
        minute = event.occurred_at.replace(second=0, microsecond=0)
        day.curve[_iso(minute)] = str(event.total)
        if len(day.curve) > _MAX_CURVE_POINTS:
            day.curve.pop(next(iter(day.curve)))
        low = min(event.total, event.intraday_low)
        day.pnl_low = low if day.pnl_low is None else min(day.pnl_low, low)
        high = event.total
        day.pnl_high = high if day.pnl_high is None else max(day.pnl_high, high)
        return day


def emergency_stop(done: EmergencyStopCompleted, trig: EmergencyStopTriggered | None,
                   settings: Settings, closes: list[dict[str, Any]],
                   by_symbol_at_trigger: dict[str, str]) -> Content:
    positions = [
        {
            "symbol": p.symbol,
            "qty": str(p.qty),
            "price": _s(p.price),
            "realized_pnl": _s(p.realized_pnl),
        }
        for p in done.positions_closed
    ]
    context = {
        "session_date": _iso(done.session_date),
        "reason": trig.reason if trig else "emergency stop",
        "triggered_at": _iso(trig.occurred_at) if trig else None,
        "pnl_at_trigger": _s(trig.pnl) if trig else None,
        "loss_limit": _s(trig.limit if trig else settings.limits.max_daily_loss_usd),
        "actions": dict(trig.actions) if trig else {},
        "orders_canceled": done.orders_canceled,
        "positions_closed": positions,
        "realized_pnl_after": str(done.realized_pnl_after),
        # What brought the day to the limit: the trades closed before the trigger, worst
        # first, and the open positions' P&L at the last mark before it.
        "losses_before": sorted(
            (
                {k: c[k] for k in ("symbol", "direction", "qty", "pnl", "reason",
                                   "closed_at")}
                for c in closes
                if trig is None or c["closed_at"] <= _iso(trig.occurred_at)
            ),
            key=lambda c: Decimal(c["pnl"]),
        ),
        "pnl_by_symbol_at_trigger": dict(sorted(by_symbol_at_trigger.items(),
                                       key=lambda kv: Decimal(kv[1]))),
        "failures": list(done.failures),
        "halted": settings.emergency.halt_new_trades,
        "manual_restart": settings.emergency.require_manual_restart,
        "resume_command": RESUME_COMMAND,
    }
    return "Emergency stop: trading halted", context


def stop_failed(ev: EmergencyStopFailed, trig: EmergencyStopTriggered | None) -> Content:
    return f"Emergency stop FAILED: broker unreachable (attempt {ev.attempt})", {
        "session_date": _iso(ev.session_date),
        "attempt": ev.attempt,
        "error": ev.error,
        "remaining_orders": ev.remaining_orders,
        "remaining_positions": ev.remaining_positions,
        "reason": trig.reason if trig else None,
        "pnl_at_trigger": _s(trig.pnl) if trig else None,
    }


def loss_warning(ev: DailyLossWarningIssued, settings: Settings) -> Content:
    pct = round(ev.pct_used * 100)
    return f"Daily loss at {pct}% of the limit", {
        "session_date": _iso(ev.session_date),
        "pnl": str(ev.pnl),
        "limit": str(ev.limit),
        "pct_used": ev.pct_used,
        "remaining": str(to_cents(ev.limit - abs(ev.pnl))),
        # One gap through both thresholds: the stop triggers in the same minute, so
        # "room before the stop" would be negative nonsense.
        "past_limit": abs(ev.pnl) >= ev.limit,
        "open_positions": ev.open_positions,
        "stop_actions": {
            "close_all_positions": settings.emergency.close_all_positions,
            "cancel_all_orders": settings.emergency.cancel_all_orders,
            "halt_new_trades": settings.emergency.halt_new_trades,
        },
    }


def session_started(ev: SessionStarted, settings: Settings) -> Content:
    limits = dict(ev.limits) or {
        "max_daily_loss_usd": str(settings.limits.max_daily_loss_usd),
        "max_positions": str(settings.limits.max_positions),
        "max_position_size_usd": str(settings.limits.max_position_size_usd),
    }
    return f"Trading session started ({ev.mode}, {ev.broker})", {
        "session_id": ev.session_id,
        "session_date": _iso(ev.session_date),
        "mode": ev.mode,
        "broker": ev.broker,
        "market_open": _iso(ev.market_open),
        "market_close": _iso(ev.market_close),
        "early_close": ev.early_close,
        "symbols": list(ev.symbols),
        "limits": limits,
    }


def trades_title(trades: list[dict[str, Any]]) -> str:
    if len(trades) > 1:
        return f"{len(trades)} trades executed"
    t = trades[0]
    return f"Trade executed: {t['side'].upper()} {t['qty']} {t['symbol']} @ {t['entry']}"


def closes_title(closes: list[dict[str, Any]], total: Decimal) -> str:
    if len(closes) == 1:
        c = closes[0]
        return f"Trade closed: {c['symbol']} {c['reason']}, {signed_money(Decimal(c['pnl']))}"
    return f"{len(closes)} trades closed, {signed_money(total)}"


def channel_failed(ev: AlertFailed) -> Content:
    return f"Alerts are not reaching you via {ev.channel}", {
        "channel": ev.channel,
        "reason": ev.reason,
        "failed_alert_id": ev.alert_id,
        "failed_kind": ev.kind,
        "failed_severity": str(ev.severity),
        # the broken channel would only fail again: the other channels carry it
        "exclude_channels": [ev.channel],
        "deliver_command": "catalyst alerts deliver",
        "test_command": "catalyst alerts test",
    }


def daily_summary(ev: SessionEnded, day: DayRecord, settings: Settings) -> Content:
    wins = [p for p in day.round_trips if p > 0]
    losses = [p for p in day.round_trips if p < 0]
    curve = [[t, v] for t, v in day.curve.items()]
    title = (f"Daily summary {ev.session_date.isoformat()}: {ev.trades} trades, "
             f"{signed_money(ev.realized_pnl)}")
    return title, {
        "session_id": ev.session_id,
        "session_date": _iso(ev.session_date),
        "mode": day.session.get("mode"),
        "broker": day.session.get("broker"),
        "trades": ev.trades,
        "wins": ev.wins,
        "losses": ev.losses,
        "win_rate": win_rate(ev.wins, ev.trades),
        "realized_pnl": str(ev.realized_pnl),
        "largest_win": _s(max(wins)) if wins else None,
        "largest_loss": _s(min(losses)) if losses else None,
        "trade_list": list(day.trades),
        "close_list": list(day.closes),
        "pnl_curve": curve,
        "pnl_low": _s(day.pnl_low),
        "pnl_high": _s(day.pnl_high),
        "loss_limit": str(settings.limits.max_daily_loss_usd),
        "warning_pct": settings.limits.warning_threshold_pct,
    }


def discrepancy(ev: ReconciliationDiscrepancyFound) -> Content:
    return f"Broker disagrees with our records: {ev.symbol} {ev.kind}", {
        "what": ev.kind,
        "symbol": ev.symbol,
        "broker": ev.broker,
        "recorded": ev.recorded,
        "resolution": ev.resolution,
    }


def crash_looping(ev: HandlerCrashLooping) -> Content:
    return f"Handler crash-looping: {ev.handler}", {
        "handler": ev.handler, "failures": ev.failures, "error": ev.error}


def resumed(ev: TradingResumed) -> Content:
    return f"Trading resumed by {ev.resumed_by}", {
        "resumed_by": ev.resumed_by, "reason": ev.reason}
