"""eventsourcing recorders whose records are messages in a JetStream stream.

- An aggregate's events are the messages on its subject, in stream order; its versions
  only ever increase along that subject, so "the last message" is "the latest version".
- Optimistic concurrency: the first message written to a subject in an insert carries
  `Nats-Expected-Last-Subject-Sequence` = the sequence of the last message we saw there
  (0 for none). If another writer got in first the server refuses the whole insert; we
  re-read, and raise IntegrityError if a recorded version now collides (retrying only if
  it does not, e.g. a stale cache).
- Several messages in one insert go as one atomic batch (nats-server >= 2.12): all are
  stored, contiguously, or none is.
- Notification id = JetStream stream sequence. See the package docstring for gaps.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from adapters.nats.es_jetstream import codec
from adapters.nats.es_jetstream.codec import EVENTS, Subjects
from adapters.nats.es_jetstream.nats_io import (
    EXPECTED_LAST_SUBJECT_SEQ,
    AtomicBatchNotEnabledError,
    RawMsg,
    StreamLog,
    WrongLastSequenceError,
)

log = logging.getLogger("catalyst.es_jetstream")

MAX_ATTEMPTS = 5  # re-reads after a refused write that turned out not to be a conflict
HEAD_CACHE_SIZE = 10_000


class Head(NamedTuple):
    """The last message on a subject: its stream sequence and the version (or tracked
    notification id) it recorded."""

    seq: int
    position: int


class PartialWriteError(IntegrityError):
    """Non-atomic mode only: a conflict stopped an insert after part of it was stored."""


class JetStreamRecorder:
    """State and plumbing shared by all the recorders."""

    def __init__(
        self,
        log: StreamLog,
        subjects: Subjects,
        purpose: str = EVENTS,
        *,
        atomic: bool = True,
        manage_stream: bool = True,
    ) -> None:
        if purpose == codec.TRACKING:
            raise ValueError("'tracking' is reserved for tracking records")
        self.log = log
        self.subjects = subjects
        self.purpose = purpose
        self.atomic = atomic
        self.manage_stream = manage_stream
        # subject -> Head (None: known empty). Touched only on the loop thread.
        self._heads: OrderedDict[str, Head | None] = OrderedDict()

    @property
    def stream(self) -> str:
        return self.log.stream

    def _run(self, coro: Any) -> Any:
        return self.log.conn.run(coro)

    # --- the head cache (a hint only: the server's expected-sequence check decides) -------

    def _remember(self, subject: str, head: Head | None) -> None:
        known = self._heads.get(subject)
        if head is None and subject in self._heads:
            return  # an empty read never overrides something we wrote
        if known is not None and head is not None and head.seq < known.seq:
            return  # a read that raced our own write
        self._heads[subject] = head
        self._heads.move_to_end(subject)
        while len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)

    def _head_of(self, msg: RawMsg | None) -> Head | None:
        if msg is None:
            return None
        if codec.TRACKING_ID in msg.headers:
            return Head(msg.seq, codec.decode_tracking_id(msg.subject, msg.seq, msg.headers))
        n = codec.decode_notification(msg.subject, msg.seq, msg.headers, msg.data)
        return Head(msg.seq, n.originator_version)

    async def _heads_for(self, subjects: Sequence[str], fresh: bool) -> dict[str, Head | None]:
        heads = {} if fresh else {s: self._heads[s] for s in subjects if s in self._heads}
        wanted = [s for s in subjects if s not in heads]
        found = await asyncio.gather(*(self.log.last(s) for s in wanted))
        for s, msg in zip(wanted, found, strict=True):
            heads[s] = self._head_of(msg)
            self._heads.pop(s, None)  # what the server says now beats what we knew
            self._remember(s, heads[s])
        return heads

    # --- writing ---------------------------------------------------------------------------

    def _event_subject(self, e: StoredEvent) -> str:
        return self.subjects.aggregate(e.originator_id, self.purpose)

    async def _insert(self, events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        if not events and tracking is None:
            return []
        subjects: list[str] = []
        last_version: dict[str, int] = {}
        for e in events:
            s = self._event_subject(e)
            if s in last_version and e.originator_version <= last_version[s]:
                raise IntegrityError(
                    f"versions of {e.originator_id} in one insert must increase: "
                    f"{e.originator_version} after {last_version[s]}"
                )
            if s not in last_version:
                subjects.append(s)
            last_version[s] = e.originator_version
        t_subject = self.subjects.tracking(tracking.application_name) if tracking else None
        if t_subject:
            subjects.append(t_subject)

        fresh = False
        for _ in range(MAX_ATTEMPTS):
            heads = await self._heads_for(subjects, fresh)
            msgs = self._messages(events, tracking, t_subject, heads)
            try:
                seqs = await self._publish(msgs)
            except WrongLastSequenceError:
                # Someone wrote to one of our subjects since we looked: look again; the
                # check in _messages raises IntegrityError if it was a real conflict.
                fresh = True
                continue
            except AtomicBatchNotEnabledError:
                if not self.manage_stream:
                    raise
                await self.log.enable_atomic()  # e.g. another process reset the config
                fresh = True
                continue
            for (subject, _, headers), seq in zip(msgs, seqs, strict=True):
                pos = headers.get(codec.VERSION) or headers[codec.TRACKING_ID]
                self._remember(subject, Head(seq, int(pos)))
            return seqs[: len(events)]
        raise IntegrityError(f"gave up after {MAX_ATTEMPTS} refused writes to {subjects}")

    def _messages(
        self,
        events: Sequence[StoredEvent],
        tracking: Tracking | None,
        t_subject: str | None,
        heads: dict[str, Head | None],
    ) -> list[tuple[str, bytes, dict[str, str]]]:
        msgs: list[tuple[str, bytes, dict[str, str]]] = []
        seen: set[str] = set()
        for e in events:
            s = self._event_subject(e)
            headers = codec.event_headers(e)
            if s not in seen:
                seen.add(s)
                head = heads[s]
                if head is not None and e.originator_version <= head.position:
                    raise IntegrityError(
                        f"{e.originator_id} version {e.originator_version} is not after the "
                        f"recorded version {head.position} (stream {self.stream}, {s})"
                    )
                headers[EXPECTED_LAST_SUBJECT_SEQ] = str(head.seq if head else 0)
            msgs.append((s, e.state, headers))
        if tracking is not None and t_subject is not None:
            head = heads[t_subject]
            if head is not None and tracking.notification_id <= head.position:
                raise IntegrityError(
                    f"tracking {tracking.application_name} {tracking.notification_id} is not "
                    f"after the recorded {head.position}"
                )
            headers = codec.tracking_headers(tracking)
            headers[EXPECTED_LAST_SUBJECT_SEQ] = str(head.seq if head else 0)
            msgs.append((t_subject, codec.tracking_payload(tracking), headers))
        return msgs

    async def _publish(self, msgs: list[tuple[str, bytes, dict[str, str]]]) -> list[int]:
        if len(msgs) == 1:
            return [await self.log.publish(*msgs[0])]
        if self.atomic:
            return await self.log.publish_batch(msgs)
        return await self._publish_chained(msgs)

    async def _publish_chained(self, msgs: list[tuple[str, bytes, dict[str, str]]]) -> list[int]:
        """Non-atomic fallback: one message at a time, each expecting the one before it on
        its subject. A conflict can leave the insert half-written (PartialWriteError)."""
        seqs: list[int] = []
        last_on: dict[str, int] = {}
        for subject, data, headers in msgs:
            h = dict(headers)
            if subject in last_on:
                h[EXPECTED_LAST_SUBJECT_SEQ] = str(last_on[subject])
            try:
                seq = await self.log.publish(subject, data, h)
            except WrongLastSequenceError:
                if not seqs:
                    raise
                raise PartialWriteError(
                    f"conflict after {len(seqs)} of {len(msgs)} messages were stored"
                ) from None
            last_on[subject] = seq
            seqs.append(seq)
        return seqs

    # --- reading ---------------------------------------------------------------------------

    async def _select_events(
        self, originator_id: UUID | str, gt: int | None, lte: int | None, desc: bool,
        limit: int | None,
    ) -> list[StoredEvent]:
        subject = self.subjects.aggregate(originator_id, self.purpose)
        if desc and lte is None and limit == 1:
            # The latest version is the last message (how snapshots are found): one get.
            msg = await self.log.last(subject)
            self._remember(subject, self._head_of(msg))
            if msg is None:
                return []
            n = codec.decode_notification(msg.subject, msg.seq, msg.headers, msg.data)
            return [codec.as_stored_event(n)] if gt is None or n.originator_version > gt else []
        msgs = await self.log.read_all(subject)
        self._remember(subject, self._head_of(msgs[-1]) if msgs else None)
        events = [codec.decode_notification(m.subject, m.seq, m.headers, m.data) for m in msgs]
        selected = [
            codec.as_stored_event(n) for n in events
            if (gt is None or n.originator_version > gt)
            and (lte is None or n.originator_version <= lte)
        ]
        if desc:
            selected.reverse()
        return selected[:limit] if limit is not None else selected


class JetStreamAggregateRecorder(JetStreamRecorder, AggregateRecorder):
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self._run(self._insert(stored_events, None))
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return self._run(self._select_events(originator_id, gt, lte, desc, limit))


class JetStreamApplicationRecorder(JetStreamAggregateRecorder, ApplicationRecorder):
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._run(self._insert(stored_events, kwargs.get("tracking")))

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        if start is None:
            first = 1
        else:
            first = start if inclusive_of_start else start + 1
        return self._run(self._select_notifications(max(first, 1), limit, stop, topics))

    async def _select_notifications(
        self, seq: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> list[Notification]:
        out: list[Notification] = []
        wanted = set(topics)
        while len(out) < limit and (stop is None or seq <= stop):
            batch = limit - len(out)
            if wanted:
                batch = max(batch, 100)  # some will be filtered out: read ahead
            if stop is not None:
                batch = min(batch, stop - seq + 1)
            msgs, pending = await self.log.page(self.subjects.notifications, seq, batch)
            for m in msgs:
                if stop is not None and m.seq > stop:
                    return out
                n = codec.decode_notification(m.subject, m.seq, m.headers, m.data)
                if wanted and n.topic not in wanted:
                    continue
                out.append(n)
                if len(out) == limit:
                    return out
            if not msgs or pending == 0:
                break
            seq = msgs[-1].seq + 1
        return out

    def max_notification_id(self) -> int | None:
        msg = self._run(self.log.last(self.subjects.notifications))
        return msg.seq if msg is not None else None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return JetStreamSubscription(recorder=self, gt=gt, topics=topics)

    async def _watch(self, cb: Any) -> Any:
        """A headers-only ordered consumer: JetStream tells us after a message is stored
        (a core subscription could fire before the store and leave us waiting)."""
        js = self.log.nc.jetstream(timeout=self.log.timeout)
        return await js.subscribe(
            self.subjects.notifications,
            stream=self.stream,
            cb=cb,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            headers_only=True,
        )


class JetStreamSubscription(ListenNotifySubscription[JetStreamApplicationRecorder]):
    """Pulls notifications with select_notifications (bounded batches, so a slow reader
    applies back-pressure) and wakes up when JetStream reports a newly stored event."""

    def __init__(
        self,
        recorder: JetStreamApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        # Watch before the first pull so nothing stored in between goes unnoticed.
        self._watcher = recorder._run(recorder._watch(self._on_stored))
        super().__init__(recorder=recorder, gt=gt, topics=topics)

    async def _on_stored(self, msg: Msg) -> None:
        notified = getattr(self, "_has_been_notified", None)
        if notified is not None:
            notified.set()

    def stop(self) -> None:
        super().stop()
        watcher, self._watcher = self._watcher, None
        conn = self._recorder.log.conn
        if watcher is not None and not conn.closed:
            try:
                conn.run(watcher.unsubscribe())
            except Exception:  # noqa: BLE001 - the consumer expires on its own
                log.debug("unsubscribe failed", exc_info=True)


class JetStreamTrackingRecorder(JetStreamRecorder, TrackingRecorder):
    def insert_tracking(self, tracking: Tracking) -> None:
        self._run(self._insert([], tracking))

    def max_tracking_id(self, application_name: str) -> int | None:
        subject = self.subjects.tracking(application_name)
        msg = self._run(self.log.last(subject))
        if msg is None:
            return None
        return codec.decode_tracking_id(msg.subject, msg.seq, msg.headers)


class JetStreamProcessRecorder(
    JetStreamTrackingRecorder, JetStreamApplicationRecorder, ProcessRecorder
):
    """Events and the tracking record of the notification that caused them go in one
    atomic batch: a process application never records effects twice or loses its place."""
