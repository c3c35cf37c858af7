"""Chaos trials of the services (issue 18): many seeds of tests/chaos/harness.py.

    .venv/bin/python bench/chaos.py [--trials 20] [--minutes 35] [--seed 1]

Each trial: a fresh set of streams on one local 3-node JetStream cluster, the fake Alpaca,
an SMTP server and each role as its own OS process (session, strategy, risk, execution,
alerts), a recorded day replayed at speed, and every fault at a seeded random minute: kill
-9 of the record stream's leader node, kill -9 of the active execution, risk and alerts
processes, a second execution and risk process, the broker's update stream dropped, SMTP
stopped for three minutes. Prints each trial's figures (duplicate orders, lost and doubled
fills and alerts, approvals, `replay --verify` divergences, failovers) and, over all trials,
failover p50/p99 (kill -9 of an active process -> its standby serving) and the longest
stall of the driver's writes to the log (the node loss). Writes bench/results/chaos.json.
Exit 1 if any trial lost, doubled or diverged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.nats.local_cluster import LocalCluster  # noqa: E402
from tests.chaos.harness import Trial, TrialResult  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(trials: int, minutes: int, seed: int, out: Path) -> int:
    results: list[TrialResult] = []
    with tempfile.TemporaryDirectory(prefix="catalyst-chaos-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.start()
        try:
            for n in range(trials):
                workdir = Path(tmp) / f"trial-{n}"
                workdir.mkdir()
                print(f"trial {n + 1}/{trials} (seed {seed + n})", flush=True)
                r = await Trial(cluster, workdir, seed + n, minutes,
                                log=lambda s: print(s, flush=True)).run()
                results.append(r)
                print(f"  orders {r.orders} (duplicates {r.duplicate_orders}), fills {r.fills} "
                      f"(lost {r.lost_fills}, doubled {r.doubled_fills}), alerts {r.alerts} "
                      f"(lost {r.lost_alerts}, doubled {r.doubled_alerts}), approvals "
                      f"{r.approvals}, divergences {r.divergences}, failovers "
                      + ", ".join(f"{f:.2f}s" for f in r.failovers)
                      + f", restarts {len(r.restarts)}, longest stall {r.longest_stall:.2f}s, "
                      f"{r.seconds:.0f}s {'OK' if r.ok else 'FAILED'}", flush=True)
        finally:
            cluster.stop()
    failovers = [f for r in results for f in r.failovers]
    summary = {
        "trials": len(results),
        "failed": sum(not r.ok for r in results),
        "duplicate_orders": sum(r.duplicate_orders for r in results),
        "lost_fills": sum(r.lost_fills for r in results),
        "doubled_fills": sum(r.doubled_fills for r in results),
        "lost_alerts": sum(r.lost_alerts for r in results),
        "doubled_alerts": sum(r.doubled_alerts for r in results),
        "divergences": sum(r.divergences for r in results),
        "failover_p50_s": pct(failovers, 0.5),
        "failover_p99_s": pct(failovers, 0.99),
        "failover_max_s": max(failovers, default=float("nan")),
        "longest_stall_s": max((r.longest_stall for r in results), default=float("nan")),
        "stall_p50_s": statistics.median([r.longest_stall for r in results]) if results
        else float("nan"),
    }
    print(f"\n{summary['trials']} trials, {summary['failed']} failed: duplicate orders "
          f"{summary['duplicate_orders']}, lost fills {summary['lost_fills']}, doubled fills "
          f"{summary['doubled_fills']}, lost alerts {summary['lost_alerts']}, doubled alerts "
          f"{summary['doubled_alerts']}, divergences {summary['divergences']}")
    print(f"failover (kill -9 -> standby serving, n={len(failovers)}): "
          f"p50 {summary['failover_p50_s']:.2f}s  p99 {summary['failover_p99_s']:.2f}s  "
          f"max {summary['failover_max_s']:.2f}s")
    print(f"longest stall of the log on node loss: {summary['longest_stall_s']:.2f}s "
          f"(median per trial {summary['stall_p50_s']:.2f}s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary,
                               "trials": [r.as_json() for r in results]}, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--minutes", type=int, default=35, help="minutes of the day per trial")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.trials, args.minutes, args.seed, args.out)))
