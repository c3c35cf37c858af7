"""One active instance per role (adapters.nats.lease) on a real nats-server and a real 3-node
cluster: one holder among contenders, takeover when the holder freezes, the stale holder
fenced off by the server, prompt handover on release, and a lease that outlives a node.

Each test has its own streams and subjects (as a simulated run on a shared server has), so
its own lease bucket. TTLs are short; every wait is generous, nothing asserts speed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import nats.js.errors
import pytest

from adapters.nats.embedded import EmbeddedNats
from adapters.nats.event_log import EventLog, StreamNames
from adapters.nats.fence import claim_fence
from adapters.nats.lease import (
    FencedOffError,
    FencedWriter,
    LeaseLostError,
    LeaseTimeoutError,
    RoleLease,
    lease_bucket,
)
from adapters.nats.local_cluster import LocalCluster
from domain.events import RoleClaimed, ScanRequested
from tests.builders import T0, bar_event, make
from tests.integration.test_cluster import wait_until

pytestmark = pytest.mark.integration

TTL = 1.5


def own_names() -> dict[str, Any]:
    tag = uuid4().hex[:8]
    return {"names": StreamNames(f"REC_{tag}", f"MD_{tag}"), "subject_prefix": f"t{tag}."}


@pytest.fixture
async def logs(nats_server: EmbeddedNats) -> AsyncIterator[Callable[[], Any]]:
    """Connections to one test's own log: one per instance, as separate processes have."""
    mine = own_names()
    opened: list[EventLog] = []

    async def connect() -> EventLog:
        log = await EventLog.connect(nats_server.url, retry_timeout=30, **mine)
        opened.append(log)
        return log

    yield connect
    for log in opened:
        await log.close()


def decision(n: int) -> ScanRequested:
    return make(ScanRequested, f"{uuid4().hex}:scan:{n}", T0, session_id="s1", scan_number=n)


def freeze(lease: RoleLease) -> None:
    """What a paused process looks like from outside: it stops renewing, and nothing in it
    runs to notice the TTL passing either."""
    assert lease._renewer is not None and lease._expiry is not None
    lease._renewer.cancel()
    lease._expiry.cancel()


async def test_of_two_contenders_exactly_one_holds_the_role(logs: Any) -> None:
    a = RoleLease(await logs(), "risk", "a", ttl=TTL)
    b = RoleLease(await logs(), "risk", "b", ttl=TTL)
    try:
        assert await a.holder() is None  # a read: it does not create the bucket
        with pytest.raises(nats.js.errors.NotFoundError):
            await a.log.js.stream_info(f"KV_{lease_bucket(a.log.names)}")
        won = await asyncio.gather(a.try_acquire(), b.try_acquire())
        assert sorted(won) == [False, True]
        holder, other = (a, b) if won[0] else (b, a)
        assert holder.held.is_set() and not other.held.is_set()
        assert (await other.holder()).instance == holder.instance  # type: ignore[union-attr]

        # The other waits as a standby, for as long as the holder keeps renewing (past
        # several TTLs), then gives up naming who holds the role.
        with pytest.raises(LeaseTimeoutError, match=rf"role risk: lease not acquired within "
                           rf"4.0s; held by instance {holder.instance}"):
            await other.acquire(timeout=4.0)
        assert holder.held.is_set() and not holder.lost.is_set()
    finally:
        await a.release()
        await b.release()


async def test_a_frozen_holder_is_replaced_and_its_late_writes_are_refused(logs: Any) -> None:
    log_a, log_b = await logs(), await logs()
    a = RoleLease(log_a, "execution", "a", ttl=TTL)
    b = RoleLease(log_b, "execution", "b", ttl=TTL)
    token_a = await a.acquire(timeout=10)
    writer_a = a.writer()
    before = decision(1)
    seq_before = await writer_a.publish(before)
    assert seq_before > token_a  # a decides while it holds the role

    standby = asyncio.create_task(b.acquire())
    await asyncio.sleep(TTL)  # the standby polls while the holder renews
    assert not standby.done() and a.held.is_set()

    freeze(a)
    token_b = await asyncio.wait_for(standby, 20)  # the key lapses; the standby takes it
    assert token_b > token_a  # fencing tokens grow across holders
    assert (await b.holder()).instance == "b"  # type: ignore[union-attr]

    # The frozen process wakes up believing it still holds the role. Its lease object would
    # stop it locally (its TTL has passed), so write as a process that has not looked:
    # the server itself refuses.
    stale = FencedWriter(log_a, "execution", token_a)
    late = decision(2)
    with pytest.raises(FencedOffError, match=rf"role execution: fenced off: a newer holder "
                       rf"claimed role execution after fencing token {token_a}; the log "
                       rf"refused ScanRequested {late.event_id}"):
        await stale.publish(late)
    with pytest.raises(LeaseLostError, match="TTL .* ran out"):
        await writer_a.publish(late)  # through its lease: refused before the server is asked
    # A retry of a write that landed before the takeover (its ack lost) is refused too: the
    # server checks the fence before duplicates. It stays stored once, before b's claim.
    with pytest.raises(FencedOffError):
        await stale.publish(before)

    assert a.lost.is_set() and not a.held.is_set()

    # The new holder's decisions land; the log has a's first decision and not its late one.
    await b.writer().publish(decision(3))
    stored = [e.event.event_id async for e in log_b.read(["catalyst.session.>"])]
    assert before.event_id in stored and late.event_id not in stored
    assert len(stored) == 2
    # The claims are events in the log: who took the role, when, at which token.
    claims = [e async for e in log_b.read(["catalyst.ops.>"])]
    assert [(c.seq, c.subject, c.event.instance) for c in claims] == [  # type: ignore[attr-defined]
        (token_a, "catalyst.ops.role_claimed.execution", "a"),
        (token_b, "catalyst.ops.role_claimed.execution", "b")]
    assert all(isinstance(c.event, RoleClaimed) for c in claims)
    await b.release()


async def test_a_holder_that_renews_into_a_taken_key_reports_lost(logs: Any) -> None:
    a = RoleLease(await logs(), "risk", "a", ttl=TTL)
    b = RoleLease(await logs(), "risk", "b", ttl=TTL, poll_interval=0.05)
    lost: list[str] = []
    a.on_lost(lost.append)
    await a.acquire(timeout=10)
    freeze(a)
    await b.acquire(timeout=20)
    with pytest.raises(LeaseLostError, match="renewal refused: the key's revision is no "
                       "longer"):
        await a.renew()
    assert a.lost.is_set() and not a.held.is_set()
    assert len(lost) == 1 and "revision" in lost[0]
    with pytest.raises(LeaseLostError, match="instance a does not hold the lease"):
        a.check()
    assert b.held.is_set() and not b.lost.is_set()
    await b.release()


async def test_a_holder_stalled_before_fencing_cannot_fence_out_its_successor(
        logs: Any) -> None:
    # a took the key, then paused before publishing its claim; the key lapsed and b took
    # the role and claimed it. When a wakes up, its claim would fence b out.
    a = RoleLease(await logs(), "risk", "a", ttl=TTL)
    b = RoleLease(await logs(), "risk", "b", ttl=TTL, poll_interval=0.05)
    await a.acquire(timeout=10)
    stalled_at = (a._epoch, a._acquired_rev)
    freeze(a)
    token_b = await b.acquire(timeout=20)
    with pytest.raises(LeaseLostError, match=rf"role risk: instance b claimed it at sequence "
                       rf"{token_b} from a later acquisition \(revision \d+\) than ours "
                       rf"\({stalled_at[1]}\)"):
        await claim_fence(a.log, "risk", "a", stalled_at)
    assert await b.writer().publish(decision(1)) > token_b  # b is still the one deciding
    # A retried claim of b's (its ack lost) finds b's claim rather than writing twice.
    assert await claim_fence(b.log, "risk", "b", (b._epoch, b._acquired_rev)) == token_b
    await b.release()


async def test_release_hands_the_role_over_without_waiting_for_the_ttl(logs: Any) -> None:
    # A TTL far longer than the wait allowed: only the release can explain the handover.
    a = RoleLease(await logs(), "alerts", "a", ttl=60, poll_interval=0.1)
    b = RoleLease(await logs(), "alerts", "b", ttl=60, poll_interval=0.1)
    token_a = await a.acquire(timeout=10)
    standby = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.3)
    assert not standby.done()
    await a.release()
    assert not a.held.is_set() and not a.lost.is_set()  # giving it up is not losing it
    token_b = await asyncio.wait_for(standby, 15)
    assert token_b > token_a

    # A decision's events are stored whole or refused whole (one atomic batch).
    stale = [decision(n) for n in range(4)]
    with pytest.raises(FencedOffError, match=r"refused ScanRequested .* and 1 more"):
        await FencedWriter(a.log, "alerts", token_a).publish_many(stale)
    fresh = [decision(n) for n in range(4)]
    seqs = await b.writer().publish_many(fresh)
    assert seqs == list(range(seqs[0], seqs[0] + 4))
    stored = {e.event.event_id async for e in b.log.read(["catalyst.session.>"])}
    assert stored == {e.event_id for e in fresh}
    with pytest.raises(ValueError, match="a fenced write goes to the record stream"):
        await b.writer().publish(bar_event("AAPL", 0, "1", "1", "1", "1"))
    await b.release()
    assert await b.holder() is None


HOLDER_PROCESS = """
import asyncio, sys
from adapters.nats.event_log import EventLog, StreamNames
from adapters.nats.lease import RoleLease

async def main(url, record, md, prefix):
    log = await EventLog.connect(url, names=StreamNames(record, md), subject_prefix=prefix)
    lease = RoleLease(log, "execution", "process-a", ttl=float(sys.argv[5]))
    print("held", await lease.acquire(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:5]))
"""


async def test_a_standby_takes_the_role_from_a_process_killed_with_sigkill(
        nats_server: EmbeddedNats) -> None:
    mine = own_names()
    names, prefix = mine["names"], mine["subject_prefix"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER_PROCESS, nats_server.url, names.record, names.market_data,
        prefix, str(TTL), stdout=asyncio.subprocess.PIPE)
    log = await EventLog.connect(nats_server.url, retry_timeout=30, **mine)
    standby = RoleLease(log, "execution", "process-b", ttl=TTL)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"held "), line
        token_a = int(line.split()[1])
        assert (await standby.holder()).instance == "process-a"  # type: ignore[union-attr]
        proc.kill()  # kill -9: no release, no goodbye
        await proc.wait()
        token_b = await standby.acquire(timeout=30)
        assert token_b > token_a
        assert (await standby.holder()).instance == "process-b"  # type: ignore[union-attr]
        with pytest.raises(FencedOffError):
            await FencedWriter(log, "execution", token_a).publish(decision(1))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await standby.release()
        await log.close()


async def test_a_holder_cut_off_from_the_server_knows_when_its_ttl_runs_out(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    server = EmbeddedNats(store_dir=tmp_path_factory.mktemp("cutoff")).start()
    log = await EventLog.connect(server.url, retry_timeout=30)  # the default names
    lease = RoleLease(log, "risk", "a", ttl=TTL)
    try:
        await lease.acquire(timeout=10)
        # The live subjects, no run prefix: the fence works on the default log too.
        assert await lease.writer().publish(decision(1)) > (lease.token or 0)
        server.kill()  # and it does not come back
        await asyncio.wait_for(lease.lost.wait(), TTL * 10)
        assert "TTL" in lease.lost_reason and not lease.held.is_set()
    finally:
        await lease.release()
        with contextlib.suppress(OSError):  # the socket to the killed server is gone
            await log.nc.close()
        server.cleanup()


async def test_on_a_cluster_the_lease_has_three_replicas_and_outlives_a_node(
        nats_cluster: LocalCluster) -> None:
    mine = own_names()
    log = await EventLog.connect(nats_cluster.urls, replicas=3, retry_timeout=60, **mine)
    other = await EventLog.connect(nats_cluster.urls, replicas=3, retry_timeout=60, **mine)
    single = await EventLog.connect(nats_cluster.urls, replicas=1, retry_timeout=60, **mine)
    stream = f"KV_{lease_bucket(mine['names'])}"
    holder = RoleLease(log, "execution", "a", ttl=TTL)
    standby = RoleLease(other, "execution", "b", ttl=TTL)
    victim = -1
    try:
        await holder.acquire(timeout=30)
        info = await log.js.stream_info(stream)
        assert info.config.num_replicas == 3

        # A start configured for one node never lowers the bucket's replicas.
        await RoleLease(single, "execution", "c", ttl=TTL).try_acquire()
        assert (await log.js.stream_info(stream)).config.num_replicas == 3
        assert any(f"lease bucket {stream} keeps its 3 replicas" in n for n in single.notes)

        waiting = asyncio.create_task(standby.acquire())
        # kill -9 a node that follows the bucket: the holder keeps renewing straight through.
        follower = next(r.name for r in info.cluster.replicas)
        victim = int(follower.removeprefix("n")) - 1
        nats_cluster.kill(victim)
        rev = holder.revision or 0
        await wait_until(lambda: (holder.revision or 0) >= rev + 3 or holder.lost.is_set(),
                         30, "three renewals after a follower was killed")
        assert holder.held.is_set() and not holder.lost.is_set(), holder.lost_reason
        assert not waiting.done()
        nats_cluster.restart(victim)
        victim = -1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    finally:
        await holder.release()
        await standby.release()
        for each in (log, other, single):
            await each.close()
        if victim >= 0:
            nats_cluster.restart(victim)


async def test_on_a_cluster_a_lease_outlives_its_bucket_leader(
        nats_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    # A TTL longer than a Raft election (4-9 s here): the lease rides the election out
    # rather than lapsing in it (docs/services.md on choosing the TTL).
    mine = own_names()
    log = await EventLog.connect(nats_cluster.urls, replicas=3, retry_timeout=60, **mine)
    stream = f"KV_{lease_bucket(mine['names'])}"
    holder = RoleLease(log, "risk", "a", ttl=30)
    victim = -1
    try:
        token = await holder.acquire(timeout=30)
        leader = (await log.js.stream_info(stream)).cluster.leader
        victim = int(leader.removeprefix("n")) - 1
        killed = time.monotonic()
        nats_cluster.kill(victim)
        rev = holder.revision or 0
        await holder.renew()  # waits out the election
        took = time.monotonic() - killed
        new_leader = (await log.js.stream_info(stream)).cluster.leader
        assert new_leader != leader
        assert (holder.revision or 0) > rev and holder.token == token
        assert holder.held.is_set() and not holder.lost.is_set()
        assert (await holder.holder()).instance == "a"  # type: ignore[union-attr]
        assert await holder.writer().publish(decision(1)) > token
    finally:
        await holder.release()
        await log.close()
        if victim >= 0:
            nats_cluster.restart(victim)
    with capsys.disabled():
        print(f"\n[lease] kill -9 of the lease bucket's leader {leader}: renewed on "
              f"{new_leader} {took:.2f}s later; same holder, same fencing token")
