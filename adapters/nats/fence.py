"""Fencing: the server, not trust, refuses the writes of a role holder that was replaced.

A holder that takes a role publishes a `RoleClaimed` event on the role's fence subject
`catalyst.ops.role_claimed.<role>` in the record stream; its sequence is the holder's
fencing token. Its decisions carry `Nats-Expected-Last-Subject-Sequence: <token>` with
`Nats-Expected-Last-Subject-Sequence-Subject: catalyst.ops.role_claimed.<role>`, so the
server stores one only while that claim is still the role's last: once a newer holder has
claimed the role, an older holder's writes fail (10071, raised here as FencedOffError).

The claim is an ordinary event (consumers of `catalyst.ops.>` decode it and pass it by; the
log keeps who took which role when), published on a per-role subject rather than its
class's own. The header names the subject as the stream stores it, so a simulated run's
subject prefix (a stream subject transform) does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

import nats.js.errors

from adapters.nats.event_log import (
    EXPECTED_SUBJECT_SEQ,
    EventLog,
    decode_msg,
    encode,
    stream_for,
)
from domain.errors import CatalystError, ConcurrencyError
from domain.events import Event, RoleClaimed

FENCE_ROOT = RoleClaimed.subject_template + "."
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class LeaseLostError(CatalystError):
    """This instance does not hold the role's lease (or no longer does): stop deciding."""


class FencedOffError(LeaseLostError, ConcurrencyError):
    """The log refused a write because a newer holder has claimed the role since."""


def fence_subject(role: str) -> str:
    return f"{FENCE_ROOT}{role}"


async def claim_fence(log: EventLog, role: str, instance: str,
                      acquisition: tuple[float, int]) -> int:
    """Publish the RoleClaimed of `acquisition` (lease bucket epoch, key revision) on the
    role's fence subject; returns its sequence, the fencing token.

    Claims only go forward: the write is conditional on the claim it read being still the
    last, and refused (LeaseLostError) when that claim is from a later acquisition than
    ours, i.e. we stalled between taking the lease and fencing, and the lease went on to
    another instance. A retry of our own claim whose ack was lost finds it and returns it.
    """
    subject = fence_subject(role)
    stream = log.names.record
    epoch, revision = acquisition
    claim = RoleClaimed(
        # One id per acquisition: a retried claim is dropped by the server as a duplicate.
        event_id=uuid5(NAMESPACE_URL, f"catalyst:{stream}:role_claimed:{role}:{epoch}:"
                                      f"{revision}"),
        type="RoleClaimed", occurred_at=datetime.now(UTC), correlation_id=f"role:{role}",
        role=role, instance=instance, lease_epoch=epoch, lease_revision=revision)
    _, data, headers = encode(claim)
    while True:
        try:
            last = await log.api(f"last claim of role {role}",
                                 lambda: log.js.get_last_msg(stream, subject))
        except nats.js.errors.NotFoundError:
            last = None
        if last is not None:
            try:
                prev = decode_msg(last.data or b"", last.headers)
                theirs = (prev.lease_epoch, prev.lease_revision)  # type: ignore[attr-defined]
                who = prev.instance  # type: ignore[attr-defined]
            except (CatalystError, AttributeError):
                theirs, who = (0.0, 0), "?"  # not a claim: nothing to respect
            if theirs == acquisition:
                return last.seq or 0
            if theirs > acquisition:
                raise LeaseLostError(
                    f"role {role}: instance {who} claimed it at sequence {last.seq} from a "
                    f"later acquisition (revision {theirs[1]}) than ours ({revision})")
        headers[EXPECTED_SUBJECT_SEQ] = str(last.seq if last else 0)
        headers[EXPECTED_SUBJECT] = subject
        try:
            return await log.publish_raw(subject, data, headers)
        except ConcurrencyError:
            continue  # another claim landed since we looked: judge it


class FencedWriter:
    """Publishes one role holder's decisions so that the log refuses them once a newer
    holder has claimed the role.

    Guarantees: an event published here is stored only if, when the server stores it, the
    last claim on the role's fence subject is still this holder's (sequence `token`). A
    newer holder publishes its claim before it decides anything, so from that claim on no
    write of an older holder lands, and every write of an older holder that did land is
    before it: a new holder that rebuilds its state from the log after acquiring sees all of
    them. A refused write raises FencedOffError (after calling `on_refused`). Publishes are
    retried through leader elections with the same Nats-Msg-Id, so a write whose ack was
    lost is not stored twice. The server checks the fence before duplicates: a retry, after
    a takeover, of a write that did land is refused like any other; the write is in the log
    all the same, before the new claim, where the new holder sees it.

    Does not guarantee: anything about effects outside the log (a broker order, an email):
    guard those with `guard` (RoleLease.check) and the broker's own idempotency
    (client_order_id); nor anything about events published another way. `publish_many`
    sends one atomic batch (stored whole or refused whole); a server without atomic batches
    gets them one at a time, in order, and a takeover in the middle then keeps the ones
    stored before the new claim. Only record-stream events can be fenced (the fence
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
