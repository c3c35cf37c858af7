"""How eventsourcing records become NATS messages: subjects and headers.

Subjects (4 tokens for aggregate events, so `<prefix>.es.<app>.*` selects exactly the
application sequence and nothing else):

    <prefix>.es.<app>.<originator_id>               aggregate events (the notification log)
    <prefix>.es.<app>.<purpose>.<originator_id>     other aggregate recorders ("snapshots")
    <prefix>.es.<app>.tracking.<upstream_app>       tracking records (process applications)

The message payload is the stored event's `state` bytes exactly as the mapper produced
them (JSON from the default transcoder; compressed/encrypted if so configured). Everything
else travels in headers, so a plain NATS subscriber can route on them without decoding.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote
from uuid import UUID

from eventsourcing.persistence import DataError, Notification, StoredEvent, Tracking

ORIGINATOR_ID = "Es-Originator-Id"
ID_TYPE = "Es-Id-Type"  # "uuid" or "str": restores the originator id's Python type
VERSION = "Es-Originator-Version"
TOPIC = "Es-Topic"
TRACKING_APP = "Es-Tracking-Application"
TRACKING_ID = "Es-Notification-Id"

EVENTS = "events"
TRACKING = "tracking"

# Tokens that go into a subject verbatim. Anything else (dots, wildcards, spaces,
# non-ASCII) is encoded as "~" + url-safe base64; "~" is not in this set, so an encoded
# token can never collide with a verbatim one.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def token(value: str) -> str:
    """A NATS subject token for an arbitrary string (injective, readable when it can be)."""
    if _SAFE_TOKEN.fullmatch(value):
        return value
    raw = base64.urlsafe_b64encode(value.encode("utf-8")).rstrip(b"=").decode("ascii")
    return "~" + raw


def id_token(originator_id: UUID | str) -> str:
    return str(originator_id) if isinstance(originator_id, UUID) else token(originator_id)


@dataclass(frozen=True)
class Subjects:
    """The subjects one application's recorders write and read."""

    prefix: str  # "catalyst" in production; tests use a fresh prefix per stream
    app_name: str

    @property
    def base(self) -> str:
        return f"{self.prefix}.es.{token(self.app_name or 'default')}"

    def aggregate(self, originator_id: UUID | str, purpose: str = EVENTS) -> str:
        if purpose == EVENTS:
            return f"{self.base}.{id_token(originator_id)}"
        return f"{self.base}.{token(purpose)}.{id_token(originator_id)}"

    @property
    def notifications(self) -> str:
        """Filter for the application sequence: aggregate events only."""
        return f"{self.base}.*"

    def tracking(self, upstream_app: str) -> str:
        return f"{self.base}.{TRACKING}.{token(upstream_app)}"


def event_headers(event: StoredEvent) -> dict[str, str]:
    oid = event.originator_id
    is_uuid = isinstance(oid, UUID)
    return {
        ORIGINATOR_ID: str(oid) if is_uuid else quote(str(oid), safe=""),
        ID_TYPE: "uuid" if is_uuid else "str",
        VERSION: str(int(event.originator_version)),
        TOPIC: quote(event.topic, safe=":._-/"),
    }


def tracking_headers(tracking: Tracking) -> dict[str, str]:
    return {
        TRACKING_APP: quote(tracking.application_name, safe=""),
        TRACKING_ID: str(int(tracking.notification_id)),
    }


def tracking_payload(tracking: Tracking) -> bytes:
    # Readable for anyone looking at the raw log; the headers are what we parse.
    return json.dumps({"application_name": tracking.application_name,
                       "notification_id": int(tracking.notification_id)}).encode()


def _required(headers: dict[str, str] | None, key: str, subject: str, seq: int) -> str:
    value = (headers or {}).get(key)
    if value is None:
        raise DataError(f"message {seq} on {subject} has no {key} header: not an es record")
    return value


def decode_notification(subject: str, seq: int, headers: dict[str, str] | None,
                 data: bytes) -> Notification:
    raw_id = _required(headers, ORIGINATOR_ID, subject, seq)
    id_type = _required(headers, ID_TYPE, subject, seq)
    originator_id: UUID | str = UUID(raw_id) if id_type == "uuid" else unquote(raw_id)
    return Notification(
        id=seq,
        originator_id=originator_id,
        originator_version=int(_required(headers, VERSION, subject, seq)),
        topic=unquote(_required(headers, TOPIC, subject, seq)),
        state=data,
    )


def as_stored_event(n: Notification) -> StoredEvent:
    return StoredEvent(
        originator_id=n.originator_id,
        originator_version=n.originator_version,
        topic=n.topic,
        state=n.state,
    )


def decode_tracking_id(subject: str, seq: int, headers: dict[str, str] | None) -> int:
    return int(_required(headers, TRACKING_ID, subject, seq))
