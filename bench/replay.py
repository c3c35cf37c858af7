"""Replay throughput: `catalyst replay` / `replay --verify` against raw nats-py, same log.

    .venv/bin/python bench/replay.py [--days 33] [--symbols 40] [--store DIR] [--keep]

1. Records a session log of >= 500,000 events with the real pipeline (scanner, strategy,
   risk guard, executor, projections, alerter, simulated broker) over seeded synthetic
   1-minute bars: `--symbols` symbols x 390 minutes x `--days` sessions, plus ticks and every
   decision. The server recording it runs without `sync_interval: always` (fsync per write
   makes recording 500k events take minutes and changes nothing about reading them); the
   store is reused with --store DIR when it already holds a log.
2. Measures, each in a fresh Python process (so each peak RSS is its own):
     raw        nats-py ordered push consumers (`js.subscribe(ordered_consumer=True, cb=...)`)
                over both streams, counting messages: the ceiling for any reader
     read       adapters.nats.log_source.NatsSource: both streams, decoded into events and merged
                into dispatch order (the engine under every replay command)
     json       `catalyst replay --json`'s work: read + one JSON line per event to /dev/null
     text       `catalyst replay`'s work: read + one readable line per event to /dev/null
     verify     `catalyst replay --verify`: read + every handler re-run + every decision checked,
                with the processes it uses by default (two on two cores: the scanner runs
                in a helper, see docs/replay-audit.md; its peak RSS is added in)
     verify_1proc  the same in one process (--jobs 1), for comparison
     verify_half  --verify over the first half of the days: peak memory against log length
   Modules are imported before each clock starts: the rates are over the log, not start-up.
3. Prints events/s, the ratios to raw, peak RSS (VmHWM) and writes
   bench/results/replay.json. Goals (issue 8): plain replay >= 100,000 events/s, verify >=
   0.5 x raw, peak memory independent of the log's length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
RUN_ID = "bench-replay"
START = date(2025, 6, 2)


# --- the log ---------------------------------------------------------------------------------


def sessions(days: int) -> list[object]:
    from adapters.market_data import calendar as xnys

    out = []
    d = START
    while len(out) < days:
        s = xnys.session_for(d)
        if s is not None and not s.early_close:
            out.append(s)
        d += timedelta(days=1)
    return out


def start_server(store: Path) -> subprocess.Popen[bytes]:
    from adapters.nats.embedded import free_port, nats_server_binary

    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = store / "bench-server.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{\n  store_dir: "{store}"\n}}\n')
    log = store / "bench-server.log"
    log.unlink(missing_ok=True)
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf), "-l", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and "Server is ready" in log.read_text(errors="replace"):
            proc.url = f"nats://127.0.0.1:{port}"  # type: ignore[attr-defined]
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nats-server did not start")


async def record(url: str, days: int, symbols: int, seed: int = 8) -> int:
    from adapters.nats.event_log import EventLog
    from adapters.runtime.app import build_sim_pipeline
    from adapters.runtime.config_watcher import SettingsHolder
    from adapters.runtime.pipeline import Recorder
    from adapters.runtime.run_record import run_started
    from adapters.runtime.simulation import MarketTape, SimulatedClock
    from config.settings import Settings
    from domain.calendar import NEW_YORK
    from domain.values import Bar

    rng = random.Random(seed)
    days_ = sessions(days)
    syms = [f"S{i:03d}" for i in range(symbols)]
    price = {s: 20 + rng.random() * 200 for s in syms}
    daily = []
    for s in syms:
        p = Decimal(f"{price[s]:.2f}")
        for k in range(1, 26):
            ts = datetime.combine(days_[0].date - timedelta(days=k), datetime.min.time(),
                                  NEW_YORK)
            daily.append(Bar(symbol=s, timestamp=ts, open=p, high=p + 1, low=p - 1, close=p,
                             volume=3_000_000, timeframe="1Day"))
    settings = Settings.model_validate({"trading": {"broker": {"kind": "sim"}}})
    log = await EventLog.connect(url)
    recorder = Recorder(log, chunk=5000)
    pipeline, _ = build_sim_pipeline(settings, SettingsHolder(settings), recorder, [],
                                     alerts=False)
    await pipeline.submit(run_started(RUN_ID, "backtest", settings, pipeline.handlers, "sim",
                                      days_[0].open - timedelta(minutes=5)))
    t = time.perf_counter()
    for n, sess in enumerate(days_):
        minute = []
        for i in range(int((sess.close - sess.open).total_seconds() // 60)):
            ts = sess.open + timedelta(minutes=i)
            for s in syms:
                o = price[s]
                c = o * (1 + rng.gauss(0, 0.0015))
                price[s] = c
                hi = max(o, c) * (1 + abs(rng.gauss(0, 0.0005)))
                lo = min(o, c) * (1 - abs(rng.gauss(0, 0.0005)))
                minute.append(Bar(symbol=s, timestamp=ts, open=Decimal(f"{o:.2f}"),
                                  high=Decimal(f"{hi:.2f}"), low=Decimal(f"{lo:.2f}"),
                                  close=Decimal(f"{c:.2f}"), volume=rng.randint(5000, 50000)))
        # Daily history once: a second copy would be recorded (and deduplicated) again.
        tape = MarketTape.from_data(minute, daily if n == 0 else [])
        await SimulatedClock(pipeline, tape, RUN_ID).run([sess.date])
        print(f"  recorded {sess.date} ({pipeline.dispatched:,} events, "
              f"{pipeline.dispatched / (time.perf_counter() - t):,.0f}/s)", file=sys.stderr)
    await recorder.flush()
    await log.close()
    return pipeline.dispatched


# --- measurements (each in its own process) --------------------------------------------------


async def measure(kind: str, url: str, half: str | None, jobs: int | None
                  ) -> dict[str, object]:
    # Every module a reader needs is imported before the clock starts, for every reader
    # alike: a rate over the log, not a process start-up.
    import adapters.runtime.app  # noqa: F401 - the handlers a verification builds
    from adapters.audit.settings_history import plan_for_nats
    from adapters.audit.verify import verify
    from adapters.audit.window import Window
    from adapters.nats.event_log import EventLog
    from adapters.nats.log_source import NatsSource
    from config.settings import Settings

    log = await EventLog.connect(url, create_streams=False)
    result = None
    try:
        plan = await plan_for_nats(log, Settings()) if kind == "verify" else None
        t = time.perf_counter()
        if kind == "raw":
            n = await raw_read(log)
        elif kind in ("read", "json", "text"):
            n = await replay_read(log, kind)
        else:
            window = Window(end=datetime.fromisoformat(half)) if half else Window()
            result = await verify(await NatsSource(log).open(), plan, window, jobs=jobs)
            n = result.events
        seconds = time.perf_counter() - t
    finally:
        await log.close()
    out: dict[str, object] = {"events": n, "seconds": seconds, "rate": n / seconds,
                              "peak_rss_mb": peak_rss_mb()}
    if result is not None:
        out["divergences"] = result.divergences
        out["jobs"] = jobs
        # Peak memory of a verification is its processes' peaks together.
        out["helper_peak_rss_mb"] = result.helper_peak_rss_mb
        out["process_peak_rss_mb"] = out["peak_rss_mb"]
        out["peak_rss_mb"] = out["peak_rss_mb"] + (result.helper_peak_rss_mb or 0)
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork and exec, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def raw_read(log: object) -> int:
    """Plain nats-py: one ordered push consumer per stream, a callback that counts."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    js = log.js  # type: ignore[attr-defined]
    total = 0
    for stream in (log.names.market_data, log.names.record):  # type: ignore[attr-defined]
        n_msgs = (await js.stream_info(stream)).state.messages
        done = asyncio.Event()
        count = 0

        async def cb(msg: object, n_msgs: int = n_msgs, done: asyncio.Event = done) -> None:
            nonlocal count
            count += 1
            if count >= n_msgs:
                done.set()

        sub = await js.subscribe("", stream=stream, ordered_consumer=True, cb=cb,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                                 pending_msgs_limit=2_000_000,
                                 pending_bytes_limit=2 * 1024 * 1024 * 1024)
        await done.wait()
        await sub.unsubscribe()
        total += count
    return total


async def replay_read(log: object, kind: str) -> int:
    """What `catalyst replay` does, output to /dev/null ("read": no output at all)."""
    from adapters.audit.replay import print_entries, window_entries
    from adapters.audit.window import Window
    from adapters.nats.log_source import NatsSource, bulk_gc

    source = await NatsSource(log).open()  # type: ignore[arg-type]
    if kind != "read":
        with open(os.devnull, "w") as out:
            return await print_entries(source, Window(), None, kind == "json", out,
                                       markup=False)
    n = 0
    with bulk_gc():
        async for batch in window_entries(source, Window()):
            n += len(batch)
    return n


def run_child(kind: str, url: str, half: str | None = None, jobs: int | None = None
              ) -> dict[str, object]:
    args = [sys.executable, __file__, "--measure", kind, "--url", url]
    if half:
        args += ["--half", half]
    if jobs is not None:
        args += ["--jobs", str(jobs)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=33)
    ap.add_argument("--symbols", type=int, default=40)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep a temporary store")
    ap.add_argument("--measure", default=None)
    ap.add_argument("--url", default=None)
    ap.add_argument("--half", default=None)
    ap.add_argument("--jobs", type=int, default=None,
                    help="verify's processes (default: what `catalyst replay --verify` uses)")
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(asyncio.run(measure(a.measure, a.url, a.half, a.jobs))))
        return

    store = a.store or Path(tempfile.mkdtemp(prefix="catalyst-bench-replay-"))
    proc = start_server(store)
    url = proc.url  # type: ignore[attr-defined]
    try:
        from adapters.nats.event_log import EventLog

        async def count() -> tuple[int, int]:
            log = await EventLog.connect(url)
            try:
                return (await log.last_seq(log.names.record),
                        await log.last_seq(log.names.market_data))
            finally:
                await log.close()

        rec, md = asyncio.run(count())
        recorded_now = False
        if rec + md == 0:
            print(f"recording {a.days} days x {a.symbols} symbols into {store} ...",
                  file=sys.stderr)
            t = time.perf_counter()
            asyncio.run(record(url, a.days, a.symbols))
            print(f"recorded in {time.perf_counter() - t:.0f}s", file=sys.stderr)
            rec, md = asyncio.run(count())
            recorded_now = True
        total = rec + md
        days = sessions(a.days)
        half_end = datetime.combine(days[len(days) // 2].date, datetime.min.time(),
                                    UTC).isoformat()
        results = {}
        from adapters.audit.verify import default_jobs

        jobs = a.jobs or default_jobs()
        runs = [("raw", "raw", None), ("read", "read", None), ("json", "json", None),
                ("text", "text", None), ("verify", "verify", jobs)]
        if jobs > 1:  # the same check in one process, for comparison
            runs.append(("verify_1proc", "verify", 1))
        for name, kind, j in runs:
            results[name] = run_child(kind, url, jobs=j)
            print(f"  {name:<12} {results[name]['rate']:>10,.0f} events/s  "
                  f"peak RSS {results[name]['peak_rss_mb']:.0f} MB", file=sys.stderr)
        results["verify_half"] = run_child("verify", url, half_end, jobs=jobs)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if a.store is None and not a.keep:
            shutil.rmtree(store, ignore_errors=True)

    raw = results["raw"]["rate"]
    ratio = {k: v["rate"] / raw for k, v in results.items() if k != "raw"}
    summary = {
        "bench": "replay",
        "events": total, "record_stream": rec, "market_data_stream": md,
        "days": a.days, "symbols": a.symbols, "recorded_now": recorded_now,
        "python": platform.python_version(), "machine": platform.machine(),
        "results": results, "ratio_to_raw": ratio,
        "goals": {
            "plain_replay_100k_per_s": results["json"]["rate"] >= 100_000,
            "verify_half_of_raw": ratio["verify"] >= 0.5,
            "memory_flat": results["verify"]["peak_rss_mb"]
            <= 1.25 * results["verify_half"]["peak_rss_mb"],
        },
        "at": datetime.now(UTC).isoformat(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{total:,} recorded events ({rec:,} record + {md:,} market data)")
    print(f"{'':<14}{'events/s':>12}{'x raw':>8}{'peak RSS':>10}")
    for k, v in results.items():
        print(f"{k:<14}{v['rate']:>12,.0f}{v['rate'] / raw:>8.2f}{v['peak_rss_mb']:>8.0f}MB"
              + (f"  ({v['events']:,} events)" if k == "verify_half" else ""))
    print(f"goals: {summary['goals']}")
    print(f"wrote {RESULTS / 'replay.json'}")


if __name__ == "__main__":
    main()
