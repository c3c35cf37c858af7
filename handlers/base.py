"""The shape of every handler: pure state + decision, driven by the runtime.

    evolve(event)              how the handler's state follows the log (idempotent per event)
    decide(event, settings)    what to emit in response; no I/O, no clock, no randomness

`handle` applies the event, decides, and applies its own outputs at once, so the next
decision already sees them. When those outputs come back through the log they are skipped
by event id, so a handler never counts its own decision twice. If `decide` raises, the event
stays applied but is remembered as undecided: its redelivery does not evolve again, it only
decides again (and is forgotten once a decision succeeds), so no decision is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from domain.events import Event

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from config.settings import Settings

_SEEN_LIMIT = 10_000


class Handler:
    name: ClassVar[str] = "handler"
    # Event types `decide` may return. Verification treats them as derived (re-decided and
    # compared, never taken from the log); a test checks it against the code.
    emits: ClassVar[frozenset[str]] = frozenset()
    # NATS filter subjects this handler consumes (wildcards allowed).
    subjects: ClassVar[tuple[str, ...]] = ()
    # Event types it reacts to; None means every event on its subjects.
    accepts: ClassVar[frozenset[str] | None] = None

    def __init__(self) -> None:
        # Applied event ids, as `UUID.int`: hashing a UUID object is a Python-level call, and
        # this runs for every event every handler sees. Two generations bound the memory: an
        # id is remembered for at least the last _SEEN_LIMIT events applied (at most twice
        # that), far longer than a redelivery can lag.
        self._seen: set[int] = set()
        self._seen_old: set[int] = set()
        self._undecided: set[int] = set()  # applied, but decide raised: decide on redelivery

    def wants(self, event: Event) -> bool:
        return self.accepts is None or event.type in self.accepts

    def evolve(self, event: Event) -> None:  # noqa: B027 - optional hook
        """Update state from an event. Default: stateless."""

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        return []

    def ignores(self, type_name: str, occurred_at: datetime, symbol: str | None,
                settings: Settings) -> bool:
        """True when an event known only by its type, time and symbol would change nothing
        here and decide nothing under `settings`: `handle` would return [] and leave the
        state as it is. A reader may then skip decoding it for this handler (`skip`).
        Default: never."""
        return False

    def skip(self, event_id: UUID) -> None:
        """Take an event this handler `ignores` without it: remembered as seen, so a copy
        delivered again is dropped exactly as `handle` would drop it. One whose decision
        had failed is decided now, as nothing: `handle` would forget it was undecided."""
        key = event_id.int
        if not self._first_time(key):
            self._undecided.discard(key)

    def _first_time(self, key: int) -> bool:
        """Remember `key`; False when it was already remembered."""
        seen = self._seen
        if key in seen or key in self._seen_old:
            return False
        seen.add(key)
        if len(seen) >= _SEEN_LIMIT:
            self._seen_old, self._seen = seen, set()
        return True

    def apply(self, event: Event) -> bool:
        """Evolve once per event id; returns False when the event was already applied."""
        if not self._first_time(event.event_id.int):
            return False
        self.evolve(event)
        return True

    def handle(self, event: Event, settings: Settings) -> list[Event]:
        accepts = self.accepts
        if accepts is not None and event.type not in accepts:
            return []
        key = event.event_id.int
        seen = self._seen
        if key not in seen and key not in self._seen_old:  # _first_time, inlined: hot path
            seen.add(key)
            if len(seen) >= _SEEN_LIMIT:
                self._seen_old, self._seen = seen, set()
            self.evolve(event)
            redelivered = False
        elif key in self._undecided:
            redelivered = True
        else:
            return []
        try:
            outputs = self.decide(event, settings)
        except BaseException:
            self._undecided.add(key)
            raise
        if redelivered:
            self._undecided.discard(key)
        for out in outputs:
            self.apply(out)
        return outputs

    def rebuild(self, events: Any) -> None:
        """Rebuild state from the log on start, without deciding anything."""
        for ev in events:
            if self.wants(ev):
                self.apply(ev)
