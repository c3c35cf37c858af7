"""Emergency-stop latency: the bar that crosses the daily loss limit -> cancel-all at the broker.

    .venv/bin/python bench/stop_latency.py [--trials 1000] [--warmup 20]

The real-time runtime (`adapters.runtime.realtime.Services`: one sequencer for the handlers,
the effects as durable JetStream consumers) runs on an embedded nats-server
(`sync_interval: always`) started by this script, with the simulated broker. The clock
starts just before `EventLog.publish(bar)` of the bar that takes the day's P&L to the
limit, and stops when `cancel_all_orders` (or a first `cancel_order`) is called on the
broker object (`TimedBroker`, a thin SimulatedBroker subclass stamping
`time.perf_counter()`). The chain in between is the real one:

    bar (stored) -> sequencer_md consumer -> daily_pnl -> DailyPnLChanged -> risk_guard
        -> EmergencyStopTriggered (one unit, stored, fsynced) -> broker_effects consumer
        -> cancel-all

A core-NATS observer on its own connection (same process) stamps when DailyPnLChanged and
EmergencyStopTriggered come through, which splits each trial into its three hops
(approximately: the stamps are taken when the event loop gets to the observer).

In the same run, the raw floor: nats-py `js.publish` of one message on a stream with the
record stream's configuration -> a durable pull consumer (a `fetch(1)` already waiting)
receiving it, over as many trials.

Reset between trials (our choice): a new New York session date per trial, positions kept.
The daily P&L projection carries open positions into a new date at the previous date's last
mark and the risk guard arms its alarms once per date, so every date is a fresh day for the
limit with no stream, consumer or handler rebuilt. Setup, once: two longs of 100 shares at
100.00 (AAPL, MSFT; brackets 82 / 128), opened through the real signal -> approval ->
submit -> fill path exactly as tests/integration/test_emergency_stop.py does. Trial k, on
date T0 + (k - 1) days (limit 2,000):

    1. AAPL bar closing at 90: the day is at -1,000 (wait for that DailyPnLChanged);
    2. clock on; MSFT bar closing at 90: -2,000 -> warning and stop; clock off at cancel-all;
    3. wait for EmergencyStopCompleted, then bars back at 100 (the date ends at 0, its alarms
       are spent) and wait for that DailyPnLChanged, so nothing of trial k is in flight
       when trial k+1 starts.

Since issue 14 the risk guard counts open positions' stops against the daily limit and
sizes entries at a limit price: the two positions are opened with
`entry_limit_slippage_pct: 0` (limit = 100.00, so 100 shares) under a 4,000 daily limit, which
then drops to the default 2,000 (a hot reload) before the trials; nothing on the measured
path changes.
The emergency actions keep `close_all_positions: false` (the only other setting changed): closing
comes after the cancel-all, outside the measured span, and keeping the positions is what
makes the next date's trial possible without re-opening them. The halt
(`require_manual_restart`) stays on; it only denies new signals, which the trials do not
send. Trial 1 cancels the four bracket legs; later trials find nothing left to cancel, which
does not change when the broker is asked. Per trial: ~8 events, no new streams; the first
`--warmup` trials are run but left out of the figures (connections, caches, first-date
bookkeeping). Rejected: fresh streams per trial (seconds each); TradingResumed plus
re-opening both positions per trial (four more broker round trips and fills that need bars,
and the emergency close of a position at the simulated broker waits for the next bar while
holding the broker lock through its verify polls, about 3.5 s).
Between steps the bench waits until nothing has been published
for 20 ms, so the previous step's effects (alert e-mails rendered in threads, their
AlertSent) are not still running when the clock starts. Prints the figures and writes
bench/results/stop_latency.json (with every trial's latency in `series_ms`).

Past ~400 lines (just): a bench is one script to read top to bottom; its rig, trials and
report stay together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

from adapters.broker.sim import SimulatedBroker  # noqa: E402
from adapters.nats.embedded import EmbeddedNats  # noqa: E402
from adapters.nats.event_log import MSG_ID_HEADER, TYPE_HEADER, EventLog, StreamNames  # noqa: E402
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder  # noqa: E402
from adapters.runtime.realtime import Services  # noqa: E402
from config.settings import Settings  # noqa: E402
from domain.events import BarReceived, SignalGenerated  # noqa: E402
from domain.values import Bar  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 New York, a Monday
SYMBOLS = ("AAPL", "MSFT")
STEP_TIMEOUT = 30.0
# Nothing published for this long = the step's effects (handlers, alert e-mails) are done.
QUIET = 0.02


def percentiles(xs_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in xs_s)
    if not ms:
        return {}

    def q(p: float) -> float:  # nearest rank
        return ms[min(len(ms) - 1, max(0, int(round(p * len(ms) + 0.5)) - 1))]

    return {"n": len(ms), "p50": statistics.median(ms), "p99": q(0.99), "max": ms[-1],
            "mean": statistics.fmean(ms), "min": ms[0]}


# --- the stop chain ------------------------------------------------------------------------


class TimedBroker(SimulatedBroker):
    """The simulated broker, stamping when a cancel request reaches it (first one per arm)."""

    def arm(self) -> None:
        self.cancel_at: float | None = None
        self.hit = asyncio.Event()

    def _stamp(self) -> None:
        if getattr(self, "hit", None) is not None and self.cancel_at is None:
            self.cancel_at = time.perf_counter()
            self.hit.set()

    async def cancel_all_orders(self) -> int:
        self._stamp()
        return await super().cancel_all_orders()

    async def cancel_order(self, order_id: str) -> None:
        self._stamp()
        await super().cancel_order(order_id)


class Observer:
    """Everything published on catalyst.> as the server relays it (core NATS, own connection):
    counts per type, arrival stamps, the latest DailyPnLChanged per date."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.stamps: dict[str, float] = {}
        self.pnl: dict[str, str] = {}
        self.changed = asyncio.Condition()
        self.last = time.perf_counter()

    async def on_msg(self, msg: Msg) -> None:
        now = self.last = time.perf_counter()
        kind = (msg.headers or {}).get(TYPE_HEADER, "")
        self.counts[kind] += 1
        self.stamps.setdefault(kind, now)
        if kind == "DailyPnLChanged":
            body = json.loads(msg.data)
            self.pnl[body["session_date"]] = body["total"]
        async with self.changed:
            self.changed.notify_all()

    async def until(self, pred: Any, what: str) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(pred), STEP_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(
                    f"timed out waiting for {what}; seen {dict(self.counts)}") from None

    async def quiet(self, seconds: float) -> None:
        """Until nothing was published for `seconds` (the effects of a step have settled)."""
        while (left := self.last + seconds - time.perf_counter()) > 0:
            await asyncio.sleep(left)

    async def pnl_is(self, day: date, total: str) -> None:
        key = day.isoformat()
        await self.until(lambda: key in self.pnl and Decimal(self.pnl[key]) == Decimal(total),
                         f"DailyPnLChanged {key} = {total}")

    async def count_is(self, kind: str, n: int) -> None:
        await self.until(lambda: self.counts[kind] >= n, f"{n} x {kind}")


def bar_ev(symbol: str, at: datetime, o: str, h: str, low: str, c: str) -> BarReceived:
    b = Bar(symbol=symbol, timestamp=at, open=Decimal(o), high=Decimal(h), low=Decimal(low),
            close=Decimal(c), volume=10_000)
    return BarReceived(event_id=uuid5(NAMESPACE_URL, f"stopbench:bar:{symbol}:{at.isoformat()}"),
                       type="BarReceived", occurred_at=at + timedelta(minutes=1),
                       correlation_id="stop-bench", symbol=symbol, bar=b)


def signal_ev(symbol: str, at: datetime) -> SignalGenerated:
    return SignalGenerated(
        event_id=uuid5(NAMESPACE_URL, f"stopbench:signal:{symbol}"), type="SignalGenerated",
        occurred_at=at, correlation_id="stop-bench", signal_id=f"sig-{symbol}", symbol=symbol,
        side="buy", entry=Decimal("100"), stop_loss=Decimal("82"), take_profit=Decimal("128"))


async def open_positions(log: EventLog, obs: Observer) -> int:
    """The two longs, through the real path; returns the next free minute of day 0."""
    minute = 0
    for minute in range(5):
        for s in SYMBOLS:
            await log.publish(bar_ev(s, T0 + timedelta(minutes=minute), "100", "100.2",
                                     "99.8", "100"))
    minute = 5
    for n, sym in enumerate(SYMBOLS, start=1):
        await log.publish(signal_ev(sym, T0 + timedelta(minutes=minute)))
        await obs.count_is("OrderSubmitted", n)
        minute += 1  # the entry fills at the open of the first bar strictly after
        for s in SYMBOLS:
            await log.publish(bar_ev(s, T0 + timedelta(minutes=minute), "100", "100.1",
                                     "99.9", "100"))
        await obs.count_is("OrderFilled", n)
    return minute + 1


async def stop_chain(url: str, trials: int, warmup: int, tmp: Path) -> dict[str, Any]:
    names = StreamNames("STOPBENCH_REC", "STOPBENCH_MD")
    log = await EventLog.connect(url, names=names)
    def config(max_daily_loss_usd: int) -> Settings:
        return Settings.model_validate({
            "risk": {"emergency_actions": {"close_all_positions": False},
                     "risk_limits": {"max_daily_loss_usd": max_daily_loss_usd}},
            "trading": {"alerts": {"mailbox_dir": str(tmp / "mail")},
                        "order_execution": {"entry_limit_slippage_pct": 0}},
        })

    settings = config(2000)
    holder = SettingsHolder(config(4000))  # both stops (1,800 each) fit while opening
    broker = TimedBroker.from_settings(settings.trading.broker.sim)
    assert isinstance(broker, TimedBroker)
    clock_now = [T0]
    services = Services(holder, log, broker, build_handlers(settings, "sim"),
                        clock=lambda: clock_now[0], schedule=False, reconcile=False)
    obs = Observer()
    onc = await nats.connect(url)
    await onc.subscribe("catalyst.>", cb=obs.on_msg)
    await onc.flush()
    await services.start()
    total: list[float] = []
    hops: dict[str, list[float]] = defaultdict(list)
    started = time.perf_counter()
    try:
        minute = await open_positions(log, obs)
        holder.current = settings  # the trials run under the 2,000 limit
        for k in range(1, warmup + trials + 1):
            # Trial 1 on the setup date (its stop marks the positions close-requested, so
            # the executor's max-hold exit never fires on them afterwards), then a date each.
            day0 = T0 + timedelta(days=k - 1, minutes=minute + 1)
            clock_now[0] = day0
            d = day0.date()
            await log.publish(bar_ev("AAPL", day0, "100", "100", "89.9", "90"))
            await obs.pnl_is(d, "-1000")
            await obs.quiet(QUIET)
            broker.arm()
            obs.stamps.clear()
            t0 = time.perf_counter()
            await log.publish(bar_ev("MSFT", day0, "100", "100", "89.9", "90"))
            await asyncio.wait_for(broker.hit.wait(), STEP_TIMEOUT)
            assert broker.cancel_at is not None
            await obs.count_is("EmergencyStopCompleted", k)
            if k > warmup:
                total.append(broker.cancel_at - t0)
                pnl_at = obs.stamps.get("DailyPnLChanged")
                stop_at = obs.stamps.get("EmergencyStopTriggered")
                if pnl_at is not None and stop_at is not None:
                    hops["bar_to_pnl_changed"].append(pnl_at - t0)
                    hops["pnl_changed_to_stop_triggered"].append(stop_at - pnl_at)
                    hops["stop_triggered_to_cancel"].append(broker.cancel_at - stop_at)
            for s in SYMBOLS:
                await log.publish(bar_ev(s, day0 + timedelta(minutes=1), "90", "100", "90",
                                         "100"))
            await obs.pnl_is(d, "0")
            await obs.quiet(QUIET)
        elapsed = time.perf_counter() - started
        counts = dict(obs.counts)
    finally:
        await services.stop()
        await onc.drain()
        for s in (names.record, names.market_data):
            with contextlib.suppress(Exception):
                await log.js.delete_stream(s)
        await log.close()
    if counts.get("EmergencyStopTriggered") != warmup + trials:
        raise RuntimeError(f"expected one stop per trial; saw {counts}")
    return {"latency_ms": percentiles(total), "hops_ms": {k: percentiles(v)
                                                          for k, v in hops.items()},
            "seconds": elapsed, "events_seen": counts,
            "series_ms": [round(x * 1000, 3) for x in total]}


# --- the raw NATS floor --------------------------------------------------------------------


async def nats_floor(url: str, trials: int, warmup: int) -> dict[str, Any]:
    """nats-py only: publish one message (awaiting the ack) -> a waiting pull consumer."""
    # The record stream's configuration under another name and subject: same durability.
    log = await EventLog.connect(url, names=StreamNames("FLOOR_CFG_REC", "FLOOR_CFG_MD"))
    cfg = (await log.js.stream_info(log.names.record)).config
    for s in (log.names.record, log.names.market_data):
        await log.js.delete_stream(s)
    await log.close()

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5.0)
    cfg.name, cfg.subjects = "FLOOR", ["floor.>"]
    cfg.deny_delete = cfg.deny_purge = False
    await js.add_stream(cfg)
    await js.add_consumer("FLOOR", ConsumerConfig(
        durable_name="floor", ack_policy=AckPolicy.EXPLICIT, ack_wait=10.0,
        max_ack_pending=256, deliver_policy=DeliverPolicy.ALL, filter_subject="floor.>"))
    sub = await js.pull_subscribe_bind(durable="floor", stream="FLOOR")
    received: asyncio.Queue[float] = asyncio.Queue()
    waiting = asyncio.Event()

    async def pull() -> None:
        while True:
            waiting.set()
            try:
                msgs = await sub.fetch(1, timeout=5.0)
            except nats.errors.TimeoutError:
                continue
            now = time.perf_counter()
            waiting.clear()
            for m in msgs:
                await m.ack()
            received.put_nowait(now)

    task = asyncio.create_task(pull())
    delivery: list[float] = []
    ack: list[float] = []
    payload = b'{"x": "' + b"y" * 400 + b'"}'  # about the size of a bar event
    try:
        for i in range(warmup + trials):
            await waiting.wait()
            await asyncio.sleep(0.002)  # let the pull request reach the server
            t0 = time.perf_counter()
            await js.publish("floor.x", payload, headers={MSG_ID_HEADER: f"floor-{i}"})
            t_ack = time.perf_counter()
            t_recv = await asyncio.wait_for(received.get(), STEP_TIMEOUT)
            if i >= warmup:
                delivery.append(t_recv - t0)
                ack.append(t_ack - t0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sub.unsubscribe()
        await js.delete_stream("FLOOR")
        await nc.close()
    return {"latency_ms": percentiles(delivery), "publish_ack_ms": percentiles(ack)}


# --- main ----------------------------------------------------------------------------------


def fmt(p: dict[str, float]) -> str:
    return f"p50 {p['p50']:8.3f}  p99 {p['p99']:8.3f}  max {p['max']:8.3f} ms  (n={p['n']})"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stopbench-") as tmp, \
            EmbeddedNats(store_dir=Path(tmp) / "nats") as server:
        floor = await nats_floor(server.url, args.trials, args.warmup)
        print(f"NATS floor  publish->pull receive  {fmt(floor['latency_ms'])}")
        print(f"            publish->ack           {fmt(floor['publish_ack_ms'])}")
        chain = await stop_chain(server.url, args.trials, args.warmup, Path(tmp))
        print(f"Stop chain  bar->cancel-all        {fmt(chain['latency_ms'])}")
        for name, p in chain["hops_ms"].items():
            print(f"            {name:<30} {fmt(p)}")
        print(f"            ({chain['seconds']:.1f} s for {args.warmup + args.trials} trials)")
    return {"floor": floor, "stop_chain": chain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "stop_latency.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    load_before = os.getloadavg()
    figures = asyncio.run(main_async(args))
    result = {
        "bench": "stop_latency",
        "trials": args.trials,
        "warmup": args.warmup,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        # Other work on the machine shows in the tails (the floor's own p99 moves with it).
        "loadavg_before_after": [load_before, os.getloadavg()],
        "goal_p99_ms": 10.0,
        "wall_seconds": time.perf_counter() - t,
        **figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
