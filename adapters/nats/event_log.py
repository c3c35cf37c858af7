"""The event log on NATS JetStream: streams, publishing, durable consumers, replay reads.

- Two streams: the system of record (every decision, order, fill, alert; duplicate window
  on, deletes and purges denied) and market data (bars, quotes, news; age-limited).
- Every message carries `Nats-Msg-Id` = event id, so a republish after a crash is dropped
  by the server, and `Catalyst-Type`, so a consumer validates straight into the right class.
- Durable pull consumers with explicit ack: validate, hand to the handler, publish its
  outputs, then ack. A malformed message goes to `catalyst.dlq.<consumer>` with the reason
  and is acked; the consumer keeps going.
- On a cluster, connecting, stream and consumer setup and JetStream API calls retry through
  leader elections and node restarts (tenacity, bounded by `retry_timeout`), then fail with
  one clear error. Stream replicas are set at creation and never lowered by a later start.
- A simulated run on a shared server publishes under `subject_prefix` into its own streams,
  which store the events under their usual `catalyst.` subjects (a stream subject
  transform): readers see an ordinary log; live consumers never see the run's events.

Past ~400 lines: `EventLog` (streams, publishing and its batches, the fast lane) and
`Consumer` (durable pull consumers, ack/nak, redelivery) share one connection, one set of
stream names and one retry contract, and each creates or drives the other; split, they
would import each other. The retry policy itself is adapters/nats/retry.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from tenacity import RetryCallState

from adapters.nats.retry import backoff_delay, retrying
from adapters.nats.wire import can_send_frames, hpub, plain_subject, send_frames
from domain.errors import CatalystError, ConcurrencyError, EventDecodeError
from domain.events import RECORD_SUBJECT_ROOTS, REGISTRY, Event, decode_event

log = logging.getLogger("catalyst.event_log")

TYPE_HEADER = "Catalyst-Type"
# Position of an event in the in-process dispatch order of a simulation or backtest: the
# total order across both streams that `replay --verify` re-runs in.
ORDER_HEADER = "Catalyst-Order"
MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
MD_PREFIX = "catalyst.md."
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
# Atomic batches: below ATOMIC_MIN events the extra headers are not worth it; ATOMIC_MAX is
# the server's default limit on messages per batch.
ATOMIC_MIN = 8
ATOMIC_MAX = 1000
# A publish not acked in this time is sent again (same Nats-Msg-Id, so never stored twice).
ACK_TIMEOUT = 10.0
DLQ_PREFIX = "catalyst.dlq."

# Errors that mean "the server or the connection is not there right now": retry the same
# publish (same Nats-Msg-Id, so a publish that did land is not stored twice).
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    asyncio.TimeoutError,
)
# JetStream API errors of a cluster in transition: no suitable peers (a node is down),
# incomplete results, system temporarily unavailable (no meta leader), not the leader.
TRANSIENT_API_CODES = {10004, 10005, 10008, 10009}
# Default bound for retries (config: nats.retry_timeout_seconds).
RETRY_TIMEOUT = 120.0
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """An error a leader election or node restart causes, which the same call may not get a
    second later. A consumer that does not exist or a bad config is not one."""
    if isinstance(exc, (*TRANSIENT, nats.errors.NoServersError,
                        nats.js.errors.ServiceUnavailableError)):
        return True
    if isinstance(exc, nats.js.errors.APIError):
        # getattr: nats-py's key-value errors (KeyWrongLastSequenceError) skip APIError's
        # __init__ and carry no code at all.
        code, err_code = getattr(exc, "code", None), getattr(exc, "err_code", None)
        if code == 503 or err_code in TRANSIENT_API_CODES:
            return True
        text = (getattr(exc, "description", None) or "").lower()
        return "temporarily unavailable" in text or "leader" in text or "offline" in text
    return False


class NatsUnavailableError(CatalystError):
    """JetStream kept failing transiently for longer than the configured retry time."""


async def with_retry(what: str, call: Callable[[], Awaitable[T]],
                     timeout: float = RETRY_TIMEOUT) -> T:
    """`await call()`, again with backoff while it fails transiently, for up to `timeout`
    seconds; then NatsUnavailableError naming `what`. Other errors pass through at once."""

    def note(state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("nats: %s failed (%r); retrying (attempt %d)", what, err,
                    state.attempt_number)

    try:
        async for attempt in retrying(retry_on=is_transient, initial=0.05, maximum=1.0,
                                      jitter=0.05, seconds=timeout, before_sleep=note):
            with attempt:
                return await call()
    except Exception as e:
        if is_transient(e):
            raise NatsUnavailableError(
                f"NATS: {what} still failing after {timeout:.0f}s ({e!r}); is a majority of "
                "the cluster's nodes up? (nats.retry_timeout_seconds sets how long to wait)"
            ) from e
        raise
    raise AssertionError("unreachable")  # AsyncRetrying either returns or raises


class Retry(Exception):
    """Raised by a handler to have its message redelivered later (nak with delay)."""

    def __init__(self, reason: str, delay: float = 1.0) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass(frozen=True)
class StreamNames:
    record: str = "CATALYST"
    market_data: str = "CATALYST_MD"


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    stream: str
    subject: str
    event: Event
    order: int | None = None  # ORDER_HEADER, when the log was written by a pipeline


@dataclass
class ConnectOptions:
    url: str  # one server, or a cluster's servers comma-separated
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    tls: ssl.SSLContext | None = None
    name: str = "catalyst"


def connect_options_from_settings(nats_settings: Any, url: str) -> ConnectOptions:
    """Build options from config.settings.Nats (secrets unwrapped only here)."""
    tls_ctx = None
    tls = nats_settings.tls
    if tls is not None:
        tls_ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            tls_ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return ConnectOptions(
        url=url,
        user=nats_settings.user,
        password=nats_settings.password.get_secret_value() if nats_settings.password else None,
        token=nats_settings.token.get_secret_value() if nats_settings.token else None,
        creds_file=str(nats_settings.creds_file) if nats_settings.creds_file else None,
        tls=tls_ctx,
    )


def stream_for(subject: str, names: StreamNames) -> str:
    return names.market_data if subject.startswith(MD_PREFIX) else names.record


_SUBJECTS: dict[tuple[str, str], str] = {}  # (template, symbol) -> subject


def encode(event: Event) -> tuple[str, bytes, dict[str, str]]:
    # Subjects repeat (one per symbol and type): formatted once, not per event.
    key = (event.subject_template, getattr(event, "symbol", ""))
    subject = _SUBJECTS.get(key)
    if subject is None:
        subject = event.subject
        if len(_SUBJECTS) < 100_000:
            _SUBJECTS[key] = subject
    return subject, event.to_json(), {MSG_ID_HEADER: str(event.event_id),
                                      TYPE_HEADER: event.type}


def decode_msg(data: bytes, headers: dict[str, str] | None) -> Event:
    """Validate a message into its event class (fast path through the type header)."""
    type_name = headers.get(TYPE_HEADER) if headers else None
    cls = REGISTRY.get(type_name) if type_name else None
    if cls is None:
        return decode_event(data)
    try:
        return cls.model_validate_json(data)
    except ValueError:
        # Same error wording as the slow path: names the field.
        return decode_event(data)


# Server errors that mean "this server or stream cannot take atomic batches at all".
_ATOMIC_UNSUPPORTED = {10174, 10175, 10176, 10177, 10178, 10179}


class PendingPublish:
    """Events on the wire, acks outstanding: `wait()` returns their sequences in order."""

    def __init__(self, log: EventLog,
                 encoded: Sequence[tuple[str, bytes, dict[str, str]]]) -> None:
        self.log = log
        self.encoded = encoded
        self.singles: list[tuple[int, asyncio.Future[Any]]] = []
        self.batches: list[tuple[list[int], asyncio.Future[Any]]] = []
        self.seqs: list[int | None] = [None] * len(encoded)
        self.failed: BaseException | None = None

    def add_single(self, i: int, fut: asyncio.Future[Any]) -> None:
        self.singles.append((i, fut))

    def add_batch(self, idx: list[int], fut: asyncio.Future[Any]) -> None:
        self.batches.append((idx, fut))

    def acked(self) -> bool:
        """Every ack (or refusal) is in: `wait()` would not wait on the server."""
        return (all(f.done() for _, f in self.batches)
                and all(f.done() for _, f in self.singles))

    async def settle(self) -> None:
        """Wait for what is in flight; republish refused batches one by one."""
        batches, self.batches = self.batches, []
        singles, self.singles = self.singles, []
        redo: list[int] = []
        for idx, fut in batches:
            try:
                ack = await asyncio.wait_for(fut, ACK_TIMEOUT)
            except (*TRANSIENT, nats.js.errors.APIError) as e:
                if isinstance(e, nats.js.errors.APIError) and e.err_code in _ATOMIC_UNSUPPORTED:
                    self.log.atomic = False
                    log.info("atomic batch publish unavailable (%s); publishing one by one", e)
                redo.extend(idx)
                continue
            if ack.batch_size != len(idx):
                # A server that does not know atomic batches stored them one by one (maybe
                # interleaved with others): ask again per message; duplicates report the
                # sequence they were stored at.
                self.log.atomic = False
                redo.extend(idx)
                continue
            # An atomic batch is stored contiguously, its ack names the last sequence.
            first = ack.seq - len(idx) + 1
            for k, i in enumerate(idx):
                self.seqs[i] = first + k
        for i, fut in singles:
            try:
                self.seqs[i] = (await asyncio.wait_for(fut, ACK_TIMEOUT)).seq
            except (*TRANSIENT, nats.js.errors.APIError):
                redo.append(i)
        for i in sorted(redo):
            s, d, h = self.encoded[i]
            self.seqs[i] = (await self.log._publish_with_retry(s, d, h)).seq

    async def wait(self) -> list[int]:
        await self.settle()
        if self.failed is not None:
            # Sending stopped part way: everything not acked goes again, one at a time, in
            # order (duplicates of what did land are dropped by msg id).
            for i, seq in enumerate(self.seqs):
                if seq is None:
                    s, d, h = self.encoded[i]
                    self.seqs[i] = (await self.log._publish_with_retry(s, d, h)).seq
        return [s for s in self.seqs if s is not None]


@dataclass
class ConsumerStats:
    processed: int = 0
    dead_lettered: int = 0
    retried: int = 0
    last_stream_seq: int = 0
    consecutive_failures: int = 0
    last_error: str = ""


class EventLog:
    def __init__(self, nc: NATS, names: StreamNames, duplicate_window: float,
                 md_max_age_days: int, replicas: int = 1,
                 retry_timeout: float = RETRY_TIMEOUT, subject_prefix: str = "") -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.names = names
        self.duplicate_window = duplicate_window
        self.md_max_age_days = md_max_age_days
        self.replicas = replicas
        self.retry_timeout = retry_timeout
        # Prepended to every subject published (a simulated run's own namespace); the
        # streams store the events under the plain subject.
        self.subject_prefix = subject_prefix
        # What ensure_streams decided that an operator should hear about (e.g. replicas
        # kept above the configured value).
        self.notes: list[str] = []
        self.consumers: dict[str, Consumer] = {}
        # Atomic batch publish (nats-server 2.12+); switched off for this connection the
        # first time the server says it cannot, so an old server costs one refused batch.
        self.atomic = True
        self._ack_sub: Any = None
        self._ack_prefix = ""
        self._ack_token = nc._nuid.next().decode()  # batch ids are unique per connection
        self._ack_n = 0
        self._acks: dict[str, asyncio.Future[Any]] = {}
        self._can_frame = can_send_frames(nc)
        self._plain_subjects: set[str] = set()

    # --- connection ------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        target: str | ConnectOptions,
        names: StreamNames | None = None,
        duplicate_window: float = 120.0,
        md_max_age_days: int = 30,
        create_streams: bool = True,
        replicas: int = 1,
        retry_timeout: float = RETRY_TIMEOUT,
        subject_prefix: str = "",
    ) -> EventLog:
        opts = target if isinstance(target, ConnectOptions) else ConnectOptions(url=target)
        servers = [u.strip() for u in opts.url.split(",") if u.strip()]
        kwargs: dict[str, Any] = dict(
            servers=servers,
            name=opts.name,
            max_reconnect_attempts=-1,  # ride out a server restart
            reconnect_time_wait=0.25,
            allow_reconnect=True,
            connect_timeout=5,
            drain_timeout=5,
            error_cb=_log_error,
            disconnected_cb=_log_disconnect,
            reconnected_cb=_log_reconnect,
        )
        if opts.user:
            kwargs.update(user=opts.user, password=opts.password)
        if opts.token:
            kwargs["token"] = opts.token
        if opts.creds_file:
            kwargs["user_credentials"] = opts.creds_file
        if opts.tls is not None:
            kwargs["tls"] = opts.tls
        nc = await with_retry(f"connecting to {', '.join(servers)}",
                              lambda: _connect(kwargs, opts.url), retry_timeout)
        self = cls(nc, names or StreamNames(), duplicate_window, md_max_age_days, replicas,
                   retry_timeout, subject_prefix)
        if create_streams:
            try:
                await self.ensure_streams()
            except BaseException:
                await nc.close()
                raise
        return self

    async def api(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A JetStream API call that rides out leader elections (see with_retry)."""
        return await with_retry(what, call, self.retry_timeout)

    async def ensure_streams(self) -> None:
        """Create or update both streams; safe to call on every start.

        Replicas: `self.replicas` for a new stream. An existing stream keeps more replicas
        than configured (an operator scaled it up, or the config is a single-node one
        pointed at the cluster): lowering the durability of the system of record is a
        deliberate `nats stream edit`, never a side effect of a start. A configured value
        above the stream's scales it up."""
        p = self.subject_prefix
        record = StreamConfig(
            name=self.names.record,
            subjects=[f"{p}catalyst.{root}.>" for root in RECORD_SUBJECT_ROOTS],
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
            deny_delete=True,
            deny_purge=True,
            discard=DiscardPolicy.OLD,
            # Atomic batches: send_many writes a chunk as one. Direct get stays on: streams
            # created before the eventsourcing recorders left have it, and a config that
            # differed would ask the server to edit every existing record stream.
            allow_direct=True,
            allow_atomic=True,
        )
        market = StreamConfig(
            name=self.names.market_data,
            subjects=[f"{p}{MD_PREFIX}>"],
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
            max_age=self.md_max_age_days * 86400.0,
            discard=DiscardPolicy.OLD,
            allow_atomic=True,
        )
        for cfg in (record, market):
            if p:
                cfg.subject_transform = SubjectTransform(src=f"{p}catalyst.>", dest="catalyst.>")
            await self._ensure_stream(cfg)

    async def _ensure_stream(self, cfg: StreamConfig) -> None:
        name = cfg.name or ""
        try:
            existing = await self.api(f"stream info {name}", lambda: self.js.stream_info(name))
        except nats.js.errors.NotFoundError:
            existing = None
        cfg.num_replicas = self.replicas
        if existing is not None:
            have = existing.config.num_replicas or 1
            if have > self.replicas:
                note = (f"stream {name} keeps its {have} replicas: nats.replicas is "
                        f"{self.replicas}, and a start never lowers a stream's replicas "
                        f"(lower them by hand: nats stream edit {name} --replicas "
                        f"{self.replicas})")
                log.warning("%s", note)
                self.notes.append(note)
                cfg.num_replicas = have
            elif have < self.replicas:
                log.warning("stream %s: scaling up from %d to %d replicas (nats.replicas)",
                            name, have, self.replicas)
        try:
            await self.api(f"creating stream {name}", lambda: self.js.add_stream(cfg))
        except nats.js.errors.APIError as e:
            if e.err_code == 10074:  # replicas > 1 on a server that is not clustered
                raise NatsConnectError(
                    f"nats.replicas is {self.replicas} but the NATS server is not a cluster: "
                    "set nats.replicas: 1 for a single server") from None
            if not isinstance(e, nats.js.errors.BadRequestError):
                raise
            # Exists with another config (e.g. a new subject root): bring it up to date.
            await self.api(f"updating stream {name}", lambda: self.js.update_stream(cfg))

    async def close(self) -> None:
        for c in list(self.consumers.values()):
            await c.stop()
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - closing anyway
                await self.nc.close()

    # --- publishing ------------------------------------------------------------------------

    async def publish(self, event: Event, expected_last_subject_seq: int | None = None) -> int:
        subject, data, headers = encode(event)
        if expected_last_subject_seq is not None:
            headers[EXPECTED_SUBJECT_SEQ] = str(expected_last_subject_seq)
        ack = await self._publish_with_retry(subject, data, headers)
        return ack.seq

    async def _publish_with_retry(self, subject: str, data: bytes,
                                  headers: dict[str, str]) -> Any:
        """Publish and wait for the ack; through a leader election (no responders, 503,
        timeouts) again with the same Nats-Msg-Id, so a publish that did land is not stored
        twice. The first attempt goes straight out: retries cost nothing when none is due."""
        wire = self.subject_prefix + subject

        async def once() -> Any:
            try:
                return await self.js.publish(wire, data, headers=headers)
            except nats.js.errors.APIError as e:
                if e.err_code == 10071:  # wrong last sequence
                    raise ConcurrencyError(
                        f"{subject}: expected last subject sequence "
                        f"{headers.get(EXPECTED_SUBJECT_SEQ)} but the log moved on"
                    ) from None
                raise

        try:
            return await once()
        except Exception as e:
            if not is_transient(e):
                raise
        return await self.api(f"publishing to {subject}", once)

    async def publish_many(self, events: Iterable[Event],
                           orders: Sequence[int] | None = None) -> list[int]:
        """Pipelined publish (many in flight, one round trip of latency); order preserved.

        `orders`, when given, stamps each event with its dispatch position (ORDER_HEADER)."""
        events = list(events)
        if not events:
            return []
        if len(events) == 1 and orders is None:
            return [await self.publish(events[0])]
        return await (await self.send_many(events, orders)).wait()

    async def send_many(self, events: Sequence[Event],
                        orders: Sequence[int] | None = None) -> PendingPublish:
        """Put `events` on the wire now; `.wait()` on the result for their sequences.

        Lets a caller (the pipeline's recorder) compute the next events while the server
        stores these. Runs of ATOMIC_MIN or more events for one stream go as JetStream atomic
        batches: every message keeps its Nats-Msg-Id and the server stores the batch with one
        fsync instead of one per message (sync_interval: always), which is what bounds a
        recorded backtest. A batch the server refuses (a duplicate id after a crash, a server
        or stream without atomic publish) or does not ack in time is published again message
        by message in `wait`, where duplicates are dropped by id as before.
        """
        encoded = [encode(e) for e in events]
        if orders is not None:
            for (_, _, headers), n in zip(encoded, orders, strict=True):
                headers[ORDER_HEADER] = str(n)
        return await self.send_encoded(encoded)

    async def send_encoded(self, encoded: Sequence[tuple[str, bytes, dict[str, str]]],
                           atomic_min: int = ATOMIC_MIN) -> PendingPublish:
        """`send_many` for messages already encoded (`encode`, plus headers of the caller's,
        such as a fence check): runs of `atomic_min` or more for one stream go as one atomic
        batch, which the server stores whole or not at all."""
        pending = PendingPublish(self, encoded)
        groups: dict[str, list[int]] = {}
        for i, (subject, _, _) in enumerate(encoded):
            groups.setdefault(stream_for(subject, self.names), []).append(i)
        try:
            for idx in groups.values():
                if self.atomic and len(idx) >= atomic_min:
                    for start in range(0, len(idx), ATOMIC_MAX):
                        chunk = idx[start:start + ATOMIC_MAX]
                        if start:
                            # One batch per stream in flight: a refused batch is republished
                            # one by one, which must not land after a later batch.
                            await pending.settle()
                        pending.add_batch(chunk, await self._send_atomic(
                            [encoded[i] for i in chunk]))
                else:
                    for i in idx:
                        s, d, h = encoded[i]
                        reply, fut = await self._ack_future()
                        await self.nc.publish(self.subject_prefix + s, d, reply=reply,
                                              headers=h)
                        pending.add_single(i, fut)
        except (*TRANSIENT, nats.errors.Error) as e:
            pending.failed = e  # wait() publishes what was not acked one at a time
        return pending

    async def _send_atomic(self, msgs: Sequence[tuple[str, bytes, dict[str, str]]]
                           ) -> asyncio.Future[Any]:
        reply, fut = await self._ack_future()
        batch_id = reply.rsplit(".", 1)[1]
        last = len(msgs) - 1
        if self.subject_prefix:
            msgs = [(self.subject_prefix + s, d, h) for s, d, h in msgs]
        if self._frames_ok(msgs):
            # The whole batch as one write of pre-built frames: nats-py would re-validate
            # and re-encode every header of every message (the bulk of a recorded backtest's
            # publishing cost). Our header values are ids, type names and numbers.
            frames = []
            for n, (subject, data, headers) in enumerate(msgs):
                hdr = [*headers.items(), (BATCH_ID, batch_id), (BATCH_SEQ, str(n + 1))]
                if n == last:
                    hdr.append((BATCH_COMMIT, "1"))
                frames.append(hpub(subject, reply if n == last else "", hdr, data))
            await send_frames(self.nc, b"".join(frames))
            return fut
        for n, (subject, data, headers) in enumerate(msgs):
            h = dict(headers)
            h[BATCH_ID] = batch_id
            h[BATCH_SEQ] = str(n + 1)
            if n == last:
                h[BATCH_COMMIT] = "1"
            # Only the commit asks for a reply: the server answers for the whole batch.
            await self.nc.publish(subject, data, reply=reply if n == last else "", headers=h)
        return fut

    def _frames_ok(self, msgs: Sequence[tuple[str, bytes, dict[str, str]]]) -> bool:
        if not self._can_frame:
            return False
        limit = self.nc.max_payload
        known = self._plain_subjects
        for subject, data, _ in msgs:
            if len(data) > limit:
                return False  # nats-py's publish raises the proper error
            if subject not in known:
                if not plain_subject(subject):
                    return False
                if len(known) < 100_000:
                    known.add(subject)
        return True

    async def _ack_future(self) -> tuple[str, asyncio.Future[Any]]:
        """A reply subject and the future its publish ack resolves.

        Our own inbox rather than js.publish_async: nats-py raises a JetStream error reply
        inside the subscription callback there, so the future of a refused publish never
        completes."""
        if self._ack_sub is None:
            self._ack_prefix = self.nc.new_inbox()
            self._ack_sub = await self.nc.subscribe(f"{self._ack_prefix}.*", cb=self._on_ack)
        self._ack_n += 1
        token = f"{self._ack_token}{self._ack_n}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[token] = fut
        return f"{self._ack_prefix}.{token}", fut

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._acks.pop(msg.subject.rsplit(".", 1)[1], None)
        if fut is None or fut.done():
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            resp = json.loads(msg.data)
        except ValueError:
            fut.set_exception(nats.js.errors.APIError(description="unreadable publish ack"))
            return
        err = resp.get("error")
        if err:
            fut.set_exception(nats.js.errors.APIError(
                code=err.get("code"), description=err.get("description"),
                err_code=err.get("err_code")))
        else:
            fut.set_result(PubAck.from_response(resp))

    async def publish_raw(self, subject: str, data: bytes,
                          headers: dict[str, str] | None = None) -> int:
        return (await self._publish_with_retry(subject, data, headers or {})).seq

    # --- reading (replay) ------------------------------------------------------------------

    async def last_seq(self, stream: str | None = None) -> int:
        name = stream or self.names.record
        info = await self.api(f"stream info {name}", lambda: self.js.stream_info(name))
        return info.state.last_seq

    async def last_subject_seq(self, subject: str) -> int:
        """Sequence of the last message on a subject (0 if none): for optimistic concurrency."""
        try:
            msg = await self.api(f"last message on {subject}", lambda: self.js.get_last_msg(
                stream_for(subject, self.names), subject))
        except nats.js.errors.NotFoundError:
            return 0
        return msg.seq or 0

    async def read(
        self,
        subjects: Sequence[str] = ("catalyst.>",),
        start_seq: int | None = None,
        start_time: datetime | None = None,
        stream: str | None = None,
        decode_errors: str = "skip",
    ) -> AsyncIterator[StoredEvent]:
        """Read one stream in order, up to its end at call time.

        Through an ephemeral pull consumer (no acks, in memory): it says up front how many
        messages match, so a read of nothing returns at once, and it only holds what was
        fetched (a push consumer in nats-py drops messages silently past its limits). A
        read cut by a leader election (the consumer lost with its node, 503s) goes on after
        the last event it gave, with a new consumer, for `retry_timeout` seconds."""
        stream = stream or self.names.record
        info = await self.api(f"stream info {stream}", lambda: self.js.stream_info(stream))
        end = info.state.last_seq
        if end == 0 or (start_seq is not None and start_seq > end):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_timeout
        next_seq, attempt = start_seq, 0
        while True:
            try:
                async for stored in self._read_once(stream, list(subjects), next_seq,
                                                    start_time if next_seq is None else None,
                                                    end, decode_errors):
                    next_seq = stored.seq + 1
                    yield stored
                return
            except Exception as e:
                if not is_transient(e) or loop.time() > deadline:
                    raise
                attempt += 1
                log.warning("reading %s: %r; going on from seq %s (attempt %d)", stream, e,
                            next_seq, attempt)
                await asyncio.sleep(backoff_delay(attempt, 0.2, 2.0))

    async def _read_once(self, stream: str, wanted: list[str], start_seq: int | None,
                         start_time: datetime | None, end: int, decode_errors: str
                         ) -> AsyncIterator[StoredEvent]:
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            mem_storage=True,
            inactive_threshold=60.0,  # cleaned up by the server if we die mid-read
        )
        if wanted != ["catalyst.>"]:
            config.filter_subjects = wanted
        if start_seq is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_seq
        elif start_time is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = start_time
        sub = await self.api(f"reading {stream}", lambda: self.js.pull_subscribe(
            "", stream=stream, config=config))
        try:
            remaining = (await self.api(f"reading {stream}", sub.consumer_info)).num_pending
            while remaining > 0:
                try:
                    msgs = await sub.fetch(min(remaining, 1000), timeout=5.0)
                except nats.errors.TimeoutError:
                    # Nothing came though messages were pending: the read is cut (a leader
                    # election), not done; `read` goes on after the last one given. Done
                    # only if nothing is pending any more (aged out meanwhile).
                    info = await self.api(f"reading {stream}", sub.consumer_info)
                    if not info.num_pending:
                        return
                    raise
                for msg in msgs:
                    remaining -= 1
                    seq = msg.metadata.sequence.stream
                    if seq > end:
                        return
                    try:
                        ev = decode_msg(msg.data, msg.headers)
                    except EventDecodeError:
                        if decode_errors == "raise":
                            raise
                        continue
                    order = msg.headers.get(ORDER_HEADER) if msg.headers else None
                    yield StoredEvent(seq, stream, msg.subject, ev,
                                      int(order) if order else None)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(stream, config.name)

    # --- consuming -------------------------------------------------------------------------

    async def consume(
        self,
        name: str,
        subjects: Sequence[str],
        on_event: Callable[[Event], Awaitable[list[Event]]],
        stream: str | None = None,
        max_ack_pending: int = 1000,
        batch: int = 256,
        ack_wait: float = 10.0,
        max_deliver: int = 20,
        deliver_new: bool = False,
        start_seq: int | None = None,
    ) -> Consumer:
        """A durable consumer. A new one starts at `start_seq` (or only new messages with
        `deliver_new`, or from the beginning); an existing one resumes at its ack floor."""
        consumer = Consumer(self, name, tuple(subjects), on_event, stream or
                            stream_for(subjects[0], self.names), max_ack_pending, batch,
                            ack_wait, max_deliver, deliver_new, start_seq)
        await consumer.start()
        self.consumers[name] = consumer
        return consumer


@dataclass
class Consumer:
    log: EventLog
    name: str
    subjects: tuple[str, ...]
    on_event: Callable[[Event], Awaitable[list[Event]]]
    stream: str
    max_ack_pending: int
    batch: int
    ack_wait: float
    max_deliver: int
    deliver_new: bool
    start_seq: int | None = None
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _working_on: Msg | None = None  # the message a handler is on now (see _working)
    _seen_working: Msg | None = None  # ... and the one it was on at the last watchdog tick
    _watchdog: asyncio.TimerHandle | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        cfg = ConsumerConfig(
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
            max_deliver=-1,  # we dead-letter ourselves, with the reason
            deliver_policy=DeliverPolicy.NEW if self.deliver_new else DeliverPolicy.ALL,
        )
        if self.start_seq is not None and not self.deliver_new:
            cfg.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = self.start_seq
        if len(self.subjects) == 1:
            cfg.filter_subject = self.subjects[0]
        else:
            cfg.filter_subjects = list(self.subjects)
        cfg.name = self.name
        js, api, what = self.log.js, self.log.api, f"consumer {self.stream}/{self.name}"
        try:
            existing = await api(f"{what} info", lambda: js.consumer_info(self.stream, self.name))
        except nats.js.errors.NotFoundError:
            existing = None
        if existing is None:
            await api(f"creating {what}", lambda: js.add_consumer(self.stream, config=cfg))
        else:
            # Resume where it stopped. Only the subjects and the ack wait may change (a new
            # release); the deliver policy of an existing consumer is fixed by the server.
            old = existing.config
            wanted = sorted(self.subjects)
            have = sorted(old.filter_subjects or ([old.filter_subject] if old.filter_subject
                                                  else []))
            if wanted != have or old.ack_wait != self.ack_wait:
                old.filter_subject = cfg.filter_subject
                old.filter_subjects = cfg.filter_subjects
                old.ack_wait = self.ack_wait
                await api(f"updating {what}", lambda: js.add_consumer(self.stream, config=old))
        self.sub = await api(f"binding {what}", lambda: js.pull_subscribe_bind(
            durable=self.name, stream=self.stream, pending_msgs_limit=-1, pending_bytes_limit=-1
        ))
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.name}")
        self._watchdog = asyncio.get_running_loop().call_later(self.ack_wait / 6, self._watch)

    async def stop(self) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None
        try:
            await self.sub.unsubscribe()
        except Exception:  # noqa: BLE001 - connection may already be gone
            pass
        self.log.consumers.pop(self.name, None)

    async def _run(self) -> None:
        # Never ask for more than the server may have unacked at once: a pull request for
        # more stays open after the allowed messages arrived, and nats-py's fetch waits for
        # the rest until it expires -- 0.5 s added to every message of a max_ack_pending=1
        # consumer (the broker's, which the emergency stop goes through). With batch 1 the
        # fetch returns as soon as its message is in.
        batch = max(1, min(self.batch, self.max_ack_pending))
        while not self._stopping:
            try:
                msgs = await self.sub.fetch(batch, timeout=0.5)
            except TimeoutError:  # nats' TimeoutError is one too: nothing to fetch
                self.idle.set()
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                    nats.js.errors.APIError, nats.errors.Error, OSError) as e:
                # The server is restarting: the client reconnects by itself; try again.
                log.warning("consumer %s: fetch failed (%r); retrying", self.name, e)
                self.idle.set()
                await asyncio.sleep(0.25)
                continue
            self.idle.clear()
            for msg in msgs:
                try:
                    await self._process(msg)
                except Exception as e:  # noqa: BLE001 - e.g. the dead-letter publish gave up
                    # Unacked, so the server redelivers it; the consumer must not die.
                    self.stats.consecutive_failures += 1
                    self.stats.last_error = repr(e)
                    log.error("consumer %s: could not process seq %s: %r", self.name,
                              msg.metadata.sequence.stream, e)
                    await asyncio.sleep(1.0)

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        try:
            event = decode_msg(msg.data, msg.headers)
        except EventDecodeError as e:
            await self._dead_letter(msg, str(e))
            return
        try:
            outputs = await self._working(msg, self.on_event(event))
            if outputs:
                await self.log.publish_many(outputs)
        except Retry as r:
            self.stats.retried += 1
            await _quiet(msg.nak(delay=r.delay))
            return
        except Exception as e:  # noqa: BLE001 - a handler bug must not stop the consumer
            self.stats.consecutive_failures += 1
            self.stats.last_error = repr(e)
            if meta.num_delivered >= self.max_deliver:
                await self._dead_letter(msg, f"handler failed {meta.num_delivered} times: {e!r}")
                return
            log.exception("consumer %s: handler failed on %s", self.name, event.type,
                          extra=log_context(event, self.name))
            await _quiet(msg.nak(delay=min(0.1 * 2 ** meta.num_delivered, 10.0)))
            return
        self.stats.consecutive_failures = 0
        await _quiet(msg.ack())
        self.stats.processed += 1
        self.stats.last_stream_seq = meta.sequence.stream

    async def _working(self, msg: Msg, work: Awaitable[list[Event]]) -> list[Event]:
        """Await `work` with `msg` marked as the one in progress (see `_watch`)."""
        self._working_on = msg
        try:
            return await work
        finally:
            self._working_on = None

    def _watch(self) -> None:
        """Every sixth of the ack wait: a message the handler was already on at the last
        tick has been in progress for a while, so tell the server. A slow handler (a broker
        call retried through an outage) keeps its message, while the ack wait stays short,
        so a message left by a process that died is redelivered within seconds. The first
        beat comes at most a third of the ack wait into a message, as a timer armed per
        message gave; one timer per consumer, because arming and cancelling one for every
        message cost the consume path about 5 % (bench/eventlog.py)."""
        msg = self._working_on
        if msg is not None and msg is self._seen_working:
            asyncio.get_running_loop().create_task(_quiet(msg.in_progress()))
        self._seen_working = msg
        if not self._stopping:
            self._watchdog = asyncio.get_running_loop().call_later(self.ack_wait / 6,
                                                                   self._watch)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        self.stats.dead_lettered += 1
        meta = msg.metadata
        body = {
            "reason": reason,
            "consumer": self.name,
            "subject": msg.subject,
            "stream": meta.stream,
            "stream_seq": meta.sequence.stream,
            "data_b64": base64.b64encode(msg.data).decode(),
        }
        log.warning("consumer %s: dead-lettered seq %s: %s", self.name,
                    meta.sequence.stream, reason)
        await self.log.publish_raw(
            f"{DLQ_PREFIX}{self.name}", json.dumps(body).encode(),
            {MSG_ID_HEADER: f"dlq:{meta.stream}:{meta.sequence.stream}:{self.name}"},
        )
        await _quiet(msg.ack())
        self.stats.last_stream_seq = meta.sequence.stream

    async def info(self) -> Any:
        return await self.log.api(f"consumer {self.stream}/{self.name} info",
                                  lambda: self.log.js.consumer_info(self.stream, self.name))


class NatsConnectError(CatalystError):
    pass


async def _connect(kwargs: dict[str, Any], url: str, timeout: float = 15.0) -> NATS:
    """Connect, but fail fast and clearly on refused credentials instead of retrying them
    forever (reconnects after a successful connect still retry forever)."""
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def on_error(e: Exception) -> None:
        if "authorization" in str(e).lower() and not refused.done():
            refused.set_result(e)
        await _log_error(e)

    kwargs = {**kwargs, "error_cb": on_error}
    task = asyncio.create_task(nats.connect(**kwargs))
    done, _ = await asyncio.wait({task, refused}, timeout=timeout,
                                 return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    if refused in done:
        raise NatsConnectError(f"NATS server {url} refused the credentials (authorization "
                               "violation): check nats.user/password, token or creds_file")
    raise NatsConnectError(f"cannot reach the NATS server at {url} within {timeout:.0f}s")


def log_context(event: Event, handler: str | None = None) -> dict[str, str]:
    """Ids a structured log line carries, so it can be joined with the event log."""
    ctx = {"event_id": str(event.event_id), "event_type": event.type,
           "correlation_id": event.correlation_id,
           "causation_id": str(event.causation_id) if event.causation_id else ""}
    if handler:
        ctx["handler"] = handler
    return ctx


async def _quiet(aw: Awaitable[Any]) -> None:
    """Acks are best effort: if the connection is down the server redelivers later."""
    try:
        await aw
    except Exception as e:  # noqa: BLE001
        log.warning("ack/nak failed: %s", e)


async def _log_error(e: Exception) -> None:
    log.warning("nats: %s", e)


async def _log_disconnect() -> None:
    log.debug("nats: disconnected")


async def _log_reconnect() -> None:
    log.info("nats: reconnected")

