"""Event log throughput: the project's EventLog against raw nats-py, same server, same run.

    .venv/bin/python bench/eventlog.py [--n 100000] [--kind bar|record] [--repeat 1]

Both paths run against one embedded nats-server (sync_interval: always) on streams with the
same configuration (file storage, the same duplicate window; the raw stream is a copy of the
project's stream config under another name and subject), and both put `Nats-Msg-Id` on every
message, so they pay for the same durability.

- project: `EventLog.publish_many(events)` (serialises the pydantic events), then a durable
  consumer via `EventLog.consume` whose handler does nothing (each message is validated into
  its event class, then acked).
- raw: `js.publish_async` of pre-serialised bytes, then a pull consumer that fetches batches
  and acks each message without looking at it.
- end-to-end: a fresh pair of streams, consumer started first, then N published; the clock
  stops when the consumer has acked the last one.

Figures are events/s; the goal (issue) is project >= 0.5 x raw for each phase. Prints a table
and writes bench/results/eventlog.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import NAMESPACE_URL, uuid5

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

from adapters.nats.embedded import EmbeddedNats  # noqa: E402
from adapters.nats.event_log import MSG_ID_HEADER, EventLog, StreamNames  # noqa: E402
from domain.events import BarReceived, Event, ScanRequested  # noqa: E402
from domain.values import Bar  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
BATCH = 256          # raw fetch batch: the EventLog consumer's default
MAX_ACK_PENDING = 1000


def make_events(n: int, kind: str, run: str) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        eid = uuid5(NAMESPACE_URL, f"bench:{run}:{i}")
        at = T0 + timedelta(seconds=i)
        if kind == "bar":
            sym = f"SYM{i % 10}"
            px = Decimal(100) + Decimal(i % 1000) / 100
            bar = Bar(symbol=sym, timestamp=at, open=px, high=px + 1, low=px - 1,
                      close=px + Decimal("0.5"), volume=1000 + i % 5000)
            out.append(BarReceived(event_id=eid, type="BarReceived", occurred_at=at,
                                   correlation_id=run, symbol=sym, bar=bar))
        else:
            out.append(ScanRequested(event_id=eid, type="ScanRequested", occurred_at=at,
                                     correlation_id=run, session_id="s1", scan_number=i))
    return out


async def wait_for(cond, timeout: float = 600.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise TimeoutError("consumer did not catch up")
        await asyncio.sleep(0.002)


# --- the project's path --------------------------------------------------------------------


async def project_round(url: str, events: list[Event], e2e_events: list[Event], tag: str,
                        kind: str) -> dict[str, float]:
    n = len(events)
    log = await EventLog.connect(url, names=StreamNames(f"P_REC_{tag}", f"P_MD_{tag}"))
    stream = log.names.market_data if kind == "bar" else log.names.record
    subject = "catalyst.md.>" if kind == "bar" else "catalyst.scan.>"
    try:
        t = time.perf_counter()
        await log.publish_many(events)
        publish = time.perf_counter() - t

        async def noop(ev: Event) -> list[Event]:
            return []

        t = time.perf_counter()
        c = await log.consume(f"bench_{tag}", [subject], noop, stream=stream)
        await wait_for(lambda: c.stats.processed >= n)
        consume = time.perf_counter() - t
        await c.stop()
    finally:
        for s in (log.names.record, log.names.market_data):
            await log.js.delete_stream(s)
        await log.close()

    # End to end on a fresh pair of streams: consumer running, then publish.
    log = await EventLog.connect(url, names=StreamNames(f"P_REC_E_{tag}", f"P_MD_E_{tag}"))
    stream = log.names.market_data if kind == "bar" else log.names.record
    try:
        c = await log.consume(f"bench_e_{tag}", [subject], noop, stream=stream)
        t = time.perf_counter()
        await log.publish_many(e2e_events)
        await wait_for(lambda: c.stats.processed >= n)
        e2e = time.perf_counter() - t
        await c.stop()
    finally:
        for s in (log.names.record, log.names.market_data):
            await log.js.delete_stream(s)
        await log.close()
    return {"publish": n / publish, "consume": n / consume, "end_to_end": n / e2e}


# --- raw nats-py ---------------------------------------------------------------------------


async def raw_round(url: str, events: list[Event], e2e_events: list[Event], tag: str,
                    kind: str) -> dict[str, float]:
    n = len(events)
    # The project's stream config, copied under another name: identical durability.
    log = await EventLog.connect(url, names=StreamNames(f"CFG_REC_{tag}", f"CFG_MD_{tag}"))
    src = log.names.market_data if kind == "bar" else log.names.record
    cfg = (await log.js.stream_info(src)).config
    for s in (log.names.record, log.names.market_data):
        await log.js.delete_stream(s)
    await log.close()

    def encode(evs: list[Event], prefix: str) -> list[tuple[str, bytes, dict[str, str]]]:
        return [(f"{prefix}.{e.subject}", e.to_json(), {MSG_ID_HEADER: str(e.event_id)})
                for e in evs]

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=5.0)

    async def make_stream(name: str, prefix: str) -> None:
        cfg.name = name
        cfg.subjects = [f"{prefix}.>"]
        await js.add_stream(cfg)

    async def publish(msgs: list[tuple[str, bytes, dict[str, str]]]) -> None:
        futs = [await js.publish_async(s, d, headers=h) for s, d, h in msgs]
        await asyncio.gather(*futs)

    async def pull_consume(stream: str, durable: str, prefix: str) -> None:
        await js.add_consumer(stream, ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=10.0,
            max_ack_pending=MAX_ACK_PENDING, deliver_policy=DeliverPolicy.ALL,
            filter_subject=f"{prefix}.>"))
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream,
                                           pending_msgs_limit=-1, pending_bytes_limit=-1)
        got = 0
        while got < n:
            try:
                msgs = await sub.fetch(BATCH, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                await m.ack()
            got += len(msgs)
        await sub.unsubscribe()

    try:
        prefix = f"raw{tag}"
        stream = f"RAW_{tag}"
        msgs = encode(events, prefix)  # serialised before the clock: raw is pure transport
        await make_stream(stream, prefix)
        t = time.perf_counter()
        await publish(msgs)
        publish_s = time.perf_counter() - t
        t = time.perf_counter()
        await pull_consume(stream, f"raw_{tag}", prefix)
        consume_s = time.perf_counter() - t
        await js.delete_stream(stream)

        prefix_e = f"rawe{tag}"
        stream_e = f"RAW_E_{tag}"
        msgs = encode(e2e_events, prefix_e)
        await make_stream(stream_e, prefix_e)
        t = time.perf_counter()
        consumer = asyncio.create_task(pull_consume(stream_e, f"raw_e_{tag}", prefix_e))
        await publish(msgs)
        await consumer
        e2e_s = time.perf_counter() - t
        await js.delete_stream(stream_e)
    finally:
        await nc.drain()
    return {"publish": n / publish_s, "consume": n / consume_s, "end_to_end": n / e2e_s}


# --- main ----------------------------------------------------------------------------------


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--kind", choices=("bar", "record"), default="bar",
                    help="BarReceived on the market-data stream, or ScanRequested on the "
                         "system-of-record stream")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; raw and project alternate, medians reported")
    ap.add_argument("--out", type=Path, default=RESULTS / "eventlog.json")
    args = ap.parse_args()

    rounds: dict[str, list[dict[str, float]]] = {"raw": [], "project": []}
    with EmbeddedNats() as server:
        for r in range(args.repeat):
            # Each path gets its own events (ids) so dedup never hides a publish.
            for path in (("raw", "project") if r % 2 == 0 else ("project", "raw")):
                evs = make_events(args.n, args.kind, f"{path}{r}")
                e2e = make_events(args.n, args.kind, f"{path}{r}e")
                fn = raw_round if path == "raw" else project_round
                res = await fn(server.url, evs, e2e, f"{r}", args.kind)
                rounds[path].append(res)
                print(f"round {r} {path:8s} " + "  ".join(
                    f"{k}={v:,.0f}/s" for k, v in res.items()), flush=True)

    phases = ("publish", "consume", "end_to_end")
    med = {p: {ph: statistics.median(x[ph] for x in rounds[p]) for ph in phases}
           for p in rounds}
    ratio = {ph: med["project"][ph] / med["raw"][ph] for ph in phases}
    print(f"\n{args.n:,} {args.kind} events, sync_interval=always, median of {args.repeat}")
    print(f"{'phase':12s} {'raw nats-py':>14s} {'EventLog':>14s} {'ratio':>7s}")
    for ph in phases:
        print(f"{ph:12s} {med['raw'][ph]:>12,.0f}/s {med['project'][ph]:>12,.0f}/s "
              f"{ratio[ph]:>7.2f}")
    ok = all(r >= 0.5 for r in ratio.values())
    print("goal (EventLog >= 0.5 x raw on every phase):", "met" if ok else "NOT met")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "bench": "eventlog", "n": args.n, "kind": args.kind, "repeat": args.repeat,
        "python": platform.python_version(), "machine": platform.machine(),
        "rounds": rounds, "median": med, "ratio": ratio, "goal_met": ok,
        "at": datetime.now(UTC).isoformat(),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
