"""Publishing and consuming through the loss of the record stream's leader on a 3-node cluster.

    .venv/bin/python bench/failover.py [--rounds 3]

Starts a local 3-node JetStream cluster (adapters.nats.local_cluster, `sync_interval: always`,
loopback), an EventLog with replicas 3 and a durable consumer. Per round: publish
ScanRequested events one after another (each awaits its ack, as a handler does); after 20,
kill -9 the node leading the record stream, keep publishing until 50 more are acked and the
consumer has every event, then restart the node and wait until the cluster is healthy.

Figures per round: the longest gap between two consecutive publish acks (the stall) and the
time from the kill to the consumer receiving the first event acked after the kill. Writes
bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID, uuid4

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.nats.event_log import EventLog, StreamNames  # noqa: E402
from adapters.nats.local_cluster import LocalCluster  # noqa: E402
from domain.events import Event, ScanRequested  # noqa: E402
from tests.builders import T0, make  # noqa: E402


async def until(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def one_round(cluster: LocalCluster, n: int) -> dict[str, float | str]:
    tag = uuid4().hex[:8]
    names = StreamNames(f"FO_REC_{tag}", f"FO_MD_{tag}")
    log = await EventLog.connect(cluster.urls, names=names, replicas=3, retry_timeout=60,
                                 subject_prefix=f"fo{tag}.")
    seen: dict[UUID, float] = {}

    async def on_event(ev: Event) -> list[Event]:
        seen.setdefault(ev.event_id, time.monotonic())
        return []

    await log.consume("follower", ["catalyst.session.>"], on_event)
    published: list[tuple[UUID, float]] = []
    stop = asyncio.Event()

    async def publish() -> None:
        i = 0
        while not stop.is_set():
            ev = make(ScanRequested, f"{tag}:{i}", T0, session_id="s", scan_number=i)
            await log.publish(ev)
            published.append((ev.event_id, time.monotonic()))
            i += 1

    task = asyncio.create_task(publish())
    await until(lambda: len(published) >= 20 and len(seen) >= 20, 30)
    leader = (await log.js.stream_info(names.record)).cluster.leader
    victim = int(leader.removeprefix("n")) - 1
    sent_before = len(published)
    killed = time.monotonic()
    cluster.kill(victim)
    await until(lambda: len(published) >= sent_before + 50, 60)
    stop.set()
    await task
    await until(lambda: all(e in seen for e, _ in published), 60)
    new_leader = (await log.js.stream_info(names.record)).cluster.leader
    await log.close()
    cluster.restart(victim)
    acks = [t for _, t in published]
    first_new = published[sent_before][0]
    result = {
        "round": n, "killed": leader, "new_leader": new_leader,
        "max_publish_stall_s": round(max(b - a for a, b in zip(acks, acks[1:], strict=False)),
                                     3),
        "consumer_resumed_after_kill_s": round(seen[first_new] - killed, 3),
        "events": len(published),
    }
    print(json.dumps(result), flush=True)
    return result


async def main(rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="catalyst-failover-") as d:
        cluster = LocalCluster(d).start()
        try:
            results = [await one_round(cluster, n + 1) for n in range(rounds)]
        finally:
            cluster.stop()
    stalls = [float(r["max_publish_stall_s"]) for r in results]
    resumes = [float(r["consumer_resumed_after_kill_s"]) for r in results]
    return {"rounds": results,
            "max_publish_stall_s": {"max": max(stalls), "median": statistics.median(stalls)},
            "consumer_resumed_after_kill_s": {"max": max(resumes),
                                              "median": statistics.median(resumes)}}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    summary = asyncio.run(main(a.rounds))
    out = Path(__file__).resolve().parent / "results" / "failover.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"publish stall on leader loss: max {summary['max_publish_stall_s']['max']:.2f}s "
          f"(median {summary['max_publish_stall_s']['median']:.2f}s); consumer resumed after "
          f"{summary['consumer_resumed_after_kill_s']['max']:.2f}s at most; wrote {out}")
