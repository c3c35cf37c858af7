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
from uuid import NAMESPACE_URL, uuid5

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.alerts.channels import channels_from_settings
from adapters.alerts.delivery import AlertDelivery
from adapters.alerts.pending import DeliveryLedger, PendingAlert, pending_line
from adapters.broker.port import TradeUpdate
from adapters.broker.sim import SimulatedBroker
from adapters.config_watcher import SettingsHolder
from adapters.execution import ExecutionService
from adapters.pipeline import Pipeline, Recorder
from adapters.simulation import MarketTape, SimulatedClock, XnysCalendar
from config.settings import Settings
from domain.calendar import NEW_YORK
from domain.events import (
    AccountSnapshotted,
    AlertFailed,
    AlertRaised,
    AlertSent,
    AlertSuppressed,
    BarReceived,
    ClockTicked,
    DailyPnLChanged,
    EmergencyStopTriggered,
    Event,
    OrderFilled,
    OrderPartiallyFilled,
    SessionEnded,
    SessionStarted,
    SessionStartRejected,
)
from domain.pnl import win_rate
from domain.values import Bar, Severity
from handlers.alerter import Alerter
from handlers.base import Handler
from handlers.executor import Executor
from handlers.risk_guard import RiskGuard
from handlers.scanner import Scanner
from handlers.session import SessionHandler
from handlers.strategy import Strategy
from projections.daily_pnl import DailyPnLProjection
from projections.positions import PositionsProjection

log = logging.getLogger("catalyst.app")
BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "bundled"


async def _no_sleep(_: float) -> None:
    return None


def build_handlers(settings: Settings, broker_name: str, scanner: bool = True) -> list[Handler]:
    """Every pure handler, in the fixed order the in-process pipeline calls them."""
    hs: list[Handler] = [SessionHandler(XnysCalendar(), broker_name)]
    if scanner:
        hs += [Scanner(), Strategy()]
    hs += [
        RiskGuard(starting_cash=settings.trading.broker.sim.starting_cash),
        Executor(),
        PositionsProjection(),
        DailyPnLProjection(),
        Alerter(),
    ]
    return hs


class BrokerEffect:
    """Runs the executor's broker commands and turns broker updates into events.

    It also reports the broker's account (`AccountSnapshotted`) at the session start, after
    every fill and every minute (ClockTicked), so the risk guard sizes against the real
    account. The simulated broker's is read from its engine at the cause's simulated time
    (deterministic); a live broker's with one REST read, and a failed read is skipped: the
    next minute's replaces it.
    """

    name = "broker"
    subjects = ("catalyst.order.approved", "catalyst.order.submitted",
                "catalyst.position.close_requested", "catalyst.session.flatten_requested",
                "catalyst.risk.emergency_stop_triggered", "catalyst.session.ended",
                "catalyst.session.started", "catalyst.session.clock_ticked",
                "catalyst.order.filled", "catalyst.order.partially_filled",
                "catalyst.md.bar.>")

    def __init__(self, executor: Executor, service: ExecutionService,
                 sim: SimulatedBroker | None = None) -> None:
        self.executor = executor
        self.service = service
        self.sim = sim
        self._updates: list[TradeUpdate] = []
        self._last_bar: dict[str, datetime] = {}  # symbol -> start of its latest 1Min bar
        if sim is not None:
            sim.engine.listener = self._updates.append

    def _drain(self, correlation_id: str) -> list[Event]:
        if not self._updates:  # most bars trade nothing
            return []
        updates, self._updates[:] = list(self._updates), []
        out: list[Event] = []
        for u in updates:
            out += self.service.translate(u, correlation_id)
        return out

    async def on_event(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, BarReceived):  # every bar: first, and nothing it does not need
            bar, sim = event.bar, self.sim
            if sim is None or bar.timeframe != "1Min":
                return []
            sim.engine.on_bar(bar)
            self._last_bar[event.symbol] = bar.timestamp
            out = self._drain(event.correlation_id)
            if self.service.emergency_pending:
                out += await self.service.check_pending()
            return out
        if isinstance(event, _SNAPSHOT_CAUSES):
            return await self.account_snapshot(event)
        self.service.observe(event)  # (order references: nothing to take from a bar)
        out: list[Event] = []
        if isinstance(event, SessionEnded):
            return self._market_closed(event, settings) if self.sim is not None else []
        if self.sim is not None:
            self.sim.set_clock(event.occurred_at)
        for cmd in self.executor.commands_for(event, settings):
            out += await self.service.execute(cmd)
        if self.sim is not None:
            out += self._drain(event.correlation_id)
        return out


    async def account_snapshot(self, cause: Event | None = None, now: datetime | None = None
                               ) -> list[Event]:
        """The broker's account now, as an event caused by `cause` (id derived from it), or
        without a cause at `now` (a process start: id from the broker and the time)."""
        if self.sim is not None:
            acct = self.sim.engine.account()
            broker = self.sim.name
        else:
            broker = getattr(self.service.broker, "name", "broker")
            try:
                acct = await self.service.broker.get_account()
            except Exception as e:  # noqa: BLE001 - a snapshot is refreshed every minute
                log.warning("account snapshot (%s) failed: %s",
                            cause.type if cause else "start", e)
                return []
        figures = {"broker": broker, "cash": acct.cash, "equity": acct.equity,
                   "buying_power": acct.buying_power}
        if cause is not None:
            return [AccountSnapshotted.caused_by(cause, 0, "broker:account", **figures)]
        assert now is not None
        return [AccountSnapshotted(
            event_id=uuid5(NAMESPACE_URL, f"catalyst:account:{broker}:{now.isoformat()}"),
            type="AccountSnapshotted", occurred_at=now, correlation_id="broker", **figures)]

    def _market_closed(self, event: SessionEnded, settings: Settings) -> list[Event]:
        """The simulated market closes as Alpaca's does: day orders expire. A flatten that
        found no bar left to fill in (requested in the last minute) is done at the last
        price, as a market-on-close would be, for symbols that traded since the flatten was
        due; one with no bars since (halted, say) stays held."""
        assert self.sim is not None
        engine = self.sim.engine
        engine.set_clock(event.occurred_at)
        engine.cancel_all(event.occurred_at)
        cfg = settings.session
        if cfg.auto_close_at_market_close:
            due = event.occurred_at - timedelta(minutes=cfg.flatten_minutes_before_close)
            for p in engine.positions():
                last = self._last_bar.get(p.symbol)
                if last is not None and last >= due - timedelta(minutes=1):
                    engine.close_position(p.symbol, event.occurred_at, immediate_price=True)
        return self._drain(event.correlation_id)


_SNAPSHOT_CAUSES = (SessionStarted, ClockTicked, OrderFilled, OrderPartiallyFilled)


class AlertEffect:
    """Delivers what the alerter raised; records AlertSent / AlertFailed."""

    name = "alerts"
    subjects = ("catalyst.alert.>",)

    def __init__(self, delivery: AlertDelivery) -> None:
        self.delivery = delivery

    async def on_event(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, AlertSent | AlertFailed):
            self.delivery.evolve(event)
            return []
        if isinstance(event, AlertRaised):
            return list(await self.delivery.deliver(event))
        return []


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

    `serve` (adapters.api.server.ServeOptions): the HTTP API and dashboard beside the run,
    kept up after the day ends until Ctrl-C (the summary is printed when the day ends)."""
    from adapters.connection import mark_latest_run, open_event_log, run_store
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
            from adapters.api.server import SimulationApi

            api = await SimulationApi.start(serve, log, pipeline, holder, console)
        if metrics_port:
            from adapters.metrics import Metrics, start_metrics_server

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
    from adapters.replay import run_started

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
    from adapters.services import run_services

    await run_services(settings, config_dir, console or Console(), metrics_port=metrics_port,
                       serve=serve)

