"""Backtest throughput: bars per second through the whole event pipeline.

    .venv/bin/python bench/backtest.py [--symbols 10] [--start 2025-03-03] [--seed 7]
                                       [--only scanner_record_month,...] [--no-memory]

Synthetic 1-minute regular-hours bars (seeded random walk, written to a temp CSV) for
`--symbols` symbols over one month (~21 NYSE sessions) and over its first week, run through
`adapters.runtime.backtest.run_backtest` with the shipped default config:

  scanner_record_month   scanner and strategy on (no signals file), recording to the embedded
                         NATS (sync_interval: always): the `catalyst backtest` default
  scanner_norecord_month the same with recording off: the cost of recording
  signals_record_month   a SIGNALS.csv (one entry per symbol per day), scanner off
  scanner_record_week    the first 5 sessions, to compare memory with the month

Every variant runs in its own child process, so ru_maxrss is that run's own. bars/s is
`bars / BacktestResult.seconds` (the pipeline run, server start included, CSV parsing not).
A second child per variant runs under tracemalloc (slower, not timed) and samples the Python
heap after every session: "held" is what stays allocated after day 1 and after the last day,
so growth with the length of the run shows as a difference between the two.

Prints a table and writes bench/results/backtest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"
MINUTE = timedelta(minutes=1)

VARIANTS = {
    # name: (days, record, signals)
    "scanner_record_month": (21, True, False),
    "scanner_norecord_month": (21, False, False),
    "signals_record_month": (21, True, True),
    "scanner_record_week": (5, True, False),
}


def write_data(directory: Path, symbols: int, start: date, days: int, seed: int
               ) -> tuple[Path, Path, int]:
    """bars.csv and signals.csv for `days` sessions from `start`; returns (bars, signals, n)."""
    from adapters.market_data import calendar as xnys

    sessions = [d for d in xnys.sessions_between(start, start + timedelta(days=days * 2 + 10))
                ][:days]
    rng = random.Random(seed)
    names = [f"S{i:02d}X" for i in range(symbols)]
    price = {s: rng.uniform(20, 200) for s in names}
    bars_path, sig_path = directory / "bars.csv", directory / "signals.csv"
    n = 0
    with bars_path.open("w", newline="") as fb, sig_path.open("w", newline="") as fs:
        wb, ws = csv.writer(fb), csv.writer(fs)
        wb.writerow(("timestamp", "symbol", "open", "high", "low", "close", "volume"))
        ws.writerow(("timestamp", "symbol", "side", "stop_loss", "take_profit"))
        for d in sessions:
            s = xnys.session_for(d)
            assert s is not None
            t, k = s.open, 0
            while t < s.close:
                for i, sym in enumerate(names):
                    o = price[sym]
                    c = max(1.0, o * (1 + rng.gauss(0.0002, 0.002)))
                    hi = max(o, c) * (1 + abs(rng.gauss(0, 0.0008)))
                    lo = min(o, c) * (1 - abs(rng.gauss(0, 0.0008)))
                    vol = int(rng.lognormvariate(9.3, 0.6))  # ~11k/minute, ~4M/day
                    wb.writerow((t.isoformat(), sym, f"{o:.2f}", f"{hi:.2f}", f"{lo:.2f}",
                                 f"{c:.2f}", vol))
                    price[sym] = c
                    n += 1
                    # One long entry per symbol per day, staggered through the morning.
                    if k == 30 + 7 * i:
                        ws.writerow(((t + MINUTE).isoformat(), sym, "buy",
                                     f"{c * 0.99:.2f}", f"{c * 1.015:.2f}"))
                t += MINUTE
                k += 1
    return bars_path, sig_path, n


# --- child: one backtest -------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    from adapters.runtime import backtest as bt
    from adapters.runtime.simulation import SimulatedClock
    from config.loader import load_settings

    days, record, signals = VARIANTS[args.variant]
    settings = load_settings(None).settings
    data = Path(args.data)
    samples: list[int] = []
    if args.trace:
        import tracemalloc

        class SampledClock(SimulatedClock):
            async def run(self, days=None):  # type: ignore[no-untyped-def]
                await super().run(days)
                import gc
                gc.collect()
                samples.append(tracemalloc.get_traced_memory()[0])

        bt.SimulatedClock = SampledClock  # type: ignore[misc]
        tracemalloc.start()
    os.chdir(data)  # the run store (var/runs/<id>/nats) goes to the temp dir
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from rich.console import Console
    t = time.perf_counter()
    result = asyncio.run(bt.run_backtest(
        settings, data / f"bars_{days}.csv", data / f"signals_{days}.csv" if signals else None,
        data / f"report_{args.variant}.json", console=Console(file=open(os.devnull, "w")),
        record=record, progress=False))
    wall = time.perf_counter() - t
    out = {
        "bars": result.bars, "events": result.events, "seconds": result.seconds, "wall": wall,
        "bars_per_s": result.bars / result.seconds, "fills": len(result.fills),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maxrss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
        # CPU seconds of this process and of the embedded nats-server it ran (a child): on
        # two cores the server's share competes with the handlers.
        "cpu_s": _cpu(resource.RUSAGE_SELF), "server_cpu_s": _cpu(resource.RUSAGE_CHILDREN),
    }
    if args.trace:
        import tracemalloc
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        out["held_after_day_mb"] = [s / 2**20 for s in samples]
    print(json.dumps(out))


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return round(r.ru_utime + r.ru_stime, 3)


def run_child(variant: str, data: Path, trace: bool, profile: Path | None = None
              ) -> dict[str, object]:
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [__file__, "--child", "--variant", variant, "--data", str(data)]
    if trace:
        cmd.append("--trace")
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=10)
    ap.add_argument("--start", type=date.fromisoformat, default=date(2025, 3, 3))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", default=",".join(VARIANTS))
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc children")
    ap.add_argument("--profile", type=Path, help="cProfile the first variant to this file")
    ap.add_argument("--out", type=Path, default=RESULTS / "backtest.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    variants = [v for v in args.only.split(",") if v]
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="catalyst-bench-bt-") as tmp:
        data = Path(tmp)
        counts = {}
        for days in sorted({VARIANTS[v][0] for v in variants}):
            b, s, n = write_data(data, args.symbols, args.start, days, args.seed)
            b.rename(data / f"bars_{days}.csv")
            s.rename(data / f"signals_{days}.csv")
            counts[days] = n
        for i, v in enumerate(variants):
            prof = args.profile if (args.profile and i == 0) else None
            results[v] = run_child(v, data, trace=False, profile=prof)
            if not args.no_memory:
                mem = run_child(v, data, trace=True)
                results[v].update({k: mem[k] for k in ("traced_peak_mb", "held_after_day_mb")})
            r = results[v]
            print(f"{v:24s} {r['bars']:>7,} bars {r['events']:>8,} events "
                  f"{r['seconds']:6.2f}s {r['bars_per_s']:>9,.0f} bars/s  "
                  f"maxrss {r['maxrss_mb']:.0f} MB  cpu {r['cpu_s']:.1f}s "
                  f"(server {r['server_cpu_s']:.1f}s)", flush=True)

    print()
    print(f"{'variant':24s} {'bars/s':>9s} {'events/s':>9s} {'maxRSS':>7s} "
          f"{'trace peak':>10s} {'held d1':>8s} {'held last':>9s}  (MB)")
    for v, r in results.items():
        held = r.get("held_after_day_mb") or []
        print(f"{v:24s} {r['bars_per_s']:>9,.0f} {r['events'] / r['seconds']:>9,.0f} "
              f"{r['maxrss_mb']:>7.0f} "
              + (f"{r['traced_peak_mb']:>10.1f} {held[0]:>8.1f} {held[-1]:>9.1f}"
                 if held else ""))
    if "scanner_record_month" in results and "scanner_norecord_month" in results:
        a, b = results["scanner_record_month"], results["scanner_norecord_month"]
        print(f"recording costs {1 - a['bars_per_s'] / b['bars_per_s']:.0%} of throughput "
              f"({b['bars_per_s']:,.0f} -> {a['bars_per_s']:,.0f} bars/s)")
    best = results.get("scanner_record_month", next(iter(results.values())))
    ok = best["bars_per_s"] >= 20_000
    print("goal (>= 20,000 bars/s, scanner on, recording on):", "met" if ok else "NOT met")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "bench": "backtest", "symbols": args.symbols, "start": args.start.isoformat(),
        "seed": args.seed, "sessions": {str(k): v for k, v in counts.items()},
        "python": platform.python_version(), "results": results, "goal_met": ok,
        "at": datetime.now(UTC).isoformat(),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
