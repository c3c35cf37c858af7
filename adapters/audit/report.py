"""`catalyst audit report`: one trading day from the log, for a person who must answer
"why did it buy AAPL at 10:02 and why did it stop at 11:40".

The report is a fold over the day's window of the log (adapters.audit.replay.Window), with the
log before it read for the config in force only. Sections: the run and session(s), a
timeline, every scan with its scored candidates, every signal with its scores and the risk
decision on it, every risk decision with its rule and figures, every order with its fills,
the P&L curve (a matplotlib chart inlined as base64 PNG in the HTML), alerts and what became
of them, the config in force and its changes, emergency stops from trigger to completion.

The report is a plain dict (JSON format as is), rendered to self-contained HTML with
jinja2 (adapters/templates/audit_report.html) or flattened to CSV rows by
adapters/audit/report_render.py. It holds nothing that depends on where the log was read from
or when, so the same log gives the same bytes.

Past ~400 lines: `AuditBuilder` is one fold over the day's events, and its sections cross-
reference each other (a signal names its risk decision, an order its fills, a stop its
completion); split by section, each part would have to share the builder's indexes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.audit.replay import window_entries
from adapters.audit.settings_history import next_settings, recorded_settings
from adapters.audit.window import BEFORE, Window
from adapters.nats.log_source import LogEntry, LogSource, bulk_gc
from domain.calendar import NEW_YORK
from domain.events import (
    AlertFailed,
    AlertRaised,
    AlertSent,
    AlertSuppressed,
    ConfigChanged,
    ConfigRejected,
    DailyLossWarningIssued,
    DailyPnLChanged,
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    EntriesStopped,
    Event,
    FlattenRequested,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    PositionCloseRequested,
    ReconciliationDiscrepancyFound,
    RunStarted,
    ScanCompleted,
    SessionEnded,
    SessionStarted,
    SessionStartRejected,
    SessionStartRequested,
    SignalGenerated,
    TradingResumed,
)

# Config keys worth a trader's eye (dotted prefixes of the redacted settings).
CONFIG_SECTIONS = ("risk.", "trading.trading_session.", "trading.workflow.",
                   "trading.order_execution.", "trading.broker.kind", "trading.broker.mode",
                   "trading.broker.sim.", "trading.alerts.enabled", "trading.alerts.channels",
                   "trading.alerts.cooldown_minutes", "trading.alerts.hourly_cap",
                   "trading.market_data.source", "trading.market_data.symbols")


def _t(ts: datetime) -> str:
    return ts.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S")


def _s(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v if not isinstance(v, (list, tuple)) else ", ".join(map(str, v))
    return out


def _config_view(config: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(config)
    return {k: _s(v) for k, v in flat.items()
            if any(k.startswith(p) or k == p for p in CONFIG_SECTIONS)}


@dataclass
class AuditBuilder:
    window: Window
    events: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    run: dict[str, Any] | None = None
    config: dict[str, Any] | None = None  # redacted settings in force (from RunStarted)
    config_source: str = ""
    config_at_start: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    scans: list[dict[str, Any]] = field(default_factory=list)
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    pnl: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    stops: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    closes: list[dict[str, Any]] = field(default_factory=list)
    discrepancies: list[dict[str, Any]] = field(default_factory=list)
    _candidates: dict[Any, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _settings: Any = None

    # --- config (followed before and inside the window) -------------------------------------

    def _config_event(self, ev: Event, inside: bool) -> None:
        from config.loader import redacted

        if isinstance(ev, RunStarted):
            self.run = {"run_id": ev.run_id, "kind": ev.kind, "broker": ev.broker,
                        "handlers": list(ev.handlers), "started_at": _t(ev.occurred_at)}
            s = recorded_settings(ev) if ev.config else None
            if s is not None:
                self._settings = s
                self.config = redacted(s)
                self.config_source = f"recorded by RunStarted ({ev.run_id})"
            if inside:
                self._note(ev, f"run {ev.run_id} started ({ev.kind}, broker {ev.broker})")
        elif isinstance(ev, ConfigChanged):
            if self._settings is not None:
                self._settings = next_settings(self._settings, ev)
                self.config = redacted(self._settings)
            if inside:
                self.changes.append({"time": _t(ev.occurred_at), "source": ev.source,
                                     "changes": {k: v for k, v in sorted(ev.changes.items())},
                                     "accepted": True})
                self._note(ev, "config changed: " + ", ".join(
                    f"{k} {v[0]} -> {v[1]}" for k, v in sorted(ev.changes.items())))
        elif isinstance(ev, ConfigRejected) and inside:
            self.changes.append({"time": _t(ev.occurred_at), "source": ev.source,
                                 "changes": {}, "accepted": False, "error": ev.error})
            self._note(ev, f"config change rejected: {ev.error}")

    # --- the fold ----------------------------------------------------------------------------

    def add(self, phase: int, entry: LogEntry) -> None:
        ev = entry.event
        if phase == BEFORE:
            if isinstance(ev, RunStarted | ConfigChanged):
                self._config_event(ev, inside=False)
            return
        self.events += 1
        self.counts[ev.type] += 1
        if isinstance(ev, RunStarted | ConfigChanged | ConfigRejected):
            self._config_event(ev, inside=True)
            return
        if self.config_at_start is None:
            self.config_at_start = self.config or {}
        handler = getattr(self, f"_on_{ev.type}", None)
        if handler is not None:
            handler(ev)

    def _note(self, ev: Event, text: str, level: str = "info") -> None:
        self.timeline.append({"time": _t(ev.occurred_at), "type": ev.type, "text": text,
                              "level": level})

    def _on_SessionStartRequested(self, ev: SessionStartRequested) -> None:
        self._note(ev, f"session start requested by {ev.requested_by}")

    def _on_SessionStarted(self, ev: SessionStarted) -> None:
        self.sessions.append({
            "session_id": ev.session_id, "session_date": ev.session_date.isoformat(),
            "started_at": _t(ev.occurred_at), "mode": ev.mode, "broker": ev.broker,
            "market_open": _t(ev.market_open), "market_close": _t(ev.market_close),
            "early_close": ev.early_close, "limits": dict(sorted(ev.limits.items())),
            "ended": None,
        })
        self._note(ev, f"session {ev.session_id} started ({ev.mode}, broker {ev.broker}"
                   + (", early close" if ev.early_close else "") + ")")

    def _on_SessionStartRejected(self, ev: SessionStartRejected) -> None:
        self._note(ev, f"session start rejected: {ev.reason}", "warning")

    def _on_EntriesStopped(self, ev: EntriesStopped) -> None:
        self._note(ev, f"new entries stopped: {ev.reason}")

    def _on_FlattenRequested(self, ev: FlattenRequested) -> None:
        self._note(ev, f"flatten requested: {ev.reason}")

    def _on_SessionEnded(self, ev: SessionEnded) -> None:
        for s in self.sessions:
            if s["session_id"] == ev.session_id:
                s["ended"] = {"at": _t(ev.occurred_at), "trades": ev.trades, "wins": ev.wins,
                              "losses": ev.losses, "realized_pnl": _s(ev.realized_pnl)}
        self._note(ev, f"session ended: {ev.trades} trades ({ev.wins} won, {ev.losses} lost), "
                   f"realized {ev.realized_pnl}")

    def _on_ScanCompleted(self, ev: ScanCompleted) -> None:
        cands = [{
            "rank": c.rank, "symbol": c.symbol, "price": _s(c.price),
            "composite": round(c.composite, 4), "catalyst": round(c.catalyst, 4),
            "momentum": round(c.momentum, 4), "volume": round(c.volume, 4),
            "technical": round(c.technical, 4), "penalty": round(c.penalty, 4),
            "atr": _s(c.atr),
        } for c in ev.candidates]
        self._candidates[ev.event_id] = {c["symbol"]: c for c in cands}
        self.scans.append({"time": _t(ev.occurred_at), "scan_number": ev.scan_number,
                           "universe_size": ev.universe_size, "candidates": cands})

    def _on_SignalGenerated(self, ev: SignalGenerated) -> None:
        scores = self._candidates.get(ev.causation_id, {}).get(ev.symbol)
        self.signals[ev.signal_id] = {
            "time": _t(ev.occurred_at), "signal_id": ev.signal_id, "symbol": ev.symbol,
            "side": ev.side.value, "entry": _s(ev.entry), "stop_loss": _s(ev.stop_loss),
            "take_profit": _s(ev.take_profit), "score": ev.score, "reason": ev.reason,
            "scores": scores, "source": "scanner" if scores else "input",
            "decision": None,
        }

    def _decision(self, ev: OrderApproved | OrderDenied, d: dict[str, Any]) -> None:
        self.decisions.append(d)
        sig = self.signals.get(ev.signal_id)
        if sig is not None:
            sig["decision"] = {k: d[k] for k in ("outcome", "rule", "qty", "order_id")}

    def _on_OrderApproved(self, ev: OrderApproved) -> None:
        self._decision(ev, {
            "time": _t(ev.occurred_at), "outcome": "approved", "signal_id": ev.signal_id,
            "symbol": ev.symbol, "side": ev.side.value, "rule": None, "detail": ev.reason,
            "qty": _s(ev.qty), "order_id": ev.order_id,
            "figures": {"entry": _s(ev.entry), "stop_loss": _s(ev.stop_loss),
                        "take_profit": _s(ev.take_profit), "qty": _s(ev.qty),
                        "notional": _s(ev.qty * ev.entry)},
        })
        self.orders[ev.order_id] = {
            "order_id": ev.order_id, "client_order_id": ev.client_order_id,
            "symbol": ev.symbol, "side": ev.side.value, "qty": _s(ev.qty),
            "order_type": ev.order_type, "approved_at": _t(ev.occurred_at),
            "stop_loss": _s(ev.stop_loss), "take_profit": _s(ev.take_profit),
            "submitted_at": None, "broker_order_id": None, "status": "approved",
            "origin": "approved by the risk guard", "fills": [], "events": [],
        }

    def _on_OrderDenied(self, ev: OrderDenied) -> None:
        self._decision(ev, {
            "time": _t(ev.occurred_at), "outcome": "denied", "signal_id": ev.signal_id,
            "symbol": ev.symbol, "side": None, "rule": ev.rule, "detail": ev.detail,
            "qty": None, "order_id": None, "figures": dict(ev.figures),
        })

    def _order(self, ev: Any) -> dict[str, Any]:
        o = self.orders.get(ev.order_id)
        if o is None:  # a close order of the executor, or approved before the window
            side = getattr(ev, "side", None)
            o = self.orders[ev.order_id] = {
                "order_id": ev.order_id, "client_order_id": ev.client_order_id,
                "symbol": ev.symbol, "side": side.value if side else None,
                "qty": _s(getattr(ev, "filled_qty", None) or getattr(ev, "qty", None)),
                "order_type": None, "approved_at": None, "stop_loss": None,
                "take_profit": None, "submitted_at": None,
                "broker_order_id": getattr(ev, "broker_order_id", None), "status": "unknown",
                "origin": "not approved in this window (a close order, or older)",
                "fills": [], "events": [],
            }
        return o

    def _on_OrderSubmitted(self, ev: OrderSubmitted) -> None:
        o = self._order(ev)
        o.update(submitted_at=_t(ev.occurred_at), broker_order_id=ev.broker_order_id,
                 status="submitted", side=o["side"] or ev.side.value,
                 qty=o["qty"] or _s(ev.qty), order_type=o["order_type"] or ev.order_type)

    def _fill(self, ev: OrderFilled | OrderPartiallyFilled, partial: bool) -> None:
        o = self._order(ev)
        o["fills"].append({"time": _t(ev.occurred_at), "side": ev.side.value,
                           "qty": _s(ev.qty), "price": _s(ev.price), "fee": _s(ev.fee),
                           "leg": ev.leg or "entry", "partial": partial,
                           "fill_id": ev.fill_id})
        if ev.leg is None:
            o["status"] = "partially filled" if partial else "filled"
        elif not partial:
            o["status"] = f"closed by {ev.leg}"

    def _on_OrderPartiallyFilled(self, ev: OrderPartiallyFilled) -> None:
        self._fill(ev, True)

    def _on_OrderFilled(self, ev: OrderFilled) -> None:
        self._fill(ev, False)

    def _on_OrderCanceled(self, ev: OrderCanceled) -> None:
        o = self._order(ev)
        o["events"].append({"time": _t(ev.occurred_at), "what": "canceled"
                            + (f" ({ev.leg} leg)" if ev.leg else ""), "reason": ev.reason})
        if ev.leg is None:
            o["status"] = "canceled"

    def _on_OrderRejected(self, ev: OrderRejected) -> None:
        o = self._order(ev)
        o["events"].append({"time": _t(ev.occurred_at), "what": "rejected by the broker",
                            "reason": f"{ev.code}: {ev.message}"})
        o["status"] = "rejected"

    def _on_PositionCloseRequested(self, ev: PositionCloseRequested) -> None:
        self._note(ev, f"close {ev.symbol} requested ({ev.reason})")

    def _on_PositionClosed(self, ev: PositionClosed) -> None:
        self.closes.append({"time": _t(ev.occurred_at), "symbol": ev.symbol,
                            "qty": _s(ev.qty), "reason": ev.reason})

    def _on_DailyPnLChanged(self, ev: DailyPnLChanged) -> None:
        self.pnl.append({"time": _t(ev.occurred_at), "session_date": ev.session_date.isoformat(),
                         "total": _s(ev.total), "realized": _s(ev.realized),
                         "unrealized": _s(ev.unrealized), "fees": _s(ev.fees),
                         "intraday_low": _s(ev.intraday_low),
                         "open_positions": ev.open_positions})

    def _on_DailyLossWarningIssued(self, ev: DailyLossWarningIssued) -> None:
        self.warnings.append({"time": _t(ev.occurred_at), "pnl": _s(ev.pnl),
                              "limit": _s(ev.limit), "pct_used": round(ev.pct_used, 4)})
        self._note(ev, f"daily loss warning: P&L {ev.pnl} is {ev.pct_used:.0%} of the "
                   f"limit {ev.limit}", "warning")

    def _on_EmergencyStopTriggered(self, ev: EmergencyStopTriggered) -> None:
        self.stops.append({"triggered_at": _t(ev.occurred_at),
                           "session_date": ev.session_date.isoformat(), "pnl": _s(ev.pnl),
                           "limit": _s(ev.limit), "reason": ev.reason,
                           "actions": dict(sorted(ev.actions.items())), "failures": [],
                           "completed": None, "resumed": None})
        self._note(ev, f"EMERGENCY STOP: {ev.reason}", "critical")

    def _on_EmergencyStopFailed(self, ev: EmergencyStopFailed) -> None:
        if self.stops:
            self.stops[-1]["failures"].append({"time": _t(ev.occurred_at),
                                               "attempt": ev.attempt, "error": ev.error})
        self._note(ev, f"emergency stop attempt {ev.attempt} failed: {ev.error}", "critical")

    def _on_EmergencyStopCompleted(self, ev: EmergencyStopCompleted) -> None:
        done = {"at": _t(ev.occurred_at), "orders_canceled": ev.orders_canceled,
                "positions_closed": [{"symbol": p.symbol, "qty": _s(p.qty),
                                      "price": _s(p.price), "realized_pnl": _s(p.realized_pnl)}
                                     for p in ev.positions_closed],
                "realized_pnl_after": _s(ev.realized_pnl_after),
                "failures": list(ev.failures)}
        if self.stops:
            self.stops[-1]["completed"] = done
        else:
            self.stops.append({"triggered_at": None, "session_date": None, "pnl": None,
                               "limit": None, "reason": "", "actions": {},
                               "completed": done, "failures": [], "resumed": None})
        self._note(ev, f"emergency stop completed: {ev.orders_canceled} orders canceled, "
                   f"{len(ev.positions_closed)} positions closed, realized after "
                   f"{ev.realized_pnl_after}", "critical")

    def _on_TradingResumed(self, ev: TradingResumed) -> None:
        if self.stops:
            self.stops[-1]["resumed"] = {"at": _t(ev.occurred_at), "by": ev.resumed_by,
                                         "reason": ev.reason}
        self._note(ev, f"trading resumed by {ev.resumed_by}: {ev.reason}")

    def _on_ReconciliationDiscrepancyFound(self, ev: ReconciliationDiscrepancyFound) -> None:
        self.discrepancies.append({"time": _t(ev.occurred_at), "kind": ev.kind,
                                   "symbol": ev.symbol, "broker": ev.broker,
                                   "recorded": ev.recorded, "resolution": ev.resolution})
        self._note(ev, f"reconciliation: {ev.kind} {ev.symbol}: broker {ev.broker}, "
                   f"recorded {ev.recorded} -> {ev.resolution}", "warning")

    def _alert(self, alert_id: str) -> dict[str, Any]:
        a = self.alerts.get(alert_id)
        if a is None:
            a = self.alerts[alert_id] = {"alert_id": alert_id, "time": None, "kind": None,
                                         "severity": None, "title": None, "outcome": "raised",
                                         "channel": None, "recipients": [], "detail": ""}
        return a

    def _on_AlertRaised(self, ev: AlertRaised) -> None:
        self._alert(ev.alert_id).update(time=_t(ev.occurred_at), kind=ev.kind,
                                        severity=str(ev.severity), title=ev.title)

    def _on_AlertSent(self, ev: AlertSent) -> None:
        a = self._alert(ev.alert_id)
        a.update(outcome="sent", channel=ev.channel, recipients=list(ev.recipients),
                 detail=ev.subject_line, kind=a["kind"] or ev.kind,
                 severity=a["severity"] or str(ev.severity),
                 time=a["time"] or _t(ev.occurred_at))

    def _on_AlertSuppressed(self, ev: AlertSuppressed) -> None:
        self._alert(ev.alert_id).update(time=_t(ev.occurred_at), kind=ev.kind,
                                        severity=str(ev.severity), outcome="suppressed",
                                        detail=f"rule: {ev.rule}")

    def _on_AlertFailed(self, ev: AlertFailed) -> None:
        a = self._alert(ev.alert_id)
        if a["outcome"] != "sent":
            a.update(outcome="failed" if not ev.will_retry else "failed (retrying)",
                     channel=ev.channel, detail=f"attempt {ev.attempt}: {ev.reason}",
                     kind=a["kind"] or ev.kind)

    # --- result ------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        last = self.pnl[-1] if self.pnl else None
        fills = sum(len(o["fills"]) for o in self.orders.values())
        in_force = self.config_at_start if self.config_at_start is not None else self.config
        config_source = self.config_source
        if not in_force:
            config_source = ("not recorded (no RunStarted in the log); the session's limits "
                             "below are from SessionStarted")
        return {
            "report": "catalyst audit",
            "window": self.window.as_dict(),
            "date": self.window.date.isoformat() if self.window.date else None,
            "run": self.run,
            "summary": {
                "events": self.events, "sessions": len(self.sessions),
                "scans": len(self.scans), "signals": len(self.signals),
                "approved": sum(d["outcome"] == "approved" for d in self.decisions),
                "denied": sum(d["outcome"] == "denied" for d in self.decisions),
                "orders": len(self.orders), "fills": fills,
                "alerts_sent": sum(a["outcome"] == "sent" for a in self.alerts.values()),
                "alerts": len(self.alerts), "emergency_stops": len(self.stops),
                "pnl_total": last["total"] if last else "0",
                "pnl_realized": last["realized"] if last else "0",
                "pnl_intraday_low": last["intraday_low"] if last else "0",
            },
            "sessions": self.sessions,
            "timeline": self.timeline,
            "scans": self.scans,
            "signals": list(self.signals.values()),
            "risk_decisions": self.decisions,
            "orders": list(self.orders.values()),
            "positions_closed": self.closes,
            "pnl_curve": self.pnl,
            "daily_loss_warnings": self.warnings,
            "emergency_stops": self.stops,
            "alerts": sorted(self.alerts.values(), key=lambda a: (a["time"] or "", a["alert_id"])),
            "config": {
                "source": config_source,
                "in_force": _config_view(in_force) if in_force else {},
                "changes": self.changes,
            },
            "reconciliation": self.discrepancies,
            "event_counts": dict(sorted(self.counts.items())),
        }


async def build_report(source: LogSource, window: Window) -> dict[str, Any]:
    from adapters.audit.replay import Progress

    b = AuditBuilder(window)
    with Progress(source.total, "audit") as bar, bulk_gc():
        async for batch in window_entries(source, window, on_batch=bar.advance, context=True):
            for phase, e in batch:
                b.add(phase, e)
    return b.report()
