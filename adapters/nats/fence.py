"""Fencing: the server, not trust, refuses the writes of a role holder that was replaced.

A holder that takes a role writes a marker to `catalyst.ops.fence.<role>` in the record
stream; the marker's sequence is its fencing token. Its decisions carry
`Nats-Expected-Last-Subject-Sequence: <token>` with
`Nats-Expected-Last-Subject-Sequence-Subject: catalyst.ops.fence.<role>`, so the server
stores one only while that marker is still the role's last: once a newer holder has written
its own, an older holder's writes fail (10071, raised here as FencedOffError).

Markers are plain JSON, not events (no Catalyst-Type): log readers skip them as they skip
dead letters, and they stay in the log as the record of who took the role when. The header
names the subject as the stream stores it, so a simulated run's subject prefix (a stream
subject transform) does not matter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import nats.js.errors

from adapters.nats.event_log import (
    EXPECTED_SUBJECT_SEQ,
    MSG_ID_HEADER,
    EventLog,
    encode,
    stream_for,
)
from domain.errors import CatalystError, ConcurrencyError
from domain.events import Event

FENCE_ROOT = "catalyst.ops.fence."
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class LeaseLostError(CatalystError):
    """This instance does not hold the role's lease (or no longer does): stop deciding."""


class FencedOffError(LeaseLostError, ConcurrencyError):
    """The log refused a write because a newer holder has claimed the role since."""


def fence_subject(role: str) -> str:
    return f"{FENCE_ROOT}{role}"


async def claim_fence(log: EventLog, role: str, instance: str,
                      acquisition: tuple[float, int]) -> int:
    """Write the marker of `acquisition` (lease bucket epoch, key revision) on the role's
    fence subject; returns its sequence, the fencing token.

    Markers only go forward: the write is conditional on the marker it read being still the
    last, and refused (LeaseLostError) when that marker is from a later acquisition than
    ours, i.e. we stalled between taking the lease and fencing, and the lease went on to
    another instance. A retry of our own marker whose ack was lost finds it and returns it.
    """
    subject = fence_subject(role)
    stream = log.names.record
    epoch, revision = acquisition
    marker = json.dumps({"role": role, "instance": instance, "epoch": epoch,
                         "revision": revision}).encode()
    while True:
        try:
            last = await log.api(f"last fence marker of {role}",
                                 lambda: log.js.get_last_msg(stream, subject))
        except nats.js.errors.NotFoundError:
            last = None
        if last is not None:
            try:
                prev = json.loads(last.data or b"{}")
                theirs = (float(prev["epoch"]), int(prev["revision"]))
            except (ValueError, KeyError, TypeError):
                prev, theirs = {}, (0.0, 0)  # not a marker of ours: nothing to respect
            if theirs == acquisition:
                return last.seq or 0
            if theirs > acquisition:
                raise LeaseLostError(
                    f"role {role}: instance {prev.get('instance')} fenced it at sequence "
                    f"{last.seq} from a later acquisition (revision {theirs[1]}) than ours "
                    f"({revision})")
        headers = {EXPECTED_SUBJECT_SEQ: str(last.seq if last else 0),
                   EXPECTED_SUBJECT: subject,
                   MSG_ID_HEADER: f"fence:{stream}:{role}:{epoch}:{revision}"}
        try:
            return await log.publish_raw(subject, marker, headers)
        except ConcurrencyError:
            continue  # another marker landed since we looked: judge it


class FencedWriter:
    """Publishes one role holder's decisions so that the log refuses them once a newer
    holder has claimed the role.

    Guarantees: an event published here is stored only if, when the server stores it, the
    last marker on the role's fence subject is still this holder's (sequence `token`). A
    newer holder writes its marker before it decides anything, so from that marker on no
    write of an older holder lands, and every write of an older holder that did land is
    before it: a new holder that rebuilds its state from the log after acquiring sees all of
    them. A refused write raises FencedOffError (after calling `on_refused`). Publishes are
    retried through leader elections with the same Nats-Msg-Id, so a write whose ack was
    lost is not stored twice (the server's duplicate check comes before the fence check:
    a retry of a write that landed before a takeover reports its sequence).

    Does not guarantee: anything about effects outside the log (a broker order, an email):
    guard those with `guard` (RoleLease.check) and the broker's own idempotency
    (client_order_id); nor anything about events published another way. `publish_many`
    sends one atomic batch (stored whole or refused whole); a server without atomic batches
    gets them one at a time, in order, and a takeover in the middle then keeps the ones
    stored before the new marker. Only record-stream events can be fenced (the fence
    subject lives there); market data is refused with ValueError.

    `guard`, called before every publish, raises when the holder already knows it lost the
    role (so it does not even ask the server)."""

    def __init__(self, log: EventLog, role: str, token: int,
                 guard: Callable[[], None] | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.role = role
        self.token = token
        self.subject = fence_subject(role)
        self._guard = guard
        self._on_refused = on_refused

    async def publish(self, event: Event) -> int:
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Iterable[Event]) -> list[int]:
        """Store `events` in order, all or none (one atomic batch), while the fence is ours."""
        events = list(events)
        if not events:
            return []
        if self._guard is not None:
            self._guard()
        encoded = []
        for event in events:
            subject, data, headers = encode(event)
            if stream_for(subject, self.log.names) != self.log.names.record:
                # The check reads the fence subject in the stream the message goes to.
                raise ValueError(f"{event.type}: a fenced write goes to the record stream, "
                                 f"where the fence is, not to {subject}")
            headers[EXPECTED_SUBJECT_SEQ] = str(self.token)
            headers[EXPECTED_SUBJECT] = self.subject
            encoded.append((subject, data, headers))
        try:
            if len(encoded) == 1:
                return [await self.log.publish_raw(*encoded[0])]
            return await (await self.log.send_encoded(encoded, atomic_min=2)).wait()
        except ConcurrencyError:
            shown = ", ".join(f"{e.type} {e.event_id}" for e in events[:3])
            more = f" and {len(events) - 3} more" if len(events) > 3 else ""
            reason = (f"fenced off: a newer holder claimed role {self.role} after fencing "
                      f"token {self.token}; the log refused {shown}{more}")
            if self._on_refused is not None:
                self._on_refused(reason)
            raise FencedOffError(f"role {self.role}: {reason}") from None
