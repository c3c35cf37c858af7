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

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

from domain.events import Event

if TYPE_CHECKING:
    from config.settings import Settings

_SEEN_LIMIT = 10_000


class Handler:
    name: ClassVar[str] = "handler"
    # NATS filter subjects this handler consumes (wildcards allowed).
    subjects: ClassVar[tuple[str, ...]] = ()
    # Event types it reacts to; None means every event on its subjects.
    accepts: ClassVar[frozenset[str] | None] = None

    def __init__(self) -> None:
        self._seen: OrderedDict[Any, None] = OrderedDict()
        self._undecided: set[Any] = set()  # applied, but decide raised: decide on redelivery

    def wants(self, event: Event) -> bool:
        return self.accepts is None or event.type in self.accepts

    def evolve(self, event: Event) -> None:  # noqa: B027 - optional hook
        """Update state from an event. Default: stateless."""

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        return []

    def apply(self, event: Event) -> bool:
        """Evolve once per event id; returns False when the event was already applied."""
        if event.event_id in self._seen:
            return False
        self._seen[event.event_id] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        self.evolve(event)
        return True

    def handle(self, event: Event, settings: Settings) -> list[Event]:
        if not self.wants(event):
            return []
        if not self.apply(event) and event.event_id not in self._undecided:
            return []
        self._undecided.add(event.event_id)
        outputs = self.decide(event, settings)
        self._undecided.discard(event.event_id)
        for out in outputs:
            self.apply(out)
        return outputs

    def rebuild(self, events: Any) -> None:
        """Rebuild state from the log on start, without deciding anything."""
        for ev in events:
            if self.wants(ev):
                self.apply(ev)
