"""`catalyst status`: what the system is doing, read from the log itself.

State is rebuilt the way the handlers rebuild theirs: the record stream (decisions, orders,
fills, alerts; not the market data) through the session handler, the risk guard and the
positions projection (evolve only, nothing decided). "Now" is the time of the last event in
the log, so a finished simulation reports its own day, and a live system its present.
Consumer lag is what JetStream says each durable consumer still has to process.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from adapters.nats.lag import consumer_lag
from adapters.nats.log_source import ROLE_RECORD, LogEntry, NatsSource
from config.settings import Settings
from domain.calendar import NEW_YORK
from domain.events import (
    DailyPnLChanged,
    EmergencyStopCompleted,
    EmergencyStopTriggered,
    Event,
    RunStarted,
    SessionEnded,
    SessionStarted,
    SessionStartRejected,
    TradingResumed,
)


def _t(ts: datetime | None) -> str | None:
    return ts.astimezone(NEW_YORK).isoformat(timespec="seconds") if ts else None


class _NoCalendar:
    def session(self, day: Any) -> None:
        return None


@dataclass
class StatusFold:
    broker_name: str = "sim"
    events: int = 0
    last_event_at: datetime | None = None
    run: RunStarted | None = None
    started: SessionStarted | None = None
    rejected: SessionStartRejected | None = None
    ended: SessionEnded | None = None
    stop: EmergencyStopTriggered | None = None
    stop_done: EmergencyStopCompleted | None = None
    resumed: TradingResumed | None = None
    pnl: dict[Any, DailyPnLChanged] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from handlers.risk_guard import RiskGuard
        from handlers.session import SessionHandler
        from projections.positions import PositionsProjection

        # Evolve only: the calendar is consulted when deciding a start, never here, so the
        # exchange calendar (slow to import) stays out of a status call.
        self.session = SessionHandler(_NoCalendar(), self.broker_name)
        self.guard = RiskGuard()
        self.positions = PositionsProjection()
        self._handlers = (self.session, self.guard, self.positions)

    def add(self, e: LogEntry) -> None:
        ev = e.event
        self.events += 1
        if self.last_event_at is None or ev.occurred_at > self.last_event_at:
            self.last_event_at = ev.occurred_at
        for h in self._handlers:
            if h.wants(ev):
                h.apply(ev)
        self._track(ev)

    def _track(self, ev: Event) -> None:
        if isinstance(ev, SessionStarted):
            self.started, self.ended = ev, None
        elif isinstance(ev, SessionStartRejected):
            self.rejected = ev
        elif isinstance(ev, SessionEnded):
            self.ended = ev
        elif isinstance(ev, EmergencyStopTriggered):
            self.stop, self.stop_done = ev, None
        elif isinstance(ev, EmergencyStopCompleted):
            self.stop_done = ev
        elif isinstance(ev, TradingResumed):
            self.resumed = ev
        elif isinstance(ev, DailyPnLChanged):
            self.pnl[ev.session_date] = ev
        elif isinstance(ev, RunStarted):
            self.run = ev

    def view(self) -> dict[str, Any]:
        now = self.last_event_at
        today = now.astimezone(NEW_YORK).date() if now else None
        st = self.session.state
        if self.started is None:
            session: dict[str, Any] = {"state": "not started"}
            if self.rejected is not None:
                session.update(state="start rejected", reason=self.rejected.reason,
                               at=_t(self.rejected.occurred_at))
        else:
            s = self.started
            state = "ended" if self.ended else "running"
            if state == "running" and st.entries_stopped:
                state = "running (entries stopped)"
            session = {
                "state": state, "session_id": s.session_id,
                "session_date": s.session_date.isoformat(), "mode": s.mode,
                "broker": s.broker, "market_open": _t(s.market_open),
                "market_close": _t(s.market_close), "early_close": s.early_close,
                "scans": st.scans, "entries_stopped": st.entries_stopped,
                "flattened": st.flattened,
                "ended_at": _t(self.ended.occurred_at) if self.ended else None,
                "trades": self.ended.trades if self.ended else st.tally.trades,
            }
        halted = bool(today and self.guard.halted_on(today))
        trading: dict[str, Any] = {"state": "halted" if halted else "active"}
        if self.stop is not None and halted:
            trading.update(since=_t(self.stop.occurred_at), reason=self.stop.reason,
                           session_date=self.stop.session_date.isoformat(),
                           require_manual_restart=bool(
                               self.stop.actions.get("require_manual_restart", True)),
                           stop_completed=_t(self.stop_done.occurred_at)
                           if self.stop_done else None,
                           resume_with="catalyst resume --reason '...'")
        if self.resumed is not None:
            trading["last_resumed"] = {"at": _t(self.resumed.occurred_at),
                                       "by": self.resumed.resumed_by,
                                       "reason": self.resumed.reason}
        latest = self.pnl[max(self.pnl)] if self.pnl else None
        pnl = None
        if latest is not None:
            pnl = {"session_date": latest.session_date.isoformat(), "total": str(latest.total),
                   "realized": str(latest.realized), "unrealized": str(latest.unrealized),
                   "fees": str(latest.fees), "intraday_low": str(latest.intraday_low),
                   "open_positions": latest.open_positions,
                   "as_of": _t(latest.occurred_at),
                   "today": latest.session_date == today}
        return {
            "as_of": _t(now),
            "events_read": self.events,
            "run": ({"run_id": self.run.run_id, "kind": self.run.kind,
                     "broker": self.run.broker} if self.run else None),
            "session": session,
            "trading": trading,
            "positions": [p.as_dict() for p in self.positions.snapshot()],
            "pnl": pnl,
        }


def _reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout=0.3):
            return True
    except OSError:
        return False


def nats_mode(settings: Settings, store: Path) -> dict[str, Any]:
    """Where the log is: a configured server, a running embedded one, or none running."""
    from adapters.nats.connection import URL_FILE

    servers = settings.trading.nats.server_urls
    if servers:
        return {"mode": "configured server", "url": ",".join(servers),
                "running": any(_reachable(u) for u in servers)}
    url_file = store / URL_FILE
    if url_file.exists():
        running = url_file.read_text().strip()
        if _reachable(running):
            return {"mode": "embedded server of a running Catalyst", "url": running,
                    "running": True, "store": str(store)}
    return {"mode": "no server running; an embedded one was started on the store to read it",
            "url": None, "running": False, "store": str(store)}


def _mark_cut_off(status: dict[str, Any], settings: Settings) -> None:
    """A session the log says is running, in a store no process serves, was cut off (kill
    -9, a crash, a machine that went down): it will never end, so do not call it running.
    A running Catalyst announces its embedded server; a clean stop ends the session first.
    Behind a configured server we cannot tell, and say what the log says."""
    session = status.get("session") or {}
    if settings.trading.nats.server_urls or status["nats"].get("running"):
        return
    if str(session.get("state", "")).startswith("running"):
        session["state"] = "cut off"
        session["cut_off"] = True
        session["note"] = ("no process is running this log and the session never ended "
                           f"(last event {status.get('as_of')}): the run was killed or "
                           "interrupted")


async def gather(settings: Settings, store: Path, timeout: float = 10.0,
                 run_id: str | None = None) -> dict[str, Any]:
    from adapters.nats.connection import open_event_log

    b = settings.trading.broker
    status: dict[str, Any] = {
        "nats": nats_mode(settings, store),
        "broker": {"kind": b.effective_kind, "mode": b.mode},
    }
    try:
        async with asyncio.timeout(timeout):
            async with open_event_log(settings, store, create_streams=False,
                                      run_id=run_id) as log:
                server = log.nc.connected_server_version
                status["nats"].update(
                    connected=True, server_version=str(server) if server else None,
                    connected_url=log.nc.connected_url.geturl() if log.nc.connected_url
                    else None)
                streams = {}
                for name in (log.names.record, log.names.market_data):
                    try:
                        info = await log.js.stream_info(name)
                        streams[name] = {"messages": info.state.messages,
                                         "last_seq": info.state.last_seq,
                                         "bytes": info.state.bytes}
                    except Exception:  # noqa: BLE001 - not created yet
                        streams[name] = None
                status["nats"]["streams"] = streams
                fold = StatusFold(broker_name=b.effective_kind)
                if streams.get(log.names.record):
                    source = await NatsSource(log, streams=(ROLE_RECORD,)).open()
                    async for batch in source.batches():
                        for e in batch:
                            fold.add(e)
                status.update(fold.view())
                _mark_cut_off(status, settings)
                status["consumers"] = await consumer_lag(log)
                if fold.started is not None:
                    status["broker"]["last_session_broker"] = fold.started.broker
    except TimeoutError:
        status["nats"].update(connected=False, error=f"no answer within {timeout:.0f} s")
    except Exception as e:  # noqa: BLE001 - status reports it
        status["nats"].update(connected=False, error=str(e) or type(e).__name__)
    return status


def print_status(status: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    n = status["nats"]
    ok = n.get("connected")
    console.print(f"[bold]NATS[/]: {'[green]connected[/]' if ok else '[red]not reachable[/]'}"
                  f" ({n['mode']}{', ' + n['url'] if n.get('url') else ''})"
                  + (f" server {n.get('server_version')}" if ok else f": {n.get('error')}"),
                  soft_wrap=True)
    if not ok:
        return
    for name, s in (n.get("streams") or {}).items():
        console.print(f"  stream {name}: "
                      + (f"{s['messages']} messages, last seq {s['last_seq']}" if s
                         else "absent"))
    br = status["broker"]
    console.print(f"[bold]Broker[/]: {br['kind']} ({br['mode']})"
                  + (f"; last session used {br['last_session_broker']}"
                     if br.get("last_session_broker") else ""))
    console.print(f"[bold]As of[/] {status.get('as_of') or '-'} "
                  f"({status.get('events_read', 0)} record events read)")
    s = status.get("session") or {}
    line = f"[bold]Session[/]: {s.get('state', '-')}"
    if s.get("session_id"):
        line += (f" {s['session_id']} ({s['mode']}, {s['market_open']} to "
                 f"{s['market_close']}), {s['scans']} scans, {s['trades']} trades")
    if s.get("reason"):
        line += f": {s['reason']}"
    if s.get("note"):
        line += f" ({s['note']})"
    console.print(line)
    t = status.get("trading") or {}
    if t.get("state") == "halted":
        console.print(f"[bold]Trading[/]: [bold red]HALTED[/] since {t.get('since')}: "
                      f"{t.get('reason')}"
                      + (" (manual restart required: " + t["resume_with"] + ")"
                         if t.get("require_manual_restart") else ""))
    else:
        console.print("[bold]Trading[/]: [green]active[/]")
    p = status.get("pnl")
    if p:
        console.print(f"[bold]P&L[/] {p['session_date']}: {p['total']} (realized "
                      f"{p['realized']}, unrealized {p['unrealized']}, low "
                      f"{p['intraday_low']}) as of {p['as_of']}")
    else:
        console.print("[bold]P&L[/]: no P&L recorded")
    pos = status.get("positions") or []
    if pos:
        table = Table(title="positions")
        for col in ("symbol", "side", "qty", "avg entry", "realized", "opened"):
            table.add_column(col)
        for r in pos:
            table.add_row(r["symbol"], r["side"], r["qty"], r["avg_entry_price"] or "-",
                          r["realized_pnl"], r["opened_at"] or "-")
        console.print(table)
    else:
        console.print("[bold]Positions[/]: none open")
    cons = status.get("consumers") or []
    if cons:
        table = Table(title="consumers (lag = pending + awaiting ack)")
        for col in ("stream", "consumer", "lag", "pending", "ack pending", "redelivered"):
            table.add_column(col)
        for c in cons:
            table.add_row(c["stream"], c["consumer"], str(c["lag"]), str(c["num_pending"]),
                          str(c["num_ack_pending"]), str(c["redelivered"]))
        console.print(table)
    else:
        console.print("[bold]Consumers[/]: none (in-process run, or not started)")
