"""eventsourcing persistence on NATS JetStream: aggregate events are NATS messages.

Use it like any eventsourcing persistence module:

    PERSISTENCE_MODULE=adapters.nats.es_jetstream
    CATALYST_NATS_URL=nats://host:4222         (or NATS_URL)
    CATALYST_ES_STREAM=CATALYST                 stream holding the records (default CATALYST)
    CATALYST_ES_SUBJECT_PREFIX=catalyst         subjects are <prefix>.es.<app>.<originator_id>
    CATALYST_ES_ATOMIC=true                     false: allow non-atomic multi-event inserts
                                                on servers without atomic batch (< 2.12)
    CATALYST_ES_TIMEOUT=5                       seconds per NATS request
    CREATE_TABLE=true                           create the stream if missing and switch on
                                                allow_direct / allow_atomic on it
    CATALYST_NATS_USER / _PASSWORD / _TOKEN / _CREDS   optional authentication

Each variable may be prefixed with the application's name (`ORDERS_CATALYST_ES_STREAM`),
as eventsourcing's Environment does. If the stream is missing it is created as the record
stream: every `<prefix>.<root>.>` of `domain.events.RECORD_SUBJECT_ROOTS`, file storage,
deletes and purges denied, direct get and atomic batches allowed.

Records (see codec.py): an event is a message on `<prefix>.es.<app>.<originator_id>` whose
payload is the stored state and whose headers carry originator id, version and topic.
Snapshots go to `<prefix>.es.<app>.snapshots.<id>`, tracking records to
`<prefix>.es.<app>.tracking.<upstream_app>`.

Guarantees and limits:
- Version conflicts raise eventsourcing's IntegrityError, enforced by the server with
  `Nats-Expected-Last-Subject-Sequence`. Versions of an aggregate must be written in
  increasing order: writing an older version after a newer one (even one never recorded)
  is refused, unlike SQL recorders (snapshots taken out of order are refused too).
- An insert of several messages (several events, several aggregates, events + tracking
  record) is one atomic batch: all stored, with contiguous sequences, or none. At most
  1000 messages per insert (the server's batch limit), and at most 50 batches in flight
  per stream (we retry while the server sheds load). Batches do not carry `Nats-Msg-Id`
  (the server refuses it in atomic batches); duplicates are prevented by the expected
  sequence instead. With CATALYST_ES_ATOMIC=false a conflict part-way through a
  multi-event insert leaves it half-written (PartialWriteError, an IntegrityError).
- Notification id = the JetStream stream sequence. It is strictly increasing and never
  reused (deletes and purges are denied), and assigned at commit, so a reader never sees a
  lower id appear later. It has GAPS: the stream also holds every other Catalyst event,
  other applications' events, snapshots and tracking records. eventsourcing's readers
  (notification log, subscriptions, process applications) handle gaps.
- A publish that times out has an unknown outcome (OperationalError): re-read before
  retrying. Reads use direct get: read-after-write consistent on a single server; on a
  replicated stream a follower may answer slightly behind, which can only cause a
  spurious IntegrityError, never a lost write.
- Tracking records are kept (one message per processed notification): the record stream
  denies purges, so they cannot be rolled up.
"""

from adapters.nats.es_jetstream.factory import JetStreamFactory
from adapters.nats.es_jetstream.recorders import (
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamProcessRecorder,
    JetStreamSubscription,
    JetStreamTrackingRecorder,
    PartialWriteError,
)

Factory = JetStreamFactory

__all__ = [
    "Factory",
    "JetStreamAggregateRecorder",
    "JetStreamApplicationRecorder",
    "JetStreamFactory",
    "JetStreamProcessRecorder",
    "JetStreamSubscription",
    "JetStreamTrackingRecorder",
    "PartialWriteError",
]
