"""One active instance per stateful role: a lease in a replicated JetStream key-value bucket,
and a fence in the event log that refuses a stale holder's writes.

- The lease. One key per role (`risk`, `execution`, ...) in the bucket `<record stream>_LEASES`
  (so a simulated run's own streams get their own bucket), history 1, max_age = the TTL.
  Acquiring is `kv.create` (refused while a live holder's key exists); renewing is
  `kv.update(last=revision)` every TTL/3; a key not renewed for a TTL is removed by the server,
  and a standby polling `kv.create` takes the role. The holder counts its TTL from the moment
  it *sent* its last successful renewal: the server stamped the key later than that, so it
  cannot expire the key before the holder's own deadline. Past that deadline, or as soon as a
  renewal finds the revision moved, the holder's `lost` event is set and it must stop.
- The fence (adapters/nats/fence.py). Time cannot make a paused process stop writing, so
  on taking the role the new holder publishes a `RoleClaimed` on the role's fence subject
  in the record stream before `acquire` returns, and `writer()` publishes its decisions so
  that the server refuses them once a newer holder's claim is there.

See docs/services.md for what this guarantees and what it does not.

Past ~400 lines: `RoleLease` is one state machine (standby, holding, held, lost) whose
transitions share the deadline, the renewal task and the expiry timer; split, the rule
that every path out of "held" sets `lost` exactly once would live in several places.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import uuid4

import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from adapters.nats.event_log import (
    EventLog,
    NatsConnectError,
    NatsUnavailableError,
    StreamNames,
    with_retry,
)
from adapters.nats.fence import FencedOffError, FencedWriter, LeaseLostError, claim_fence
from domain.errors import CatalystError

log = logging.getLogger("catalyst.lease")

__all__ = ["DEFAULT_TTL", "FencedOffError", "FencedWriter", "Holder", "LeaseLostError",
           "LeaseTimeoutError", "RoleLease", "ensure_lease_bucket", "lease_bucket"]

DEFAULT_TTL = 3.0  # failover within ~TTL after a holder dies; see docs/services.md
# The holder gives up this fraction of the TTL early: the server's expiry timer and our
# monotonic clock tick at slightly different rates, and losing a little early is harmless.
EARLY = 0.1
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # a KV key and a subject token alike


class LeaseTimeoutError(CatalystError):
    """The lease was not acquired within the time asked for."""


def lease_bucket(names: StreamNames) -> str:
    return f"{names.record}_LEASES"


def _wrong_last(e: BaseException) -> bool:
    return isinstance(e, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(e, nats.js.errors.APIError) and getattr(e, "err_code", None) in (10071, 10164))


async def ensure_lease_bucket(log_: EventLog, ttl: float) -> KeyValue:
    """The lease bucket of `log_`'s streams, created at `log_.replicas` if it is missing.

    Like the streams: replicas are never lowered by a start (a single-node config pointed at
    the cluster keeps 3), and a higher configured value scales the bucket up. The TTL is the
    bucket's max_age, so the configured TTL replaces a different one."""
    bucket = lease_bucket(log_.names)
    stream = f"KV_{bucket}"
    js = log_.js
    try:
        info = await log_.api(f"stream info {stream}", lambda: js.stream_info(stream))
    except nats.js.errors.NotFoundError:
        info = None
    if info is None:
        cfg = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, replicas=log_.replicas,
                             storage=StorageType.FILE,
                             # Reads through the stream leader: a follower's direct get may
                             # be behind, and a lease read must not be.
                             direct=False,
                             description="catalyst role leases (adapters/nats/lease.py)")
        try:
            await log_.api(f"creating lease bucket {bucket}",
                           lambda: js.create_key_value(config=cfg))
        except nats.js.errors.APIError as e:
            if e.err_code == 10074:
                raise NatsConnectError(
                    f"nats.replicas is {log_.replicas} but the NATS server is not a cluster: "
                    "set nats.replicas: 1 for a single server") from None
            if e.err_code != 10058:
                raise
            # 10058: another contender created it first, with another TTL or replicas.
            info = await log_.api(f"stream info {stream}", lambda: js.stream_info(stream))
    if info is not None:
        await _update_bucket(log_, info.config, ttl)
    return await log_.api(f"binding lease bucket {bucket}", lambda: js.key_value(bucket))


async def _update_bucket(log_: EventLog, cfg: StreamConfig, ttl: float) -> None:
    have = cfg.num_replicas or 1
    changed = False
    if have < log_.replicas:
        log.warning("lease bucket %s: scaling up from %d to %d replicas (nats.replicas)",
                    cfg.name, have, log_.replicas)
        cfg.num_replicas, changed = log_.replicas, True
    elif have > log_.replicas:
        note = (f"lease bucket {cfg.name} keeps its {have} replicas: nats.replicas is "
                f"{log_.replicas}, and a start never lowers them")
        log.warning("%s", note)
        log_.notes.append(note)
    if cfg.max_age is None or abs(cfg.max_age - ttl) > 1e-3:
        log.warning("lease bucket %s: TTL %.3gs -> %.3gs (an instance still running with the "
                    "old TTL may hand its role over once)", cfg.name, cfg.max_age or 0, ttl)
        cfg.max_age = ttl
        # The server refuses a duplicate window longer than the max age.
        cfg.duplicate_window = min(cfg.duplicate_window or ttl, ttl)
        changed = True
    if changed:
        await log_.api(f"updating lease bucket {cfg.name}", lambda: log_.js.update_stream(cfg))


@dataclass(frozen=True)
class Holder:
    """Who holds a role, as its key says."""

    role: str
    instance: str
    revision: int


class RoleLease:
    """The lease of one role for one instance. See the module docstring.

        lease = RoleLease(event_log, "risk", instance_id, ttl=3.0)
        token = await lease.acquire()           # waits while another instance holds it
        writer = lease.writer()                 # publish the role's decisions through it
        ... rebuild state from the log (everything before `token` is in it), then decide,
            and stop as soon as `lease.lost` is set ...
        await lease.release()                   # a standby takes over within one poll

    `token` is the sequence of this holder's RoleClaimed in the record stream: it grows
    across holders, and it is what the server checks a fenced write against."""

    def __init__(self, event_log: EventLog, role: str, instance: str,
                 ttl: float = DEFAULT_TTL, poll_interval: float | None = None,
                 on_lost: Callable[[str], object] | None = None) -> None:
        if not _NAME.match(role):
            raise ValueError(f"role {role!r}: letters, digits, '_' and '-' only (it names a "
                             "key and a subject)")
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, not {ttl}")
        self.log = event_log
        self.role = role
        self.instance = instance
        self.ttl = ttl
        self.renew_interval = ttl / 3
        self.poll_interval = poll_interval if poll_interval is not None else max(0.05, ttl / 6)
        self.held = asyncio.Event()  # set while this instance may decide for the role
        self.lost = asyncio.Event()  # set when it had the role and lost it (not on release)
        self.lost_reason = ""
        self.token: int | None = None  # its RoleClaimed's sequence (the fencing token)
        self.revision: int | None = None  # the key's revision after the last renewal
        self._on_lost = [on_lost] if on_lost else []
        self._kv: KeyValue | None = None
        self._epoch = 0.0  # the bucket's creation time: revisions restart with a new bucket
        self._claim = ""  # unique per acquisition: tells our own writes from others'
        self._acquired_rev = 0
        self._holding = False  # the key is ours (held is set once the fence is written too)
        self._deadline = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._renewing = asyncio.Lock()

    # --- public ----------------------------------------------------------------------------

    def on_lost(self, callback: Callable[[str], object]) -> None:
        """Call `callback(reason)` when the lease is lost (in the event loop, at once)."""
        self._on_lost.append(callback)

    async def acquire(self, timeout: float | None = None) -> int:
        """Wait until this instance holds the role (polling while another does); returns the
        fencing token. LeaseTimeoutError after `timeout` seconds, naming the holder."""
        if self.held.is_set():
            assert self.token is not None
            return self.token
        try:
            async with asyncio.timeout(timeout):
                while not await self.try_acquire():
                    await asyncio.sleep(self.poll_interval)
        except TimeoutError:
            holder = await self.holder()
            who = f"instance {holder.instance}" if holder else "nobody (it is lapsing)"
            raise LeaseTimeoutError(f"role {self.role}: lease not acquired within "
                                    f"{timeout:.1f}s; held by {who}") from None
        assert self.token is not None
        return self.token

    async def try_acquire(self) -> bool:
        """Take the role if nobody holds it (one attempt): True when held."""
        if self.held.is_set():
            return True
        kv = await self._bucket()
        claim = uuid4().hex
        value = self._value(claim)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            rev = await self._cas(f"acquiring lease {self.role}",
                                  lambda: kv.create(self.role, value), claim,
                                  self.log.retry_timeout)
        except Exception as e:
            if _wrong_last(e):
                return False  # a live holder's key is there
            if isinstance(e, nats.js.errors.KeyNotFoundError):
                # nats-py's create looks the key up after a refused write, to retry over a
                # delete marker; a key expiring (its holder's TTL) in between lands here.
                return False  # the next poll tries again
            raise
        self._claim, self._acquired_rev, self.revision = claim, rev, rev
        self._holding, self.lost_reason = True, ""
        self.lost.clear()
        self._extend(sent)
        self._renewer = asyncio.create_task(self._renew_loop(),
                                            name=f"lease-renew:{self.role}")
        try:
            self.token = await claim_fence(self.log, self.role, self.instance,
                                           (self._epoch, self._acquired_rev))
        except BaseException as e:
            # Never held: a stale acquisition (LeaseLostError) or a failure is no loss.
            await self._stop_renewing()
            self._holding = False
            if isinstance(e, LeaseLostError):
                log.info("lease %s: %s; standing by", self.role, e)
                return False
            raise
        if not self._holding:  # the TTL ran out while the claim was being written
            return False
        self.held.set()
        log.info("lease %s: held by %s (revision %d, fencing token %d)", self.role,
                 self.instance, rev, self.token)
        return True

    async def renew(self) -> None:
        """Renew now (the lease does this itself every TTL/3). LeaseLostError if the key's
        revision moved (it lapsed, or another instance holds it) or the TTL ran out."""
        if not self._holding:
            raise LeaseLostError(f"role {self.role}: instance {self.instance} does not hold "
                                 f"the lease ({self.lost_reason or 'never acquired'})")
        async with self._renewing:  # one renewal at a time: each needs the last revision
            await self._renew()

    async def _renew(self) -> None:
        if not self._holding:
            raise LeaseLostError(f"role {self.role}: {self.lost_reason}")
        kv = await self._bucket()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        last, claim = self.revision, self._claim
        value = self._value(claim)
        left = max(0.01, self._deadline - sent)
        try:
            rev = await asyncio.wait_for(self._cas(
                f"renewing lease {self.role}", lambda: kv.update(self.role, value, last=last),
                claim, left), left)
        except Exception as e:
            if _wrong_last(e):
                self._lose(f"renewal refused: the key's revision is no longer {last} (the "
                           "lease lapsed, or another instance took it)")
            elif isinstance(e, (TimeoutError, NatsUnavailableError)) and \
                    loop.time() >= self._deadline:
                self._lose(f"could not renew within the TTL ({self.ttl:.3g}s): {e!r}")
            if not self._holding:
                raise LeaseLostError(f"role {self.role}: {self.lost_reason}") from None
            raise
        if not self._holding or claim != self._claim:
            # The deadline passed while this renewal was in flight and the role was given
            # up: hand the key back rather than keep standbys waiting a further TTL.
            with contextlib.suppress(Exception):
                await kv.delete(self.role, last=rev)
            raise LeaseLostError(f"role {self.role}: {self.lost_reason}")
        self.revision = rev
        self._extend(sent)

    def check(self) -> None:
        """Raise LeaseLostError unless this instance holds the role right now: a guard
        before an effect outside the log (a broker order, an email)."""
        if self._holding and asyncio.get_running_loop().time() >= self._deadline:
            self._lose(f"TTL ({self.ttl:.3g}s) ran out before a renewal succeeded")
        if not self.held.is_set():
            raise LeaseLostError(f"role {self.role}: instance {self.instance} does not hold "
                                 f"the lease ({self.lost_reason or 'not acquired'})")

    def writer(self) -> FencedWriter:
        """A writer for this holder's decisions (see FencedWriter)."""
        self.check()
        assert self.token is not None
        return FencedWriter(self.log, self.role, self.token, guard=self.check,
                            on_refused=self._lose)

    async def release(self) -> None:
        """Give the role up: a standby takes it within one poll. Not a loss (`lost` stays
        clear). A revision that moved meanwhile means it was not ours to give."""
        await self._stop_renewing()
        was, rev = self._holding, self.revision
        self._holding = False
        self.held.clear()
        if was and rev is not None and self._kv is not None:
            kv, claim = self._kv, self._claim
            try:
                # A renewal cancelled just now may have landed: its revision is ours too.
                async def delete(revision: int) -> int:
                    await kv.delete(self.role, last=revision)
                    return revision

                await self._cas(f"releasing lease {self.role}", lambda: delete(rev), claim,
                                max(1.0, self.ttl), ours=delete)
            except Exception as e:  # noqa: BLE001 - it lapses by itself within the TTL
                if not _wrong_last(e):
                    log.warning("lease %s: release failed (%r); it lapses within %.3gs",
                                self.role, e, self.ttl)
            log.info("lease %s: released by %s", self.role, self.instance)

    async def holder(self) -> Holder | None:
        """Who holds the role now, as the bucket says (None: nobody). A read: it never
        creates the bucket."""
        kv = self._kv
        if kv is None:
            bucket = lease_bucket(self.log.names)
            try:
                kv = await self.log.api(f"binding lease bucket {bucket}",
                                        lambda: self.log.js.key_value(bucket))
            except nats.js.errors.BucketNotFoundError:
                return None
        try:
            entry = await self.log.api(f"reading lease {self.role}", lambda: kv.get(self.role))
        except nats.js.errors.KeyNotFoundError:
            return None
        try:
            instance = json.loads(entry.value or b"{}")["instance"]
        except (ValueError, KeyError, TypeError):
            instance = "(unreadable)"
        return Holder(self.role, instance, entry.revision or 0)

    async def __aenter__(self) -> RoleLease:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    # --- internals -------------------------------------------------------------------------

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await ensure_lease_bucket(self.log, self.ttl)
            stream = f"KV_{lease_bucket(self.log.names)}"
            info = await self.log.api(f"stream info {stream}",
                                      lambda: self.log.js.stream_info(stream))
            self._epoch = info.created.timestamp() if info.created else 0.0
        return self._kv

    def _value(self, claim: str) -> bytes:
        return json.dumps({"role": self.role, "instance": self.instance,
                           "claim": claim}).encode()

    async def _cas(self, what: str, call: Callable[[], Awaitable[int]], claim: str,
                   timeout: float,
                   ours: Callable[[int], Awaitable[int]] | None = None) -> int:
        """A revision-checked write, retried through leader elections.

        A retry after an attempt whose ack was lost finds the revision moved by that very
        attempt: when the key carries our claim, the write landed and its revision is ours.
        With `ours`, a revision moved by our own earlier write (a renewal cancelled in
        flight) is ours on the first attempt too: `ours(revision)` writes again against it."""
        attempts = 0

        async def once() -> int:
            nonlocal attempts
            attempts += 1
            try:
                return await call()
            except Exception as e:
                if not _wrong_last(e) or (attempts == 1 and ours is None):
                    raise
                found = await self._revision_of(claim)
                if found is None:
                    raise
                return found if ours is None else await ours(found)

        return await with_retry(what, once, timeout)

    async def _revision_of(self, claim: str) -> int | None:
        """The key's revision when it carries `claim` (None: it does not, or is gone)."""
        kv = await self._bucket()
        try:
            entry = await kv.get(self.role)
            mine = json.loads(entry.value or b"{}").get("claim") == claim
        except (nats.js.errors.KeyNotFoundError, ValueError, AttributeError):
            return None
        return (entry.revision or 0) if mine else None

    def _extend(self, sent: float) -> None:
        self._deadline = sent + self.ttl * (1 - EARLY)
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_at(
            self._deadline, self._lose,
            f"no renewal succeeded within the TTL ({self.ttl:.3g}s)")

    def _lose(self, reason: str) -> None:
        """Stop holding. `lost` and the callbacks only for a role that was held (fenced):
        an acquisition that fails before that is just another try."""
        if not self._holding:
            return
        was_held = self.held.is_set()
        self._holding = False
        self.held.clear()
        self.lost_reason = reason
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()
        if not was_held:
            return
        self.lost.set()
        log.warning("lease %s: instance %s lost it: %s", self.role, self.instance, reason)
        for cb in self._on_lost:
            try:
                cb(reason)
            except Exception:  # noqa: BLE001 - one bad callback must not hide the loss
                log.exception("lease %s: on_lost callback failed", self.role)

    async def _renew_loop(self) -> None:
        while self._holding:
            await asyncio.sleep(self.renew_interval)
            try:
                await self.renew()
            except LeaseLostError:
                return
            except Exception as e:  # noqa: BLE001 - the expiry timer decides when it is lost
                log.warning("lease %s: renewal failed (%r); retrying", self.role, e)

    async def _stop_renewing(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        task, self._renewer = self._renewer, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
