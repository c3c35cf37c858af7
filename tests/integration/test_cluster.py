"""The event log on a real 3-node JetStream cluster (adapters.nats.local_cluster): replicas,
several servers, and riding out the loss of a node.

Tests that kill a node start it again before they end, so the next one finds three."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.nats.connection import open_event_log
from adapters.nats.embedded import EmbeddedNats, free_port
from adapters.nats.event_log import EventLog, NatsConnectError, NatsUnavailableError, StreamNames
from adapters.nats.local_cluster import LocalCluster
from config.loader import load_settings
from config.settings import Settings
from domain.events import Event, ScanRequested
from tests.builders import T0, make

pytestmark = pytest.mark.integration


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.02)


def scan(tag: str, n: int) -> ScanRequested:
    return make(ScanRequested, f"{tag}:scan:{n}", T0, session_id="s1", scan_number=n)


def own_log() -> dict[str, Any]:
    """Streams and subjects of this test's own (as a simulated run has on a shared server)."""
    tag = uuid4().hex[:8]
    return {"names": StreamNames(f"REC_{tag}", f"MD_{tag}"), "subject_prefix": f"t{tag}."}


def settings_for(**nats: Any) -> Settings:
    return Settings.model_validate({"trading": {"nats": nats}})


async def replicas(log: EventLog, stream: str) -> int:
    return (await log.js.stream_info(stream)).config.num_replicas


async def test_streams_are_created_at_three_replicas_and_a_start_at_one_does_not_lower_them(
        nats_cluster: LocalCluster, caplog: pytest.LogCaptureFixture) -> None:
    on_cluster = settings_for(servers=nats_cluster.urls.split(","), replicas=3)
    async with open_event_log(on_cluster) as log:
        assert await replicas(log, "CATALYST") == 3
        assert await replicas(log, "CATALYST_MD") == 3
        assert not log.notes

    # A config written for one server (replicas: 1, the default) pointed at the cluster.
    single = load_settings(env={"CATALYST_NATS_URL": nats_cluster.urls}).settings
    assert single.trading.nats.replicas == 1
    with caplog.at_level(logging.WARNING, logger="catalyst.event_log"):
        async with open_event_log(single) as log:
            assert await replicas(log, "CATALYST") == 3
            assert await replicas(log, "CATALYST_MD") == 3
            notes = log.notes

    assert any("stream CATALYST keeps its 3 replicas: nats.replicas is 1, and a start never "
               "lowers" in n for n in notes), notes
    assert any("keeps its 3 replicas" in r.getMessage() for r in caplog.records)


async def test_a_higher_configured_value_scales_an_existing_stream_up(
        nats_cluster: LocalCluster) -> None:
    mine = own_log()
    log = await EventLog.connect(nats_cluster.urls, replicas=1, **mine)
    assert await replicas(log, mine["names"].record) == 1
    await log.close()

    log = await EventLog.connect(nats_cluster.urls, replicas=3, **mine)
    try:
        assert await replicas(log, mine["names"].record) == 3
        assert await replicas(log, mine["names"].market_data) == 3
    finally:
        await log.close()


async def test_comma_separated_and_listed_servers_connect_past_a_dead_one(
        nats_cluster: LocalCluster) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    from_env = load_settings(env={"CATALYST_NATS_URL": f"{dead}, {nats_cluster.urls}"})
    from_list = settings_for(servers=[dead, *nats_cluster.urls.split(",")], replicas=3)

    for settings in (from_env.settings, from_list):
        assert len(settings.trading.nats.server_urls) == 4
        async with open_event_log(settings) as log:
            assert log.nc.is_connected
            assert await log.publish(scan(uuid4().hex, 1)) > 0


async def test_replicas_above_one_on_a_single_server_is_a_clear_error(
        nats_server: EmbeddedNats) -> None:
    with pytest.raises(NatsConnectError, match="nats.replicas is 3 but the NATS server is "
                       "not a cluster"):
        await EventLog.connect(nats_server.url, replicas=3, **own_log())


async def test_publishing_and_a_consumer_ride_out_the_loss_of_the_record_stream_leader(
        nats_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    mine = own_log()
    tag = mine["subject_prefix"]
    log = await EventLog.connect(nats_cluster.urls, replicas=3, retry_timeout=60, **mine)
    seen: dict[UUID, float] = {}  # event id -> when the consumer first had it

    async def on_event(ev: Event) -> list[Event]:
        seen.setdefault(ev.event_id, time.monotonic())
        return []

    await log.consume("follower", ["catalyst.session.>"], on_event)
    published: list[UUID] = []
    acked_at: list[float] = []
    stop = asyncio.Event()

    async def publish_steadily() -> None:
        n = 0
        while not stop.is_set():
            ev = scan(tag, n)
            await log.publish(ev)
            published.append(ev.event_id)
            acked_at.append(time.monotonic())
            n += 1

    publisher = asyncio.create_task(publish_steadily())
    victim = -1
    try:
        await wait_until(lambda: len(published) >= 20 and len(seen) >= 20, 30,
                         "20 events published and consumed before the kill")
        leader = (await log.js.stream_info(mine["names"].record)).cluster.leader
        victim = int(leader.removeprefix("n")) - 1
        killed_at = time.monotonic()
        nats_cluster.kill(victim)
        before = len(published)
        await wait_until(lambda: len(published) >= before + 50 or publisher.done(), 45,
                         "50 publishes acked after the leader was killed")
        stop.set()
        await publisher  # raises if publishing gave up
        await wait_until(lambda: seen.keys() >= set(published), 30,
                         "the consumer has every event published, the ones after the kill too")
        first_new = next(e for e, t in zip(published, acked_at, strict=True) if t > killed_at)
        resumed = seen[first_new] - killed_at
        stall = max(b - a for a, b in zip(acked_at, acked_at[1:], strict=False))
        new_leader = (await log.js.stream_info(mine["names"].record)).cluster.leader
    finally:
        stop.set()
        if not publisher.done():
            publisher.cancel()
        await log.close()
        if victim >= 0:
            nats_cluster.restart(victim)

    assert new_leader != leader
    with capsys.disabled():
        print(f"\n[cluster] kill -9 of the record stream leader {leader} (new: {new_leader}): "
              f"longest publish stall {stall:.2f}s, consumer resumed {resumed:.2f}s after "
              f"the kill, {len(published)} events, all consumed")
    assert stall < 30 and resumed < 30


async def test_a_restart_right_after_a_node_loss_succeeds(
        nats_cluster: LocalCluster, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    mine = own_log()
    seen: list[Event] = []

    async def on_event(ev: Event) -> list[Event]:
        seen.append(ev)
        return []

    first = await EventLog.connect(nats_cluster.urls, replicas=3, **mine)
    consumer = await first.consume("handler", ["catalyst.session.>"], on_event)
    leader = (await consumer.info()).cluster.leader
    await first.close()

    victim = int(leader.removeprefix("n")) - 1
    nats_cluster.kill(victim)  # the node leading the handler's consumer
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="catalyst.event_log"):
            # What a handler service does on start: streams, then its durable consumer.
            second = await EventLog.connect(nats_cluster.urls, replicas=3, retry_timeout=60,
                                            **mine)
            try:
                await second.consume("handler", ["catalyst.session.>"], on_event)
                took = time.monotonic() - started
                await second.publish(scan(mine["subject_prefix"], 1))
                await wait_until(lambda: len(seen) == 1, 30, "the restarted consumer delivers")
            finally:
                await second.close()
    finally:
        nats_cluster.restart(victim)

    retries = sum("retrying" in r.getMessage() for r in caplog.records)
    with capsys.disabled():
        print(f"\n[cluster] restart right after killing consumer leader {leader}: started in "
              f"{took:.2f}s after {retries} retried call(s)")


async def test_retrying_gives_up_after_the_configured_time_with_a_clear_error(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    server = EmbeddedNats(store_dir=tmp_path_factory.mktemp("gone")).start()
    mine = own_log()
    log = await EventLog.connect(server.url, retry_timeout=1.0, **mine)
    server.kill()  # and it does not come back
    started = time.monotonic()
    try:
        with pytest.raises(NatsUnavailableError, match=rf"NATS: stream info "
                           rf"{mine['names'].record} still failing after 1s .*is a majority "
                           "of the cluster's nodes up\\? \\(nats.retry_timeout_seconds"):
            await log.last_seq()
        gave_up = time.monotonic() - started
    finally:
        await log.nc.close()
        server.cleanup()

    assert gave_up < 15  # one attempt's own timeout at most past the second allowed
