"""The event log against a real nats-server: round trip, dedup, crash/restart, dead letters."""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import pytest

from adapters.nats.embedded import EmbeddedNats
from adapters.nats.event_log import EventLog, StreamNames
from domain.errors import ConcurrencyError
from domain.events import Event, ScanRequested, SessionStartRequested
from tests.builders import T0, bar_event, make, start_requested

# The read path runs through the fast lane and through nats-py's public API alone.
pytestmark = pytest.mark.usefixtures("fast_lane_on_and_off")


async def wait_until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def elog(nats_url: str):  # type: ignore[no-untyped-def]
    names = StreamNames(record=f"REC_{uuid4().hex[:8]}", market_data=f"MD_{uuid4().hex[:8]}")
    # Each test gets its own subjects space by stream name; subjects overlap across
    # tests, so delete the streams afterwards.
    log = await EventLog.connect(nats_url, names=names)
    yield log
    for s in (names.record, names.market_data):
        try:
            await log.js.delete_stream(s)
        except Exception:  # noqa: BLE001
            pass
    await log.close()


def scan(n: int) -> ScanRequested:
    return make(ScanRequested, f"scan:{n}", T0, session_id="s1", scan_number=n)


async def test_streams_are_created_idempotently(elog: EventLog) -> None:
    await elog.ensure_streams()
    await elog.ensure_streams()
    rec = await elog.js.stream_info(elog.names.record)
    md = await elog.js.stream_info(elog.names.market_data)
    assert rec.config.duplicate_window == 120
    assert rec.config.deny_delete and rec.config.deny_purge
    assert md.config.max_age == 30 * 86400
    assert md.config.subjects == ["catalyst.md.>"]


async def test_publish_consume_round_trip(elog: EventLog) -> None:
    seen: list[Event] = []

    async def on_event(ev: Event) -> list[Event]:
        seen.append(ev)
        return []

    await elog.consume("rt", ["catalyst.session.>"], on_event)
    sent = start_requested("rt")
    await elog.publish(sent)
    await wait_until(lambda: len(seen) == 1)
    assert seen[0] == sent


async def test_a_slow_handler_keeps_its_message_past_a_short_ack_wait(
    elog: EventLog, nats_url: str
) -> None:
    """The consumer says the message is in progress while the handler works, so with a
    short ack wait (a dead process's message comes back soon) a slow one is not handed to
    another instance pulling from the same durable consumer."""
    calls: list[str] = []

    def handler(who: str):  # type: ignore[no-untyped-def]
        async def slow(ev: Event) -> list[Event]:
            calls.append(who)
            await asyncio.sleep(1.6)  # four ack waits
            return []
        return slow

    other = await EventLog.connect(nats_url, names=elog.names, create_streams=False)
    try:
        await elog.consume("slow", ["catalyst.session.>"], handler("a"), ack_wait=0.4,
                           max_ack_pending=4)
        await elog.publish(start_requested("slow"))
        await wait_until(lambda: len(calls) == 1)
        await other.consume("slow", ["catalyst.session.>"], handler("b"), ack_wait=0.4,
                            max_ack_pending=4)
        await asyncio.sleep(2.5)
        assert calls == ["a"]
    finally:
        await other.close()


async def test_market_data_goes_to_its_own_stream(elog: EventLog) -> None:
    seq = await elog.publish(bar_event("AAPL", 0, "10", "11", "9", "10.5"))
    assert seq == 1
    got = [s async for s in elog.read(["catalyst.md.>"], stream=elog.names.market_data)]
    assert [s.subject for s in got] == ["catalyst.md.bar.AAPL"]
    assert await elog.last_seq() == 0


async def test_duplicate_event_id_is_stored_once(elog: EventLog) -> None:
    ev = start_requested("dup")
    await elog.publish(ev)
    await elog.publish(ev)
    await elog.publish_many([ev, ev])
    assert await elog.last_seq() == 1


async def test_expected_last_subject_sequence_detects_a_race(elog: EventLog) -> None:
    first = make(SessionStartRequested, "occ1", requested_by="a")
    seq = await elog.publish(first, expected_last_subject_seq=0)
    second = make(SessionStartRequested, "occ2", requested_by="b")
    await elog.publish(second, expected_last_subject_seq=seq)
    late = make(SessionStartRequested, "occ3", requested_by="c")
    with pytest.raises(ConcurrencyError, match="expected last subject sequence"):
        await elog.publish(late, expected_last_subject_seq=seq)
    assert await elog.last_subject_seq("catalyst.session.start_requested") == seq + 1


async def test_handler_outputs_are_published_before_ack(elog: EventLog) -> None:
    async def on_start(ev: Event) -> list[Event]:
        return [ScanRequested.caused_by(ev, 0, "t", session_id="s", scan_number=1)]

    await elog.consume("chain", ["catalyst.session.start_requested"], on_start)
    cause = start_requested("chain")
    await elog.publish(cause)

    async def count() -> int:
        return len([s async for s in elog.read(["catalyst.session.scan_requested"])])

    for _ in range(200):
        if await count() == 1:
            break
        await asyncio.sleep(0.02)
    got = [s.event async for s in elog.read(["catalyst.session.scan_requested"])]
    assert got[0].causation_id == cause.event_id


async def test_malformed_messages_are_dead_lettered_and_consumer_goes_on(elog: EventLog) -> None:
    seen: list[Event] = []

    async def on_event(ev: Event) -> list[Event]:
        seen.append(ev)
        return []

    consumer = await elog.consume("dlq", ["catalyst.session.>"], on_event)
    await elog.publish_raw("catalyst.session.started", b"{not json")
    await elog.publish_raw("catalyst.session.started", json.dumps({"type": "Nope"}).encode())
    await elog.publish_raw("catalyst.session.started",
                           json.dumps({"type": "SessionStarted", "event_id": "x"}).encode())
    await elog.publish(start_requested("after-bad"))
    await wait_until(lambda: len(seen) == 1)
    assert consumer.stats.dead_lettered == 3
    # Dead letters are raw JSON envelopes (not events), so read them directly.
    msgs = []
    for seq in range(1, await elog.last_seq() + 1):
        m = await elog.js.get_msg(elog.names.record, seq)
        if m.subject.startswith("catalyst.dlq."):
            msgs.append(json.loads(m.data))
    assert [m["consumer"] for m in msgs] == ["dlq"] * 3
    assert "not valid JSON" in msgs[0]["reason"]
    assert "unknown event type 'Nope'" in msgs[1]["reason"]
    assert "field 'event_id'" in msgs[2]["reason"]


async def test_consumer_killed_mid_batch_processes_every_event_once_in_effect(
    elog: EventLog,
) -> None:
    """At-least-once delivery + ids derived from the cause = exactly once in effect."""
    n = 200
    for i in range(n):
        await elog.publish(scan(i))
    processed: list[int] = []

    async def slow(ev: Event) -> list[Event]:
        processed.append(ev.scan_number)  # type: ignore[attr-defined]
        return [SessionStartRequested.caused_by(ev, 0, "echo", requested_by="echo")]

    consumer = await elog.consume("crashy", ["catalyst.session.scan_requested"], slow, batch=16,
                                  ack_wait=1.0)
    await wait_until(lambda: len(processed) >= 50)
    await consumer.stop()  # killed mid-batch: some outputs published, their acks not sent
    await elog.consume("crashy", ["catalyst.session.scan_requested"], slow, batch=16, ack_wait=1.0)
    await wait_until(lambda: set(processed) == set(range(n)))
    await asyncio.sleep(0.2)
    echoes = [s async for s in elog.read(["catalyst.session.start_requested"])]
    assert sorted(e.event.causation_id for e in echoes) == sorted(
        scan(i).event_id for i in range(n)
    )


async def test_nats_restart_mid_stream_loses_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedNats(store_dir=tmp_path / "nats").start()
    try:
        elog = await EventLog.connect(server.url)
        seen: set[int] = set()

        async def on_event(ev: Event) -> list[Event]:
            seen.add(ev.scan_number)  # type: ignore[attr-defined]
            return []

        # Acks lost in the restart are redelivered after ack_wait; keep the test short.
        await elog.consume("restart", ["catalyst.session.scan_requested"], on_event, ack_wait=1.0)

        async def producer() -> None:
            for i in range(300):
                await elog.publish(scan(i))
                await asyncio.sleep(0.002)

        task = asyncio.create_task(producer())
        await wait_until(lambda: len(seen) >= 60)
        await asyncio.to_thread(server.restart)
        await task
        await wait_until(lambda: len(seen) == 300, timeout=30)
        assert await elog.last_seq() == 300  # nothing stored twice
        await elog.close()
    finally:
        server.cleanup()


async def test_recorder_computing_ahead_of_the_server_keeps_the_dispatch_order(
        elog: EventLog) -> None:
    """Chunks of both streams, added faster than they are acked (no yield between adds):
    the log holds every event once, each stream in dispatch order."""
    from adapters.nats.log_source import NatsSource
    from adapters.runtime.pipeline import Recorder

    recorder = Recorder(elog, chunk=50)
    events: list[Event] = []
    for i in range(1200):
        ev = bar_event("AAPL", i, "10", "11", "9", "10") if i % 3 else scan(i)
        events.append(ev)
        recorder.add(ev)
        await recorder.maybe_flush()
    await recorder.flush()
    assert recorder.recorded == len(events)
    got = []
    async for batch in (await NatsSource(elog).open()).batches():
        got.extend(batch)
    assert [e.order for e in got] == list(range(1, len(events) + 1))
    assert [e.event.event_id for e in got] == [e.event_id for e in events]


async def test_a_stray_message_on_a_replay_inbox_fails_the_read_not_the_connection(
        elog: EventLog) -> None:
    from adapters.nats.log_source import LogReadError, NatsSource

    await elog.publish_many([scan(i) for i in range(5000)])
    source = await NatsSource(elog, streams=("record",)).open()
    feed = next(iter(source._feeds.values()))
    await elog.nc.publish(feed._inbox, b"junk", headers={"X": "y"})  # no JetStream reply
    with pytest.raises(LogReadError, match="unexpected message"):
        async for _ in source.batches():
            pass
    assert elog.nc.is_connected
    assert await elog.last_seq() == 5000


async def test_a_read_missing_messages_fails_after_the_stall_timeout(
        elog: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages counted when the read began but gone before delivery (deleted, or aged out
    of the market data stream): every expired pull (408, each 5 s) wakes the reader to ask
    again, and the stall timeout still fires instead of the read waiting forever."""
    from adapters.nats.log_source import LogReadError, NatsSource, _PullFeed

    await elog.publish_many([bar_event("AAPL", i, "10", "11", "9", "10") for i in range(100)])
    top_up = _PullFeed._top_up

    async def not_yet(self: _PullFeed) -> None:
        return None

    monkeypatch.setattr(_PullFeed, "_top_up", not_yet)  # count them, ask for none yet
    source = await NatsSource(elog, streams=("market_data",)).open()
    monkeypatch.setattr(_PullFeed, "_top_up", top_up)
    for seq in (10, 50, 90):
        await elog.js.delete_msg(elog.names.market_data, seq)
    feed = next(iter(source._feeds.values()))
    assert feed.total == 100

    async def read() -> None:
        while await feed.take(timeout=7):
            pass

    try:
        with pytest.raises(LogReadError, match="no message for 7s after 97 of 100"):
            await asyncio.wait_for(read(), 30)
    finally:
        await source.close()


async def test_a_hand_published_event_prints_and_exports_as_one_compact_line(
        elog: EventLog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stored bytes are printed verbatim only when they are one line of a typed event; an
    event published by hand (pretty-printed, no type header) is re-serialised."""
    import io

    from adapters.audit.replay import export, print_entries
    from adapters.audit.window import Window
    from adapters.nats.log_file import FileSource
    from adapters.nats.log_source import NatsSource

    ev = start_requested("by-hand")
    pretty = json.dumps(json.loads(ev.to_json()), indent=2).encode() + b"\n"
    await elog.publish_raw(ev.subject, pretty)
    normal = start_requested("normal")
    await elog.publish(normal)

    out = io.StringIO()
    assert await print_entries(await NatsSource(elog).open(), Window(), None, True,
                               out=out) == 2
    assert out.getvalue().splitlines() == [ev.to_json().decode(), normal.to_json().decode()]
    path = tmp_path / "day.jsonl"
    await export(await NatsSource(elog).open(), path, Window())
    got = [e.event async for batch in FileSource(path).batches() for e in batch]
    assert got == [ev, normal]
