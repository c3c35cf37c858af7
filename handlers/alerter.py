"""Alerter: decides what a trader must hear about. Delivery (email, webhook) is an adapter's job.

Every decision is an `AlertRaised` (with everything the template needs in `context`) or an
`AlertSuppressed` naming the rule that held it back. Rate limits run on event time:

- `alerts.cooldown_minutes` per alert kind, `alerts.hourly_cap` over a sliding hour;
- CRITICAL alerts are never rate-limited (they still count towards the hour), and the hourly
  cap holds back INFO only: a burst of trade emails must never cost the trader a WARNING;
- `alerts.enabled: false` suppresses everything with rule "disabled", and
  `emergency_actions.notify_via_email: false` does the same for the emergency-stop alert.

The limit state is evolved from AlertRaised / AlertSuppressed, so it rebuilds from the log.

Trades are batched rather than dropped: an entry fill that the limits hold back stays
pending and goes out with the next "Trades executed" alert once the limits allow (checked on
every later event, P&L ticks included), and every trade of the day is in the daily summary.
A trade's close (bracket leg, end-of-day flatten, max hold, emergency stop) is batched the
same way as `trade_closed`, with its exit reason and round-trip P&L.

Alerts decided in a simulated run (the simulated broker) carry `context["simulated"]`, so
every email of a demo says so in its subject.

What each alert says (title, template context) and the day's record it is built from are in
handlers/alert_content.py; here is when and whether an alert goes.

Past ~400 lines: the rate limits, the batching of held-back trades and closes, and the state
they read are one invariant (an item is pending until an AlertRaised or the daily summary
names it, and a rebuild from the log must arrive at the same pending items); split, each
half would have to know the other's bookkeeping.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from domain.events import (
    AlertFailed,
    AlertRaised,
    AlertSuppressed,
    DailyLossWarningIssued,
    DailyPnLChanged,
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    Event,
    HandlerCrashLooping,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    ReconciliationDiscrepancyFound,
    SessionEnded,
    SessionStarted,
    SignalGenerated,
    TradingResumed,
)
from domain.values import Severity, derive_id, to_cents
from handlers import alert_content as content
from handlers.alert_content import DayRecord, _iso, _s
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings

# Alert kinds (also the template names in adapters/templates/alert_<kind>.*).
EMERGENCY_STOP = "emergency_stop"
EMERGENCY_STOP_FAILED = "emergency_stop_failed"
DAILY_LOSS_WARNING = "daily_loss_warning"
SESSION_STARTED = "session_started"
TRADES_EXECUTED = "trades_executed"
DAILY_SUMMARY = "daily_summary"
RECONCILIATION_DISCREPANCY = "reconciliation_discrepancy"
HANDLER_CRASH_LOOPING = "handler_crash_looping"
TRADING_RESUMED = "trading_resumed"
TRADE_CLOSED = "trade_closed"
ALERT_CHANNEL_FAILED = "alert_channel_failed"
# Kinds whose held-back items go out together later: their own suppressions are in the
# email that finally goes, so they are not "held back" from it.
_BATCHED = (TRADES_EXECUTED, TRADE_CLOSED)

_HOUR = timedelta(hours=1)
_KNOWN_ALERTS_LIMIT = 10_000


def alert_id_for(trigger: Event, kind: str) -> str:
    """Derived from the triggering event: the same trigger always names the same alert."""
    return str(derive_id(trigger.event_id, f"alert:{kind}"))


@dataclass
class _Entry:
    """An approved entry order, followed until it fills."""

    order_id: str
    symbol: str
    side: str
    qty: Decimal
    entry: Decimal
    stop_loss: Decimal | None
    take_profit: Decimal | None
    reason: str
    filled_qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)  # sum(qty * price) over the fills, for the average price
    alerted: bool = False


class Alerter(Handler):
    """See the module docstring. State follows the log; `decide` is pure."""

    name: ClassVar[str] = "alerter"
    emits: ClassVar[frozenset[str]] = frozenset({"AlertRaised", "AlertSuppressed"})
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.session.>",
        "catalyst.signal.>",
        "catalyst.order.>",
        "catalyst.risk.>",
        "catalyst.pnl.>",
        "catalyst.broker.>",
        "catalyst.ops.>",
        "catalyst.position.closed",
        "catalyst.alert.raised",
        "catalyst.alert.suppressed",
        "catalyst.alert.failed",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset(
        cls.__name__
        for cls in (
            SessionStarted, SessionEnded, SignalGenerated, OrderApproved, OrderSubmitted,
            OrderPartiallyFilled, OrderFilled, OrderCanceled, OrderRejected,
            DailyLossWarningIssued,
            EmergencyStopTriggered, EmergencyStopCompleted, EmergencyStopFailed,
            TradingResumed, DailyPnLChanged, ReconciliationDiscrepancyFound,
            HandlerCrashLooping, AlertRaised, AlertSuppressed, AlertFailed, PositionClosed,
        )
    )

    def __init__(self) -> None:
        super().__init__()
        # rate-limit state, evolved from AlertRaised / AlertSuppressed
        self.last_raised: dict[str, datetime] = {}
        self.recent: deque[datetime] = deque()  # raise times, pruned to the last hour
        self.suppressed_since_raised = 0
        self.suppressed_by_kind: dict[str, int] = {}  # since the last AlertRaised
        self.simulated = False  # the session runs on the simulated broker
        self.channels_reported: set[str] = set()  # channels already named in an ops alert
        self.exit_reasons: dict[str, str] = {}  # symbol -> why its position is being closed
        self.pending_closes: list[dict[str, Any]] = []
        self.last_by_symbol: dict[str, str] = {}  # the last DailyPnLChanged.by_symbol
        self.by_symbol_at_trigger: dict[str, str] = {}
        self.known_alerts: OrderedDict[str, None] = OrderedDict()
        # what the templates need, evolved from the trading events
        self.signal_reasons: dict[str, str] = {}
        self.entries: dict[str, _Entry] = {}
        self.pending_trades: list[dict[str, Any]] = []
        self.stop_trigger: EmergencyStopTriggered | None = None
        self.day = DayRecord()
        self._fill_keys: OrderedDict[tuple[str, str], None] = OrderedDict()  # fills seen

    # --- evolve ---------------------------------------------------------------------------

    def evolve(self, event: Event) -> None:
        match event:
            case AlertRaised():
                self._remember(event.alert_id)
                self.last_raised[event.kind] = event.occurred_at
                self.recent.append(event.occurred_at)
                self._prune(event.occurred_at)
                self.suppressed_since_raised = 0
                self.suppressed_by_kind = {}
                if event.kind == ALERT_CHANNEL_FAILED:
                    self.channels_reported.add(str(event.context.get("channel")))
                if event.kind == TRADE_CLOSED:
                    sent = set(event.context.get("close_ids", ()))
                    self.pending_closes = [
                        c for c in self.pending_closes if c["close_id"] not in sent
                    ]
                elif event.kind == TRADES_EXECUTED:
                    sent = set(event.context.get("order_ids", ()))
                    self.pending_trades = [
                        t for t in self.pending_trades if t["order_id"] not in sent
                    ]
                elif event.kind == DAILY_SUMMARY:
                    self.pending_trades = []
                    self.pending_closes = []
            case AlertSuppressed():
                self._remember(event.alert_id)
                self.suppressed_since_raised += 1
                self.suppressed_by_kind[event.kind] = self.suppressed_by_kind.get(event.kind, 0) + 1
                if event.kind == DAILY_SUMMARY:
                    self.pending_trades = []
                    self.pending_closes = []
            case SessionStarted():
                self.day = DayRecord(
                    session_date=event.session_date,
                    session={"mode": event.mode, "broker": event.broker},
                )
                self.pending_trades = []
                self.pending_closes = []
                self.exit_reasons.clear()
                self.channels_reported.clear()  # a new day: say it again if still broken
                self.simulated = event.broker == "sim"
                self.stop_trigger = None
                self.signal_reasons.clear()  # signals never approved: no longer needed
            case SignalGenerated():
                self.signal_reasons[event.signal_id] = event.reason
            case OrderApproved():
                self.entries[event.order_id] = _Entry(
                    order_id=event.order_id,
                    symbol=event.symbol,
                    side=str(event.side),
                    qty=event.qty,
                    entry=event.entry,
                    stop_loss=event.stop_loss,
                    take_profit=event.take_profit,
                    reason=self.signal_reasons.pop(event.signal_id, "") or event.reason,
                )
            case OrderSubmitted():
                entry = self.entries.get(event.order_id)
                if entry is not None:
                    # the broker-side legs are what actually protects the position
                    entry.stop_loss = event.stop_loss or entry.stop_loss
                    entry.take_profit = event.take_profit or entry.take_profit
            case OrderPartiallyFilled() | OrderFilled():
                self._track_fill(event)
                entry = self.entries.get(event.order_id)
                if entry is not None and event.leg is None:
                    entry.filled_qty += event.qty
                    entry.notional += event.qty * event.price
                    if isinstance(event, OrderFilled):
                        self._entry_done(entry, event)
            case OrderRejected():
                self.entries.pop(event.order_id, None)
            case OrderCanceled():
                entry = self.entries.get(event.order_id)
                if entry is not None and entry.filled_qty > 0:
                    self._entry_done(entry, event)  # partly filled, rest canceled: a trade
                else:
                    self.entries.pop(event.order_id, None)
            case DailyPnLChanged():
                self._track_pnl(event)
            case EmergencyStopTriggered():
                self.stop_trigger = event
                # P&L per symbol at the trigger (realized + open), for the stop's email
                self.by_symbol_at_trigger = dict(self.last_by_symbol)
            case PositionClosed():
                self.exit_reasons[event.symbol] = event.reason
            case _:
                pass

    def _remember(self, alert_id: str) -> None:
        self.known_alerts[alert_id] = None
        if len(self.known_alerts) > _KNOWN_ALERTS_LIMIT:
            self.known_alerts.popitem(last=False)

    def _prune(self, now: datetime) -> None:
        while self.recent and self.recent[0] <= now - _HOUR:
            self.recent.popleft()

    def _entry_done(self, entry: _Entry, event: Event) -> None:
        del self.entries[entry.order_id]
        avg = to_cents(entry.notional / entry.filled_qty)
        trade = {
            "order_id": entry.order_id,
            "symbol": entry.symbol,
            "side": entry.side,
            "qty": str(entry.filled_qty),
            "entry": str(avg),
            "stop_loss": _s(entry.stop_loss),
            "take_profit": _s(entry.take_profit),
            "reason": entry.reason,
            "filled_at": _iso(event.occurred_at),
        }
        self.day.trades.append(trade)
        self.pending_trades.append(trade)

    def _track_fill(self, fill: OrderFilled | OrderPartiallyFilled) -> None:
        """Round-trip P&L per symbol, for the summary's largest win/loss and the trade-closed
        alerts. A fill already seen (same order and fill id) counts once."""
        key = (fill.order_id, fill.fill_id)
        if fill.fill_id and key in self._fill_keys:
            return
        self._fill_keys[key] = None
        if len(self._fill_keys) > 10_000:
            self._fill_keys.popitem(last=False)
        if fill.leg == "stop_loss":
            reason = "stop-loss"
        elif fill.leg == "take_profit":
            reason = "take-profit"
        else:  # PositionClosed (flatten, max hold, emergency stop) says why, when it came
            reason = self.exit_reasons.get(fill.symbol, "exit").replace("_", " ")
        close = self.day.apply_fill(fill, reason)
        if close is not None:
            self.exit_reasons.pop(fill.symbol, None)
            self.pending_closes.append(close)

    def _track_pnl(self, event: DailyPnLChanged) -> None:
        self.last_by_symbol = dict(event.by_symbol)
        self.day = self.day.follow_pnl(event)

    # --- decide ---------------------------------------------------------------------------

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        # An alert already decided (its AlertRaised/AlertSuppressed is in the log) is not
        # decided again, even if its trigger comes back after the log's duplicate window.
        return [
            out for out in self._decide(event, settings)
            if out.alert_id not in self.known_alerts  # type: ignore[attr-defined]
        ]

    def _decide(self, event: Event, settings: Settings) -> list[Event]:
        match event:
            case EmergencyStopCompleted():
                return self._emergency_stop(event, settings)
            case EmergencyStopFailed():
                return [self._stop_failed(event, settings)]
            case DailyLossWarningIssued():
                return [self._loss_warning(event, settings)]
            case SessionStarted():
                return [self._session_started(event, settings)]
            case OrderFilled() | OrderPartiallyFilled() | OrderCanceled() if (
                self._just_traded(event) or self._just_closed(event)
            ):
                out: list[Event] = []
                if self._just_traded(event):
                    out.append(self._trades(event, settings, on_trigger=True))  # type: ignore[arg-type]
                if self._just_closed(event):
                    out.append(self._closes(event, settings, on_trigger=True))  # type: ignore[arg-type]
                return out
            case AlertFailed():
                return self._channel_failed(event, settings)
            case SessionEnded():
                return [self._daily_summary(event, settings)]
            case ReconciliationDiscrepancyFound():
                return [self._discrepancy(event, settings)]
            case HandlerCrashLooping():
                return [self._crash_looping(event, settings)]
            case TradingResumed():
                return [self._resumed(event, settings)]
            case AlertRaised() | AlertSuppressed():
                return []
        # Any other event moves event time on: send trades the limits held back earlier.
        held: list[Event] = []
        if self.pending_trades:
            trades = self._trades(event, settings, on_trigger=False)
            held += [trades] if trades is not None else []
        if self.pending_closes:
            closes = self._closes(event, settings, on_trigger=False)
            held += [closes] if closes is not None else []
        return held

    def _just_traded(self, event: Event) -> bool:
        order_id = getattr(event, "order_id", None)
        return any(t["order_id"] == order_id for t in self.pending_trades)

    def _just_closed(self, event: Event) -> bool:
        key = str(event.event_id)
        return any(c["close_id"] == key for c in self.pending_closes)

    # --- the rate limits ------------------------------------------------------------------

    def _blocked_by(
        self, kind: str, severity: Severity, at: datetime, settings: Settings
    ) -> str | None:
        alerts = settings.trading.alerts
        if not alerts.enabled:
            return "disabled"
        if kind == EMERGENCY_STOP and not settings.emergency.notify_via_email:
            return "disabled"
        if severity == Severity.CRITICAL:
            return None  # never rate-limited
        last = self.last_raised.get(kind)
        cooldown = timedelta(minutes=alerts.cooldown_minutes)
        if cooldown and last is not None and at - last < cooldown:
            return "cooldown"
        if severity != Severity.INFO:
            return None  # the cap is for chatter: trade emails must not use up a WARNING's room
        in_last_hour = sum(1 for t in self.recent if t > at - _HOUR)
        if in_last_hour >= alerts.hourly_cap:
            return "hourly_cap"
        return None

    def _raise(
        self,
        trigger: Event,
        settings: Settings,
        *,
        kind: str,
        severity: Severity,
        title: str,
        context: dict[str, Any],
    ) -> AlertRaised | AlertSuppressed:
        alert_id = alert_id_for(trigger, kind)
        rule = self._blocked_by(kind, severity, trigger.occurred_at, settings)
        # Same event id whichever way it goes: a re-decision after a crash is a duplicate.
        if rule is not None:
            return AlertSuppressed.caused_by(
                trigger, 0, f"{self.name}:{kind}",
                alert_id=alert_id, kind=kind, severity=severity, rule=rule,
            )
        held = self.suppressed_since_raised
        if kind in _BATCHED:  # what the limits held of this kind is in this very email
            held -= self.suppressed_by_kind.get(kind, 0)
        context = {
            **context,
            "alert_id": alert_id,
            "occurred_at": _iso(trigger.occurred_at),
            "suppressed_before": held,
        }
        if self.simulated:
            context["simulated"] = True
        return AlertRaised.caused_by(
            trigger, 0, f"{self.name}:{kind}",
            alert_id=alert_id, kind=kind, severity=severity, title=title, context=context,
        )

    # --- one method per alert -------------------------------------------------------------

    def _emergency_stop(self, done: EmergencyStopCompleted, settings: Settings) -> list[Event]:
        title, context = content.emergency_stop(done, self.stop_trigger, settings,
                                                self.day.closes, self.by_symbol_at_trigger)
        return [self._raise(done, settings, kind=EMERGENCY_STOP, severity=Severity.CRITICAL,
                            title=title, context=context)]

    def _stop_failed(self, ev: EmergencyStopFailed, settings: Settings) -> Event:
        title, context = content.stop_failed(ev, self.stop_trigger)
        return self._raise(ev, settings, kind=EMERGENCY_STOP_FAILED,
                           severity=Severity.CRITICAL, title=title, context=context)

    def _loss_warning(self, ev: DailyLossWarningIssued, settings: Settings) -> Event:
        title, context = content.loss_warning(ev, settings)
        return self._raise(ev, settings, kind=DAILY_LOSS_WARNING, severity=Severity.WARNING,
                           title=title, context=context)

    def _session_started(self, ev: SessionStarted, settings: Settings) -> Event:
        title, context = content.session_started(ev, settings)
        return self._raise(ev, settings, kind=SESSION_STARTED, severity=Severity.INFO,
                           title=title, context=context)

    def _trades(
        self, trigger: Event, settings: Settings, *, on_trigger: bool
    ) -> AlertRaised | AlertSuppressed | None:
        if not on_trigger and self._blocked_by(
            TRADES_EXECUTED, Severity.INFO, trigger.occurred_at, settings
        ) is not None:
            # Still held back: the suppression is recorded once, at the fill itself. Asked
            # before building it, as every event while trades wait comes here.
            return None
        trades = self._marked(self.pending_trades, "filled_at")
        out = self._raise(
            trigger, settings, kind=TRADES_EXECUTED, severity=Severity.INFO,
            title=content.trades_title(trades),
            context={"trades": trades, "order_ids": [t["order_id"] for t in trades],
                     **self._halt_context()},
        )
        if isinstance(out, AlertSuppressed) and not on_trigger:
            return None  # still waiting; record a suppression once, at the fill itself
        return out

    def _marked(self, items: list[dict[str, Any]], at_key: str) -> list[dict[str, Any]]:
        """Items that happened before the emergency stop say so: their email may arrive
        after the stop's, and must not read as trading after the halt."""
        trig = self.stop_trigger
        if trig is None:
            return [dict(i) for i in items]
        stop_at = _iso(trig.occurred_at)
        return [{**i, "before_stop": i[at_key] <= stop_at} for i in items]

    def _halt_context(self) -> dict[str, Any]:
        trig = self.stop_trigger
        return {"stopped_at": _iso(trig.occurred_at)} if trig is not None else {}

    def _closes(
        self, trigger: Event, settings: Settings, *, on_trigger: bool
    ) -> AlertRaised | AlertSuppressed | None:
        """A trade's close: why (stop-loss, take-profit, flatten...) and its P&L. Held back
        and batched like entries; the daily summary lists every close of the day."""
        if not on_trigger and self._blocked_by(
            TRADE_CLOSED, Severity.INFO, trigger.occurred_at, settings
        ) is not None:
            return None
        closes = self._marked(self.pending_closes, "closed_at")
        total = sum((Decimal(c["pnl"]) for c in closes), Decimal(0))
        out = self._raise(
            trigger, settings, kind=TRADE_CLOSED, severity=Severity.INFO,
            title=content.closes_title(closes, total),
            context={"closes": closes, "close_ids": [c["close_id"] for c in closes],
                     "total_pnl": str(total), **self._halt_context()},
        )
        if isinstance(out, AlertSuppressed) and not on_trigger:
            return None
        return out

    def _channel_failed(self, ev: AlertFailed, settings: Settings) -> list[Event]:
        """A channel that fails for good (bad credentials, no TLS, refused address) will fail
        every alert until someone fixes the config: say so once per channel and day, as a
        CRITICAL through the other channels."""
        if ev.will_retry or ev.kind == ALERT_CHANNEL_FAILED or ev.channel in self.channels_reported:
            return []
        title, context = content.channel_failed(ev)
        return [self._raise(ev, settings, kind=ALERT_CHANNEL_FAILED, severity=Severity.CRITICAL,
                            title=title, context=context)]

    def _daily_summary(self, ev: SessionEnded, settings: Settings) -> Event:
        day = self.day if self.day.session_date in (None, ev.session_date) else DayRecord()
        title, context = content.daily_summary(ev, day, settings)
        return self._raise(ev, settings, kind=DAILY_SUMMARY, severity=Severity.INFO,
                           title=title, context=context)

    def _discrepancy(self, ev: ReconciliationDiscrepancyFound, settings: Settings) -> Event:
        title, context = content.discrepancy(ev)
        return self._raise(ev, settings, kind=RECONCILIATION_DISCREPANCY,
                           severity=Severity.CRITICAL, title=title, context=context)

    def _crash_looping(self, ev: HandlerCrashLooping, settings: Settings) -> Event:
        title, context = content.crash_looping(ev)
        return self._raise(ev, settings, kind=HANDLER_CRASH_LOOPING,
                           severity=Severity.CRITICAL, title=title, context=context)

    def _resumed(self, ev: TradingResumed, settings: Settings) -> Event:
        title, context = content.resumed(ev)
        return self._raise(ev, settings, kind=TRADING_RESUMED, severity=Severity.INFO,
                           title=title, context=context)
