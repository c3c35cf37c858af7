"""In-process dispatch of events to the pure handlers and the effect adapters.

Simulations and backtests run every handler in one process, in a fixed order, breadth
first: the same inputs give the same outputs, byte for byte, and nothing waits on the
network. Every event is still recorded to JetStream (pipelined, in order), so a backtest
log replays and audits exactly like a live one. Live trading runs the same handlers through
one sequencer that dispatches through this same pipeline (adapters.runtime.sequencer).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from domain.events import Event
from handlers.base import Handler

if TYPE_CHECKING:
    from adapters.nats.event_log import EventLog, PendingPublish
    from adapters.runtime.config_watcher import SettingsHolder
    from config.settings import Settings

log = logging.getLogger("catalyst.pipeline")


class Effect(Protocol):
    """An adapter that acts on the world in reaction to events (broker, mail, ...)."""

    name: str
    subjects: tuple[str, ...]

    async def on_event(self, event: Event, settings: Settings) -> list[Event]: ...


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def routes(subjects: Iterable[str], subject: str) -> bool:
    return any(subject_matches(p, subject) for p in subjects)


class Recorder:
    """Buffers events and writes them to the log in order, many in flight at once.

    A full chunk is put on the wire and left to the server while the handlers go on with
    the next ones. Only one chunk is in flight (its acks come in before the next is sent, so
    the log keeps the dispatch order); while the server is busy the handlers compute ahead,
    up to `max_buffered` events, instead of waiting for it. `flush` returns once every
    event added so far is stored.
    """

    def __init__(self, event_log: EventLog | None, chunk: int = 1000) -> None:
        self.log = event_log
        # 1000: one JetStream atomic batch per stream per chunk (the server's batch limit).
        self.chunk = chunk
        self.max_buffered = 8 * chunk  # events computed ahead of the server, at most
        self.buffer: list[Event] = []
        self.recorded = 0
        self.order = 0  # dispatch position, recorded with each event
        # Off where several processes write one log (`catalyst serve --role`): positions
        # from different counters would contradict each other; the stream order stands.
        self.stamp = True
        self._inflight: tuple[PendingPublish, int] | None = None

    def add(self, event: Event) -> None:
        self.order += 1
        if self.log is not None:
            self.buffer.append(event)

    async def _settle(self) -> None:
        if self._inflight is not None:
            pending, n = self._inflight
            self._inflight = None
            await pending.wait()
            self.recorded += n

    async def _send(self) -> None:
        assert self.log is not None
        await self._settle()
        batch, self.buffer = self.buffer[: self.chunk], self.buffer[self.chunk:]
        first = self.order - len(self.buffer) - len(batch) + 1
        orders = range(first, first + len(batch)) if self.stamp else None
        self._inflight = (await self.log.send_many(batch, orders), len(batch))
        # One turn of the loop lets the client's flusher hand the chunk to the socket now,
        # so the server stores it while the handlers compute the next one.
        await asyncio.sleep(0)

    async def flush(self) -> None:
        if self.log is None:
            return
        while self.buffer:
            await self._send()
        await self._settle()

    async def maybe_flush(self) -> None:
        n = len(self.buffer)
        if n < self.chunk:
            return
        inflight = self._inflight
        if inflight is not None and n < self.max_buffered and not inflight[0].acked():
            # The server is still storing the previous chunk: keep computing rather than
            # wait on it (one chunk in flight keeps the order; the buffer is capped). One
            # turn of the loop lets the client read the acks that did come in.
            await asyncio.sleep(0)
            if not inflight[0].acked():
                return
        await self._send()


class Pipeline:
    def __init__(
        self,
        settings: SettingsHolder,
        handlers: Sequence[Handler],
        effects: Sequence[Effect] = (),
        recorder: Recorder | None = None,
        observers: Sequence[Callable[[Event], None]] = (),
    ) -> None:
        self.settings = settings
        self.handlers = list(handlers)
        self.effects = list(effects)
        self.recorder = recorder or Recorder(None)
        self.observers = list(observers)
        # (type, subject shape) -> who receives it; bars of every symbol share one entry.
        self._routes: dict[object, tuple[list[Handler], list[Effect]]] = {}
        self._by_type: dict[type[Event], bool] = {}  # True: routed by type alone
        self.dispatched = 0

    def _route(self, event: Event) -> tuple[list[Handler], list[Effect]]:
        # Routing depends on the type and the subject; market data subjects differ only in
        # their last token (the symbol), which no handler filters on, so the type is the key.
        # Other subjects are fixed per type unless the template names a symbol.
        cls = type(event)
        by_type = self._by_type.get(cls)
        if by_type is None:
            tpl = cls.subject_template
            by_type = self._by_type[cls] = tpl.startswith("catalyst.md.") or "{" not in tpl
        key: object = cls if by_type else (cls, event.subject)
        found = self._routes.get(key)
        if found is None:
            subject = event.subject
            hs = [h for h in self.handlers if routes(h.subjects, subject) and h.wants(event)]
            es = [e for e in self.effects if routes(e.subjects, subject)]
            found = self._routes[key] = (hs, es)
        return found

    async def submit(self, event: Event, recorded: bool = False) -> None:
        """Dispatch an event and everything it causes, breadth first. `recorded`: the event
        is already in the log (the real-time sequencer took it from there); only what it
        causes is recorded."""
        # Runs for every bar: attribute look-ups hoisted, and the queue made only when an
        # event causes another (most bars cause nothing).
        recorder, observers, route = self.recorder, self.observers, self._route
        queue: deque[Event] | None = None
        ev = event
        skip_record = recorded
        while True:
            self.dispatched += 1
            if skip_record:
                skip_record = False
            else:
                recorder.add(ev)
            for obs in observers:
                obs(ev)
            settings = self.settings.current
            handlers, effects = route(ev)
            for h in handlers:
                out = h.handle(ev, settings)
                if out:
                    if queue is None:
                        queue = deque(out)
                    else:
                        queue.extend(out)
            for e in effects:
                out = await e.on_event(ev, settings)
                if out:
                    if queue is None:
                        queue = deque(out)
                    else:
                        queue.extend(out)
            if not queue:
                break
            ev = queue.popleft()
        await recorder.maybe_flush()

    def handlers_for(self, event: Event) -> list[Handler]:
        """The handlers `event` is dispatched to, in order."""
        return self._route(event)[0]

    async def submit_many(self, events: Iterable[Event]) -> None:
        for ev in events:
            await self.submit(ev)
