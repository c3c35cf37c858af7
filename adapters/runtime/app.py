"""The composition root: builds the handlers, effects and clock for a run, and runs it.

Past ~400 lines: the run summary sits with the run it summarises until the planned
`adapters/runtime/` split.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.alerts.channels import channels_from_settings
from adapters.alerts.delivery import AlertDelivery
from adapters.alerts.pending import DeliveryLedger, PendingAlert, pending_line
from adapters.broker.execution import ExecutionService
from adapters.broker.sim import SimulatedBroker
from adapters.runtime.composition import AlertEffect, BrokerEffect, _no_sleep, build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.pipeline import Pipeline, Recorder
from adapters.runtime.simulation import MarketTape, SimulatedClock, XnysCalendar
from config.settings import Settings
from domain.calendar import NEW_YORK
from domain.events import (
    AlertFailed,
    AlertRaised,
    AlertSent,
    AlertSuppressed,
    DailyPnLChanged,
    EmergencyStopTriggered,
    Event,
    OrderFilled,
    SessionEnded,
    SessionStarted,
    SessionStartRejected,
)
from domain.pnl import win_rate
from domain.values import Bar, Severity
from handlers.executor import Executor

log = logging.getLogger("catalyst.app")
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "bundled"


@dataclass
class RunSummary:
    run_id: str
    store: Path | None
    broker: str
    days: list[date] = field(default_factory=list)
    fills: int = 0
    trades: int = 0
    wins: int = 0
    losses: int = 0
    realized: Decimal = Decimal(0)
    pnl_by_day: dict[date, Decimal] = field(default_factory=dict)
    alerts_sent: int = 0
    alerts_suppressed: int = 0
    alerts_failed: int = 0
    emergency_stops: int = 0
    sessions_started: int = 0
    rejections: list[str] = field(default_factory=list)
    events: int = 0
    mailbox: Path | None = None
    ledger: DeliveryLedger = field(default_factory=DeliveryLedger)
    pending: list[PendingAlert] = field(default_factory=list)  # set when the run ends

    @property
    def undelivered_critical(self) -> int:
        return sum(1 for p in self.pending if p.alert.severity == Severity.CRITICAL)
    interrupted: str | None = None  # the signal that stopped the run before its end

    def observe(self, ev: Event) -> None:
        if isinstance(ev, OrderFilled):
            self.fills += 1
        elif isinstance(ev, SessionEnded):
            self.trades += ev.trades
            self.wins += ev.wins
            self.losses += ev.losses
            self.realized += ev.realized_pnl
        elif isinstance(ev, DailyPnLChanged):
            self.pnl_by_day[ev.session_date] = ev.total
        elif isinstance(ev, AlertRaised):
            self.ledger.observe(ev)
        elif isinstance(ev, AlertSent):
            self.alerts_sent += 1
            self.ledger.observe(ev)
        elif isinstance(ev, AlertSuppressed):
            self.alerts_suppressed += 1
        elif isinstance(ev, AlertFailed):
            self.alerts_failed += 1
            self.ledger.observe(ev)
        elif isinstance(ev, EmergencyStopTriggered):
            self.emergency_stops += 1
        elif isinstance(ev, SessionStarted):
            self.sessions_started += 1
        elif isinstance(ev, SessionStartRejected):
            self.rejections.append(ev.reason)


@dataclass
class SimTime:
    """The simulated 'now' for adapters that stamp their own events (mail delivery)."""

    now: datetime = datetime(1970, 1, 1, tzinfo=UTC)

    def observe(self, ev: Event) -> None:
        if ev.occurred_at > self.now:
            self.now = ev.occurred_at


def build_sim_pipeline(settings: Settings, holder: SettingsHolder, recorder: Recorder,
                       observers: list[Callable[[Event], None]], scanner: bool = True,
                       alerts: bool = True) -> tuple[Pipeline, SimulatedBroker]:
    sim = SimulatedBroker.from_settings(settings.trading.broker.sim)
    handlers = build_handlers(settings, "sim", scanner=scanner)
    executor = next(h for h in handlers if isinstance(h, Executor))
    clock = SimTime()
    service = ExecutionService(sim, sleep=_no_sleep, verify_polls=0)
    effects: list[Any] = [BrokerEffect(executor, service, sim)]
    if alerts and settings.trading.alerts.enabled:
        effects.append(AlertEffect(AlertDelivery(settings, clock=lambda: clock.now)))
    pipeline = Pipeline(holder, handlers, effects, recorder, [clock.observe, *observers])
    return pipeline, sim


def default_session(settings: Settings) -> date | None:
    """The session a dataset suggests for the demo (dataset.json), if it names one."""
    import json

    meta = Path(settings.trading.market_data.dataset_dir or BUNDLED_DIR) / "dataset.json"
    if not meta.exists():
        return None
    value = json.loads(meta.read_text()).get("default_session")
    return date.fromisoformat(value) if value else None


def bundled_tape(settings: Settings) -> MarketTape:
    from adapters.market_data.dataset import dataset_file, load_bars_csv, load_news_jsonl

    directory = settings.trading.market_data.dataset_dir or BUNDLED_DIR
    symbols = set(settings.trading.market_data.symbols)

    def keep(b: Bar) -> bool:
        return not symbols or b.symbol in symbols

    minute = [b for b in load_bars_csv(dataset_file(directory, "bars_1min")) if keep(b)]
    daily = [b for b in load_bars_csv(dataset_file(directory, "bars_1day"), timeframe="1Day")
             if keep(b)]
    news_path = Path(directory) / "news.jsonl"
    news = list(load_news_jsonl(news_path)) if news_path.exists() else []
    return MarketTape.from_data(minute, daily, news)


def new_run_id(kind: str, now: datetime) -> str:
    return f"{kind}-{now.strftime('%Y%m%dT%H%M%S')}-{now.microsecond:06d}"


async def run_simulated(settings: Settings, config_dir: Path | None, day: str | None = None,
                        speed: float | None = None, console: Console | None = None,
                        days: int | None = None, metrics_port: int | None = None,
                        serve: Any = None) -> RunSummary:
    """One full session on the bundled data: embedded NATS, simulated broker, local mail.

    `serve` (adapters.api.server.ApiLauncher): the HTTP API and dashboard beside the run,
    kept up after the day ends until Ctrl-C (the summary is printed when the day ends)."""
    from adapters.nats.connection import mark_latest_run, open_event_log, run_store
    from config.loader import ConfigError

    console = console or Console()
    tape = bundled_tape(settings)
    if not tape.dates:
        raise ConfigError("the dataset has no 1-minute bars", "market_data.dataset_dir")
    if day:
        try:
            wanted = date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"--date {day!r} is not YYYY-MM-DD") from None
        if wanted not in tape.dates:
            raise ConfigError(f"--date {day}: the dataset has "
                              + ", ".join(d.isoformat() for d in tape.dates))
        run_days = [wanted]
    elif days:
        run_days = tape.dates[-days:]
    else:
        suggested = default_session(settings)
        run_days = [suggested if suggested in tape.dates else tape.dates[-1]]
    alerts_cfg = settings.trading.alerts
    # A channel that cannot be built is a config error now, before a run store exists.
    channels = channels_from_settings(settings) if alerts_cfg.enabled else []
    now = datetime.now(UTC)
    run_id = new_run_id("sim", now)
    store = run_store(run_id)
    holder = SettingsHolder(settings, config_dir)
    has_mailbox = any(c.name == "mailbox" for c in channels)
    summary = RunSummary(run_id, store, "sim", run_days,
                         mailbox=alerts_cfg.mailbox_dir if has_mailbox else None)
    async with open_event_log(settings, store, announce=True, run_id=run_id) as log:
        mark_latest_run(run_id)
        recorder = Recorder(log)
        pipeline, _ = build_sim_pipeline(settings, holder, recorder, [summary.observe])
        api = None
        if serve is not None:
            api = await serve.beside_simulation(log, pipeline, holder, console)
        if metrics_port:
            from adapters.runtime.metrics import Metrics, start_metrics_server

            metrics = Metrics()
            metrics.instrument(pipeline)
            start_metrics_server(metrics_port, metrics)
        await pipeline.submit(run_started_event(run_id, "sim", settings, pipeline, "sim",
                                                run_days[0]))
        total = sum(_minutes(d) for d in run_days)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      TextColumn("{task.fields[clock]}"), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("session", total=total, clock="")

            def on_progress(p: Any) -> None:
                progress.update(task, advance=1, clock=p.now.astimezone(NEW_YORK).strftime(
                    "%Y-%m-%d %H:%M ET"))

            clock = SimulatedClock(pipeline, tape, run_id, speed=speed, on_progress=on_progress)
            if api is not None:
                api.attach(clock)  # commands from the API enter between two minutes
            try:
                with _stop_on_signals() as stopped:
                    await clock.run(run_days)
            except asyncio.CancelledError:
                # Ctrl-C or SIGTERM: keep what was recorded and report it, like a clean end.
                summary.interrupted = stopped.get("signal", "SIGINT")
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # the flush and the close below must still run
        await recorder.flush()
        summary.events = pipeline.dispatched
        # Nothing retries inside a simulated day (it runs in seconds): what a channel did not
        # take stays pending in the log, for `catalyst alerts deliver`.
        summary.pending = summary.ledger.pending(channels)
        if api is not None and not summary.interrupted:
            await api.serve_after_run(console, lambda: print_summary(summary, console))
            summary.events = pipeline.dispatched
            summary.pending = summary.ledger.pending(channels)
    return summary


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, str]]:
    """SIGINT and SIGTERM cancel the running simulation (which then reports its summary)
    instead of killing it mid-write; the dict says which signal it was."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    seen: dict[str, str] = {}
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        def stop(sig: signal.Signals = sig) -> None:
            seen["signal"] = sig.name
            if task is not None:
                task.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
    try:
        yield seen
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_started_event(run_id: str, kind: str, settings: Settings, pipeline: Pipeline,
                      broker: str, first_day: date) -> Event:
    """RunStarted, stamped just before the first simulated open, so it leads the log."""
    from adapters.runtime.run_record import run_started

    session = XnysCalendar().session(first_day)
    at = (session.open if session else datetime.combine(first_day, datetime.min.time(), UTC))
    return run_started(run_id, kind, settings, pipeline.handlers, broker,
                       at - timedelta(minutes=2))


def _minutes(day: date) -> int:
    session = XnysCalendar().session(day)
    return int((session.close - session.open).total_seconds() // 60) if session else 0


def print_summary(s: RunSummary, console: Console) -> None:
    table = Table(title=f"Run {s.run_id}", caption=f"{s.broker} broker", show_lines=False)
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    for d in s.days:
        table.add_row(f"P&L {d.isoformat()}", _money(s.pnl_by_day.get(d, Decimal(0))))
    table.add_row("sessions started", str(s.sessions_started))
    table.add_row("fills", str(s.fills))
    table.add_row("trades (round trips)", str(s.trades))
    rate = win_rate(s.wins, s.trades)
    table.add_row("wins / losses (win rate)",
                  f"{s.wins} / {s.losses} ({'-' if rate is None else f'{100 * rate:.0f}%'})")
    table.add_row("realized P&L", _money(s.realized))
    table.add_row("alerts sent", str(s.alerts_sent))
    if s.alerts_suppressed or s.alerts_failed:
        table.add_row("alerts suppressed / failed", f"{s.alerts_suppressed} / {s.alerts_failed}")
    table.add_row("emergency stops", str(s.emergency_stops))
    table.add_row("events recorded", str(s.events))
    console.print(table)
    for r in s.rejections:
        console.print(f"[yellow]session start rejected:[/] {r}")
    if s.pending:
        console.print(pending_line(s.pending, s.run_id), soft_wrap=True)
    if s.interrupted:
        console.print(f"[yellow]interrupted ({s.interrupted}):[/] the run stopped before the "
                      "end of its session; the figures above are what it recorded",
                      soft_wrap=True)
    if s.trades == 0 and not s.interrupted:
        console.print(f"no trades: {_why_no_trades(s)}", soft_wrap=True)
    # One item a line, never wrapped: these are paths and commands to copy.
    if s.mailbox:
        console.print(f"mail (maildir): {s.mailbox}/", soft_wrap=True, highlight=False)
    console.print(f"event log (NATS store): {s.store}", soft_wrap=True, highlight=False)
    console.print(f"replay: catalyst replay --run {s.run_id}", soft_wrap=True,
                  highlight=False)


def _why_no_trades(s: RunSummary) -> str:
    if s.rejections:
        return "the session did not start (see above)"
    if not s.sessions_started:
        return "no session started on the day"
    if s.emergency_stops:
        return "trading was halted by the emergency stop"
    if s.fills:
        return "positions were opened but none was closed by the end"
    return ("no signal led to an order (no candidate passed the scanner and strategy, or "
            "the risk guard denied them; see `catalyst audit report`)")


def _money(v: Decimal) -> str:
    color = "green" if v > 0 else "red" if v < 0 else ""
    text = f"{v:+,.2f}"
    return f"[{color}]{text}[/]" if color else text


async def run_live(settings: Settings, config_dir: Path | None,
                   console: Console | None = None, metrics_port: int | None = None,
                   serve: Any = None) -> None:
    from adapters.runtime.live import run_services

    await run_services(settings, config_dir, console or Console(), metrics_port=metrics_port,
                       serve=serve)

