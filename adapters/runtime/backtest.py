"""`catalyst backtest`: the live handlers over recorded bars, with the simulated broker.

Contract (people script against it):

    catalyst backtest --bars BARS.csv [--signals SIGNALS.csv] [--config DIR] --report R.json

With SIGNALS.csv the rows are the entry signals (SignalGenerated at their timestamp) and
the scanner is off; the risk guard still decides and sizes. Without it the scanner and
strategy run as in a live session, with daily history built from the file's earlier days.
Inputs are validated completely before anything runs; the report is written atomically at
the end, so a failed run leaves nothing half-written.

Past ~400 lines: the report (fills, days, and every signal with its outcome) is built here,
beside the run it describes, so the contract has one home.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.market_data import calendar as xnys
from adapters.market_data.bar_spool import SpooledBars, spool_bars
from adapters.market_data.dataset import DatasetError
from adapters.nats.batch_gc import batch_gc
from adapters.runtime.app import build_sim_pipeline, new_run_id, run_started_event
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.pipeline import Recorder
from adapters.runtime.simulation import MarketTape, SimulatedClock
from config.settings import Settings
from domain.events import (
    BarReceived,
    ClockTicked,
    DailyPnLChanged,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    ScanRequested,
    SessionEnded,
    SignalGenerated,
)
from domain.pnl import Position, apply_fill
from domain.values import Bar, Side, ensure_utc
from projections.daily_pnl import DailyPnLProjection

SIGNAL_COLUMNS = ("timestamp", "symbol", "side", "stop_loss", "take_profit")


class BacktestInputError(DatasetError):
    pass


@dataclass(frozen=True)
class SignalRow:
    line: int
    timestamp: datetime
    symbol: str
    side: Side
    stop_loss: Decimal
    take_profit: Decimal


def load_signals_csv(path: Path, symbols: set[str]) -> list[SignalRow]:
    def fail(line: int, column: str, problem: str) -> BacktestInputError:
        return BacktestInputError(path, line, column, problem)

    try:
        handle = path.open(newline="")
    except OSError as e:
        raise fail(0, "-", f"cannot read: {e.strerror}") from None
    rows: list[SignalRow] = []
    with handle:
        reader = csv.reader(handle)
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        if not header:
            raise fail(1, SIGNAL_COLUMNS[0], "empty file: no header line")
        for col in SIGNAL_COLUMNS:
            if col not in header:
                raise fail(1, col, f"missing column (header is {header})")
        extra = [h for h in header if h not in SIGNAL_COLUMNS]
        if extra:
            raise fail(1, extra[0], f"unexpected column; need {','.join(SIGNAL_COLUMNS)}")
        idx = {c: header.index(c) for c in SIGNAL_COLUMNS}
        for row in reader:
            line = reader.line_num
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) != len(header):
                raise fail(line, SIGNAL_COLUMNS[min(len(row), 4)],
                           f"{len(row)} fields, expected {len(header)}")
            raw = {c: row[i].strip() for c, i in idx.items()}
            try:
                ts = datetime.fromisoformat(raw["timestamp"].replace("Z", "+00:00"))
            except ValueError:
                raise fail(line, "timestamp", f"unparsable time {raw['timestamp']!r}") from None
            if ts.tzinfo is None:
                raise fail(line, "timestamp", f"{raw['timestamp']!r} has no UTC offset")
            symbol = raw["symbol"].upper()
            if symbol not in symbols:
                raise fail(line, "symbol", f"unknown symbol {raw['symbol']!r} (not in the bars)")
            try:
                side = Side(raw["side"].lower())
            except ValueError:
                raise fail(line, "side", f"{raw['side']!r} is not buy or sell") from None
            prices = {}
            for col in ("stop_loss", "take_profit"):
                try:
                    prices[col] = Decimal(raw[col])
                except InvalidOperation:
                    raise fail(line, col, f"unparsable price {raw[col]!r}") from None
                if not prices[col].is_finite() or prices[col] <= 0:
                    raise fail(line, col, f"price must be positive, got {raw[col]!r}")
            rows.append(SignalRow(line, ensure_utc(ts), symbol, side, prices["stop_loss"],
                                  prices["take_profit"]))
    return sorted(rows, key=lambda r: (r.timestamp, r.line))


# Events the report never reads, by exact type (a subclass would be looked at).
_UNREPORTED: frozenset[type[Event]] = frozenset({BarReceived, ClockTicked, ScanRequested})


@dataclass
class DayTotals:
    realized: Decimal = Decimal(0)
    unrealized: Decimal = Decimal(0)
    total: Decimal = Decimal(0)
    trades: int = 0


@dataclass
class BacktestResult:
    run_id: str
    store: Path
    report_path: Path
    fills: list[dict[str, Any]] = field(default_factory=list)
    days: dict[date, DayTotals] = field(default_factory=dict)
    stops: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    bars: int = 0
    events: int = 0
    seconds: float = 0.0

    signals: dict[str, dict[str, Any]] = field(default_factory=dict)  # signal_id -> entry
    report_signals: list[dict[str, Any]] = field(default_factory=list)  # as reported
    _entry_orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # order_id ->

    def observe(self, ev: Event) -> None:
        if type(ev) in _UNREPORTED:  # bars, ticks, scans: most events
            return
        if isinstance(ev, SignalGenerated | OrderApproved | OrderDenied | OrderSubmitted
                      | OrderRejected | OrderCanceled):
            self._follow_signal(ev)
            return
        if isinstance(ev, OrderFilled | OrderPartiallyFilled):
            self.fills.append({
                "time": ev.occurred_at.isoformat(), "symbol": ev.symbol, "side": ev.side.value,
                "qty": _num(ev.qty), "price": _num(ev.price), "order_id": ev.order_id,
            })
            order = self._entry_orders.get(ev.order_id)
            if order is not None:
                order["filled_qty"] = _num(Decimal(order["filled_qty"]) + ev.qty)
                order["status"] = ("filled" if isinstance(ev, OrderFilled)
                                   else "partially filled")
            pos = self.positions.get(ev.symbol, Position())
            self.positions[ev.symbol] = apply_fill(pos, ev.side, ev.qty, ev.price, ev.fee).position
        elif isinstance(ev, DailyPnLChanged):
            d = self.days.setdefault(ev.session_date, DayTotals())
            d.realized, d.unrealized, d.total = ev.realized, ev.unrealized, ev.total
        elif isinstance(ev, SessionEnded):
            self.days.setdefault(ev.session_date, DayTotals()).trades = ev.trades
        elif isinstance(ev, EmergencyStopTriggered):
            self.stops.append({"time": ev.occurred_at.isoformat(),
                               "date": ev.session_date.isoformat(), "pnl": _num(ev.pnl),
                               "reason": ev.reason})

    def _follow_signal(self, ev: Event) -> None:
        """Every signal and what became of it: a signal that cannot trade must say why, not
        leave the user with '0 fills'."""
        if isinstance(ev, SignalGenerated):
            self.signals[ev.signal_id] = {
                "signal_id": ev.signal_id, "time": ev.occurred_at.isoformat(),
                "symbol": ev.symbol, "side": ev.side.value, "entry": _num(ev.entry),
                "stop_loss": _num(ev.stop_loss), "take_profit": _num(ev.take_profit),
                "source": ev.reason, "outcome": "pending"}
        elif isinstance(ev, OrderApproved):
            sig = self.signals.get(ev.signal_id)
            if sig is not None:
                order = {"order_id": ev.order_id, "qty": _num(ev.qty),
                         "entry": _num(ev.entry), "status": "approved", "filled_qty": "0"}
                sig.update(outcome="approved", order=order)
                self._entry_orders[ev.order_id] = order
        elif isinstance(ev, OrderDenied):
            sig = self.signals.get(ev.signal_id)
            if sig is not None:
                sig.update(outcome="denied", rule=ev.rule, detail=ev.detail,
                           figures=dict(ev.figures))
        else:
            order = self._entry_orders.get(getattr(ev, "order_id", ""))
            if order is None:
                return
            if isinstance(ev, OrderSubmitted) and order["status"] == "approved":
                order["status"] = "submitted"
            elif isinstance(ev, OrderRejected):
                order.update(status="rejected", why=f"the broker rejected it: {ev.code} "
                             f"{ev.message}")
            elif isinstance(ev, OrderCanceled) and ev.leg is None \
                    and order["status"] in ("approved", "submitted"):
                order.update(status="canceled", why=(
                    f"canceled unfilled ({ev.reason or 'no reason given'}): a market entry "
                    f"fills at the open of the next bar of {ev.symbol}, and none came"))

    def signal_outcomes(self, rows: list[SignalRow] | None, spool: SpooledBars | None
                        ) -> list[dict[str, Any]]:
        """The report's `signals`: every signal in time order with its outcome. Rows of
        SIGNALS.csv that never reached the pipeline are `skipped`, with why."""
        out = list(self.signals.values())
        for r in rows or ():
            if f"csv-line-{r.line}" not in self.signals:
                out.append({"signal_id": f"csv-line-{r.line}", "time": r.timestamp.isoformat(),
                            "symbol": r.symbol, "side": r.side.value, "entry": None,
                            "stop_loss": _num(r.stop_loss), "take_profit": _num(r.take_profit),
                            "source": f"SIGNALS.csv line {r.line}", "outcome": "skipped",
                            "why": _why_skipped(r, spool)})
        for sig in out:
            order = sig.get("order")
            if order and order["status"] in ("approved", "submitted"):
                order["why"] = ("never filled: no bar of the symbol came after the order "
                                "before the run ended")
        return sorted(out, key=lambda s: (s["time"], s["signal_id"]))

    def report(self, all_days: list[date], rows: list[SignalRow] | None = None,
               spool: SpooledBars | None = None) -> dict[str, Any]:
        days = []
        for d in all_days:
            t = self.days.get(d, DayTotals())
            days.append({"date": d.isoformat(), "realized_pnl": _num(t.realized),
                         "unrealized_pnl": _num(t.unrealized), "pnl": _num(t.total),
                         "trades": t.trades})
        positions = [
            {"symbol": s, "qty": _num(p.qty), "avg_price": _num(_cents4(p.avg_price))}
            for s, p in sorted(self.positions.items()) if not p.is_flat
        ]
        return {"fills": self.fills, "days": days, "emergency_stops": self.stops,
                "positions": positions, "run_id": self.run_id,
                "signals": self.signal_outcomes(rows, spool)}


def _why_skipped(r: SignalRow, spool: SpooledBars | None) -> str:
    day = xnys.session_date(r.timestamp)
    session = xnys.session_for(day)
    if spool is not None and day not in spool.dates:
        return f"the bars have no session on {day.isoformat()}"
    if session is not None and not session.open <= r.timestamp < session.close:
        return (f"{r.timestamp.isoformat()} is outside the session "
                f"({session.open.isoformat()} to {session.close.isoformat()})")
    return (f"{r.timestamp.isoformat()} is after the last minute the run reached on "
            f"{day.isoformat()}; a signal is taken at a session minute")


def _num(v: Decimal) -> str:
    """Decimal as a plain decimal string (never exponent notation like 1E+2)."""
    return format(v, "f")


def _cents4(v: Decimal | None) -> Decimal:
    return (v or Decimal(0)).quantize(Decimal("0.0001"))


def signal_event(r: SignalRow, entry: Decimal, run_id: str) -> SignalGenerated:
    return SignalGenerated(
        event_id=uuid5(NAMESPACE_URL, f"catalyst:{run_id}:signal:{r.line}"),
        type="SignalGenerated", occurred_at=r.timestamp, correlation_id=run_id,
        signal_id=f"csv-line-{r.line}", symbol=r.symbol, side=r.side, entry=entry,
        stop_loss=r.stop_loss, take_profit=r.take_profit, use_bracket=True,
        reason=f"SIGNALS.csv line {r.line}",
    )


def entry_price(r: SignalRow, day_bars: dict[datetime, list[Bar]], spool: SpooledBars
                ) -> Decimal:
    """The last close known at the signal: the latest bar of its symbol that closed at or
    before it (that day, else an earlier day); before any bar at all, the first open."""
    known = [b for minute, bars in day_bars.items()
             if minute + timedelta(minutes=1) <= r.timestamp
             for b in bars if b.symbol == r.symbol]
    if known:
        return known[-1].close
    earlier = spool.last_close_before(r.symbol, xnys.session_date(r.timestamp))
    if earlier is not None:
        return earlier
    first = spool.first_open(r.symbol)
    assert first is not None  # the symbol was checked against the bars
    return first


async def run_backtest(settings: Settings, bars_path: Path, signals_path: Path | None,
                       report_path: Path, console: Console | None = None,
                       record: bool = True, progress: bool = True) -> BacktestResult:
    from adapters.nats.connection import run_store

    console = console or Console(stderr=True)
    report_path = Path(report_path)
    if report_path.parent and not report_path.parent.exists():
        raise BacktestInputError(report_path, 0, "-", "the report's directory does not exist")
    run_id = new_run_id("backtest", datetime.now(UTC))
    store = run_store(run_id)
    with tempfile.TemporaryDirectory(prefix="catalyst-bars-") as tmp:
        # Validate everything before anything runs; then read the bars back a day at a time.
        spool = spool_bars(Path(bars_path), Path(tmp))
        if not spool.count:
            raise BacktestInputError(bars_path, 2, "timestamp", "no bars in the file")
        rows = load_signals_csv(signals_path, spool.symbols) if signals_path else None
        return await _run(settings, spool, rows, run_id, store, report_path, console,
                          record, progress)


async def _run(settings: Settings, spool: SpooledBars, rows: list[SignalRow] | None,
               run_id: str, store: Path, report_path: Path, console: Console, record: bool,
               progress: bool) -> BacktestResult:
    import time

    from adapters.nats.connection import mark_latest_run, open_event_log

    result = BacktestResult(run_id, store, report_path, bars=spool.count)
    by_day: dict[date, list[SignalRow]] = defaultdict(list)
    for r in rows or ():
        by_day[xnys.session_date(r.timestamp)].append(r)
    clock_ref: list[SimulatedClock] = []

    def load_day(day: date) -> dict[datetime, list[Bar]]:
        minutes = spool.load(day)
        if rows is not None:
            extra = clock_ref[0].extra_events
            extra.clear()  # only the day being run is held
            for r in by_day.get(day, ()):
                minute = r.timestamp.replace(second=0, microsecond=0)
                extra.setdefault(minute, []).append(
                    signal_event(r, entry_price(r, minutes, spool), run_id))
        return minutes

    tape = MarketTape(daily_bars=spool.daily_bars(), days=spool.dates, loader=load_day)
    holder = SettingsHolder(settings)
    started = time.perf_counter()

    async def go(recorder: Recorder) -> None:
        pipeline, _ = build_sim_pipeline(settings, holder, recorder, [result.observe],
                                         scanner=rows is None, alerts=False)
        await pipeline.submit(run_started_event(run_id, "backtest", settings, pipeline, "sim",
                                                tape.dates[0]))
        clock = SimulatedClock(pipeline, tape, run_id)
        clock_ref.append(clock)
        pnl = next(h for h in pipeline.handlers if isinstance(h, DailyPnLProjection))

        async def one_day(d: date) -> None:
            await clock.run([d])
            # The day's closing figures straight from the projection: DailyPnLChanged only
            # fires when the total moves, not when a close turns unrealized into realized.
            snap = pnl.snapshot()
            if snap["session_date"] == d.isoformat():
                t = result.days.setdefault(d, DayTotals())
                t.realized = Decimal(snap["realized"])
                t.unrealized = Decimal(snap["unrealized"])
                t.total = Decimal(snap["total"])

        if progress:
            with Progress(TextColumn("[bold]backtest"), BarColumn(),
                          TextColumn("{task.fields[day]}"), TimeElapsedColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("bt", total=len(tape.dates), day="")
                for d in tape.dates:
                    bar.update(task, day=d.isoformat())
                    await one_day(d)
                    bar.advance(task)
        else:
            for d in tape.dates:
                await one_day(d)
        await recorder.flush()
        result.events = pipeline.dispatched

    with batch_gc():
        if record:
            # A backtest's log can be made again from its inputs: the server syncs it to disk
            # periodically and on exit rather than on every write (several times faster).
            async with open_event_log(settings, store, sync_always=False,
                                      run_id=run_id) as log:
                mark_latest_run(run_id)
                await go(Recorder(log))
        else:
            await go(Recorder(None))
    result.seconds = time.perf_counter() - started
    report = result.report(tape.dates, rows, spool)
    result.report_signals = report["signals"]
    write_json_atomic(report_path, report)
    return result


def write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def print_result(r: BacktestResult, console: Console) -> None:
    table = Table(title=f"Backtest {r.run_id}")
    for col in ("date", "realized", "unrealized", "P&L", "trades"):
        table.add_column(col, justify="right" if col != "date" else "left")
    for d, t in sorted(r.days.items()):
        table.add_row(d.isoformat(), f"{t.realized:,.2f}", f"{t.unrealized:,.2f}",
                      f"{t.total:,.2f}", str(t.trades))
    console.print(table)
    signals = r.report_signals
    if signals:
        counts = {k: sum(1 for s in signals if s["outcome"] == k)
                  for k in ("approved", "denied", "skipped")}
        filled = sum(1 for s in signals if s.get("order", {}).get("status") in
                     ("filled", "partially filled"))
        console.print(f"{len(signals)} signals: {counts['approved']} approved ({filled} "
                      f"filled), {counts['denied']} denied, {counts['skipped']} skipped",
                      highlight=False)
        unfilled = [s for s in signals if s["outcome"] != "approved" or s.get("order", {})
                    .get("status") not in ("filled", "partially filled")]
        for s in unfilled[:10]:  # why a signal did not trade; the report has them all
            why = (f"denied by {s['rule']}: {s['detail']}" if s["outcome"] == "denied"
                   else s.get("why") or s.get("order", {}).get("why", ""))
            console.print(f"  {s['time']} {s['symbol']} {s['side']}: {s['outcome']}"
                          f"{' (' + s['order']['status'] + ')' if s.get('order') else ''}"
                          f": {why}", highlight=False, soft_wrap=True)
        if len(unfilled) > 10:
            console.print(f"  ... and {len(unfilled) - 10} more in the report")
    rate = r.bars / r.seconds if r.seconds else 0
    console.print(f"{len(r.fills)} fills, {len(r.stops)} emergency stops, {r.bars} bars in "
                  f"{r.seconds:.2f}s ({rate:,.0f} bars/s)", highlight=False)
    # One item a line, never wrapped: paths to copy.
    console.print(f"report: {r.report_path}", soft_wrap=True, highlight=False)
    console.print(f"event log (NATS store): {r.store}", soft_wrap=True, highlight=False)
