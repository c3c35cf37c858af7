"""One ordered view of the event log across both streams, from NATS or from a JSONL export.

Order. A simulation or backtest stamps every event with its dispatch position
(`Catalyst-Order`), so the two streams merge back into exactly the order the handlers saw.
Without that header (live runs, events published by hand) the merge goes by `occurred_at`,
market data first on a tie (a bar is known before anything reacts to it), each stream in its
own sequence order.

Reading NATS. Each stream is read through an ephemeral pull consumer (ack none, in memory,
removed afterwards) up to the message count it had when the read began. Pull requests are
issued only while fewer than two batches are waiting, so memory stays bounded however long
the log is and however slow the reader; a push ordered consumer cannot promise that in
nats-py (it answers flow control on receipt, not on processing, and drops messages silently
once its pending limits are reached). Consumer sequence numbers are checked for gaps.

JSONL exports (write, check, read back, import) are in adapters/nats/log_file.py.

Past ~400 lines (just): the pull feed's flow control and gap checks and the merge of the two
streams are one reader with one contract (bounded memory, dispatch order, no silent gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ConfigDict

from adapters.nats.batch_gc import batch_gc
from adapters.nats.event_log import (
    ORDER_HEADER,
    TYPE_HEADER,
    EventLog,
    decode_msg,
)
from adapters.nats.wire import FastLane, RawMsg, header_value, lane_subscribe, status_of
from domain.errors import CatalystError, EventDecodeError
from domain.events import REGISTRY, Event, decode_event
from domain.values import UtcDatetime

ROLE_RECORD = "record"
ROLE_MD = "market_data"
BATCH = 2048
TYPE_KEY = f"\r\n{TYPE_HEADER}: ".encode()
ORDER_KEY = f"\r\n{ORDER_HEADER}: ".encode()


class LogReadError(CatalystError):
    """The log could not be read completely (a gap, a stall, a malformed export line)."""


class EventEnvelope(BaseModel):
    """What every event says about itself, read without its payload: a reader that only
    orders, counts and passes on an event's stored bytes (a verification handing market
    data to a helper process) reads this, at a third of the cost of a bar."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID
    type: str
    occurred_at: UtcDatetime
    causation_id: UUID | None = None
    symbol: str | None = None  # market data's: what `Handler.ignores` is asked about


ENVELOPE = EventEnvelope.__pydantic_validator__


class LogEntry(NamedTuple):  # a tuple: cheap to make half a million of
    stream: str  # ROLE_RECORD / ROLE_MD
    seq: int  # stream sequence (or line number in a file without one)
    subject: str
    event: Event  # or an EventEnvelope, for a reader that asked for one (NatsSource.envelopes)
    order: int | None = None  # dispatch position, when a pipeline recorded it
    raw: bytes | None = None  # the event's JSON exactly as stored, when read from NATS


def bulk_gc() -> contextlib.AbstractContextManager[None]:
    """Fewer garbage collections while half a million short-lived events stream through."""
    return batch_gc(50_000, 20, 100)


# Records of a process starting or taking a role: stamped by a wall clock, about no data.
# Merged by time they would hold back every bar older than them (a recorded day replayed
# at speed on a live system), so they go as soon as they come.
MARKERS = frozenset({"RunStarted", "RoleClaimed"})


def md_goes_first(md: LogEntry, rec: LogEntry) -> bool:
    if md.order is not None and rec.order is not None:
        return md.order < rec.order
    if rec.event.type in MARKERS:
        return False
    return md.event.occurred_at <= rec.event.occurred_at


class LogSource(Protocol):
    total: int  # how many entries the read will yield at most (for progress)
    description: str

    def batches(self) -> AsyncIterator[list[LogEntry]]: ...


# --- subjects --------------------------------------------------------------------------------


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both NATS patterns."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        if i >= len(ta) or i >= len(tb):
            return False
        x, y = ta[i], tb[i]
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    return True


# --- NATS ------------------------------------------------------------------------------------


class _PullFeed:
    """One stream, in sequence order, through an ephemeral pull consumer.

    Its messages come through a fast lane of the client's parser (adapters.nats.wire): raw
    bytes, many at a time, decoded here in one pass."""

    def __init__(self, log: EventLog, stream: str, role: str, subject: str | None) -> None:
        self.log = log
        self.stream = stream
        self.role = role
        self.subject = subject
        self.total = 0
        self.received = 0
        self.consumed = 0
        self.requested = 0
        self.buf: list[tuple[RawMsg, int]] = []
        self.ready = asyncio.Event()
        self.error: str | None = None
        self._last_dseq = 0
        self._consumer: str | None = None
        self._sub: Any = None
        self._lane: FastLane | None = None

    async def open(self) -> int:
        js = self.log.js
        cfg = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=60.0, mem_storage=True, num_replicas=1,
            max_waiting=16,
        )
        if self.subject:
            cfg.filter_subject = self.subject
        info = await self.log.api(f"reading {self.stream}",
                                  lambda: js.add_consumer(self.stream, config=cfg))
        self._consumer = info.name
        self.total = info.num_pending or 0
        if self.total == 0:
            await self.close()
            return 0
        nc = self.log.nc
        self._inbox = nc.new_inbox()
        self._sub, self._lane = await lane_subscribe(nc, self._inbox, self._on_raw)
        prefix = getattr(js, "_prefix", "$JS.API")
        self._next = f"{prefix}.CONSUMER.MSG.NEXT.{self.stream}.{self._consumer}"
        await self._top_up()
        return self.total

    async def _request(self) -> None:
        want = min(BATCH, self.total - self.requested)
        if want <= 0:
            return
        self.requested += want
        body = json.dumps({"batch": want, "expires": 5_000_000_000}).encode()
        await self.log.nc.publish(self._next, body, reply=self._inbox)

    async def _top_up(self) -> None:
        # Keep about two batches in flight: bounded memory, network and decoding overlap.
        while self.requested - self.consumed < 2 * BATCH and self.requested < self.total:
            await self._request()

    def _on_raw(self, msgs: list[RawMsg]) -> None:
        buf = self.buf
        before = len(buf)
        last = self._last_dseq
        for m in msgs:
            if not m.data:
                code = status_of(m.headers)
                if code is not None:
                    if code in (b"408", b"404"):
                        # A pull expired with nothing left to give: ask again (in take()).
                        left = header_value(m.headers, b"\r\nNats-Pending-Messages: ")
                        self.requested -= int(left or 0)
                        self.requested = max(self.requested, self.received)
                    elif code != b"100":  # 100 = heartbeat / flow control
                        line = m.headers.split(b"\r\n", 1)[0][9:].decode(errors="replace")
                        self.error = f"{self.stream}: pull failed: {line}"
                    continue
            # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>[...]
            tokens = m.reply.split(b".")
            if len(tokens) >= 12:  # v2 ack subject: domain and account hash first
                tokens = tokens[:2] + tokens[4:]
            try:
                dseq, sseq = int(tokens[6]), int(tokens[5])
            except (IndexError, ValueError):
                # Not a JetStream delivery (something else published to our inbox). This
                # runs inside the client's parser: never raise here, fail the read instead.
                if self.error is None:
                    self.error = (f"{self.stream}: unexpected message on the read inbox "
                                  f"(reply {m.reply[:80]!r})")
                continue
            if dseq != last + 1 and self.error is None:
                self.error = (f"{self.stream}: gap in delivery (consumer sequence {dseq} "
                              f"after {last}); nothing was skipped silently, read again")
            last = dseq
            buf.append((m, sseq))
        self.received += len(buf) - before
        self._last_dseq = last
        self.ready.set()

    async def take(self, timeout: float = 30.0) -> list[tuple[RawMsg, int]]:
        """The next messages (empty once the stream is read to its end)."""
        if self.consumed >= self.total:
            return []
        # One deadline for the whole wait: an expired pull (408) wakes us to ask again, and
        # must not restart the clock, or a read missing messages (deleted or aged out since
        # the count) would wait forever.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.buf:
            if self.error:
                raise LogReadError(self.error)
            await self._top_up()
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise LogReadError(f"{self.stream}: no message for {timeout:.0f}s after "
                                   f"{self.consumed} of {self.total} (messages deleted or "
                                   "aged out since the read began?)") from None
        if self.error:
            raise LogReadError(self.error)
        msgs, self.buf = self.buf, []
        self.consumed += len(msgs)
        await self._top_up()
        if self.consumed >= self.total:
            await self.close()
        return msgs

    def entries(self, msgs: list[tuple[RawMsg, int]],
                envelopes: frozenset[str] = frozenset(),
                keep_undecoded: bool = False) -> list[LogEntry]:
        """Decoded entries; events of the `envelopes` types as an EventEnvelope (with their
        stored bytes) when they are one line of JSON. An event that does not decode is
        skipped, or with `keep_undecoded` kept as its envelope when it is market data whose
        envelope reads (a verification reports it)."""
        out: list[LogEntry] = []
        append = out.append
        role = self.role
        registry = REGISTRY
        new = tuple.__new__  # LogEntry's own constructor is a Python function
        subjects: dict[bytes, str] = {}
        for m, sseq in msgs:
            hdr, data = m.headers, m.data
            # The two headers we need, found in the raw block (no dict per message).
            i = hdr.find(TYPE_KEY)
            name = None
            if i >= 0:
                i += len(TYPE_KEY)
                name = hdr[i:hdr.find(b"\r\n", i)].decode()
            # The stored bytes are kept for output only when they are one line of JSON of
            # the typed event (what our writers publish); anything else is re-serialised.
            raw: bytes | None = data
            one_line = b"\n" not in data and b"\r" not in data
            ev: Event | EventEnvelope | None = None
            try:
                if name in envelopes and one_line:
                    env = ENVELOPE.validate_json(data)
                    if env.type == name:
                        ev = env
                if ev is None:
                    cls = registry.get(name) if name is not None else None
                    if cls is None:
                        raise ValueError
                    ev = cls.__pydantic_validator__.validate_json(data)
                    if not one_line:
                        raw = None
            except (ValueError, EventDecodeError):
                try:
                    ev = decode_event(data)
                    raw = None
                except EventDecodeError:
                    ev = _undecoded(name, data) if keep_undecoded and one_line else None
                    if ev is None:
                        continue  # dead letters are the consumers' business: skipped
            i = hdr.find(ORDER_KEY)
            order = int(hdr[i + len(ORDER_KEY):hdr.find(b"\r\n", i + 1)]) if i >= 0 else None
            subject = subjects.get(m.subject)
            if subject is None:
                subject = subjects[m.subject] = m.subject.decode()
            append(new(LogEntry, (role, sseq, subject, ev, order, raw)))
        return out

    async def close(self) -> None:
        if self._sub is not None:
            if self._lane is not None:
                self._lane.close(self._sub._id)
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - connection may be closing
                pass
            self._sub = None
        if self._consumer is not None:
            try:
                await self.log.js.delete_consumer(self.stream, self._consumer)
            except Exception:  # noqa: BLE001 - ephemeral: the server removes it anyway
                pass
            self._consumer = None


def _undecoded(name: str | None, data: bytes) -> EventEnvelope | None:
    cls = REGISTRY.get(name) if name is not None else None
    if cls is None or not cls.subject_template.startswith("catalyst.md."):
        return None
    try:
        env = ENVELOPE.validate_json(data)
    except ValueError:
        return None
    return env if env.type == name else None


class NatsSource:
    """Both streams of a JetStream log, merged (see the module docstring)."""

    def __init__(self, log: EventLog, subject: str | None = None,
                 streams: tuple[str, ...] = (ROLE_MD, ROLE_RECORD)) -> None:
        self.log = log
        self.subject = subject
        self.streams = streams
        self.total = 0
        self.description = f"nats {log.nc.connected_url.netloc if log.nc.connected_url else ''}"
        self._feeds: dict[str, _PullFeed] = {}
        # Types read as EventEnvelope (set by a reader that needs only their envelope).
        self.envelopes: frozenset[str] = frozenset()
        # Market data whose payload does not decode, kept as its envelope (see entries).
        self.keep_undecoded = False

    async def open(self) -> NatsSource:
        names = {ROLE_RECORD: self.log.names.record, ROLE_MD: self.log.names.market_data}
        for role in self.streams:
            stream = names[role]
            info = await self.log.api(f"stream info {stream}",
                                      lambda s=stream: self.log.js.stream_info(s))
            # A run's own stream listens on `run.<id>.catalyst...` and stores `catalyst...`.
            stored = [s.removeprefix(self.log.subject_prefix) for s in info.config.subjects or ()]
            if self.subject and not any(subjects_overlap(self.subject, s) for s in stored):
                continue
            if info.state.messages == 0:
                continue
            feed = _PullFeed(self.log, stream, role, self.subject)
            self.total += await feed.open()
            if feed.total:
                self._feeds[role] = feed
        return self

    async def close(self) -> None:
        for f in self._feeds.values():
            await f.close()

    async def batches(self) -> AsyncIterator[list[LogEntry]]:
        md, rec = self._feeds.get(ROLE_MD), self._feeds.get(ROLE_RECORD)
        try:
            if md is None or rec is None:
                only = md or rec
                if only is None:
                    return
                while msgs := await only.take():
                    yield only.entries(msgs, self.envelopes, self.keep_undecoded)
                return
            qa: deque[LogEntry] = deque()
            qb: deque[LogEntry] = deque()
            a_done = b_done = False
            while True:
                if not qa and not a_done:
                    msgs = await md.take()
                    a_done = not msgs
                    qa.extend(md.entries(msgs, self.envelopes, self.keep_undecoded))
                if not qb and not b_done:
                    msgs = await rec.take()
                    b_done = not msgs
                    qb.extend(rec.entries(msgs, self.envelopes, self.keep_undecoded))
                if not qa and not qb:
                    if a_done and b_done:
                        return
                    continue
                if not qb and b_done:
                    out = list(qa)
                    qa.clear()
                elif not qa and a_done:
                    out = list(qb)
                    qb.clear()
                else:
                    out = []
                    append, pa, pb = out.append, qa.popleft, qb.popleft
                    while qa and qb:
                        append(pa() if md_goes_first(qa[0], qb[0]) else pb())
                yield out
        finally:
            await self.close()


async def first_event(log: EventLog, subject: str, last: bool = False) -> Event | None:
    """The first (or last) event recorded on a subject of the record stream, or None."""
    js = log.js
    try:
        if last:
            raw = await js.get_last_msg(log.names.record, subject)
        else:
            raw = await js.get_msg(log.names.record, seq=1, subject=subject, next=True)
    except Exception:  # noqa: BLE001 - not found (the error class differs between servers)
        return None
    try:
        return decode_msg(raw.data or b"", raw.headers)
    except EventDecodeError:
        return None
