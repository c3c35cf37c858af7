"""The real-time runtime's one dispatch order: the sequencer.

Paper and live trading decide exactly as a backtest does. Every input (a bar, a broker
update, a clock tick, a start request, a config change, a delivery result) is dispatched one
at a time, in the order it arrives, through the same `Pipeline` the simulated runs use:
breadth first, every pure handler in the composition's fixed order, the risk guard judging a
daily P&L change in the same step that computes it. The recorder stamps every event it
writes with its dispatch position (`Catalyst-Order`), so `replay --verify` re-runs a live log
in the order it was decided, across both streams and across restarts.

Inputs reach the sequencer two ways:

* from this process (`submit`): the market-data and order-update pumps, the scheduler, the
  effects (broker outcomes, alert delivery results), reconciliation, the API, and commands
  sent to the inbox (`catalyst session start`, `resume`; adapters.nats.inbox). These are
  recorded by the sequencer itself, stamped, so their position is exact;
* from the log (the `sequencer` durable consumer): events another process published to a
  record subject directly. They are dispatched as they arrive and are not re-recorded; a
  verification places them among the other record events by their place in the stream and
  against market data by their time, which can differ from where they were dispatched (one
  sent between a minute's close and its bar's arrival is decided before the bar, verified
  after it). The CLI and the API send through the inbox, which is exact.

A unit (an input and everything it causes) is written before the next input is dispatched,
and `submit` returns once it is stored, so a caller acks its own source only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import nats.js.errors

from adapters.nats.event_log import Consumer, EventLog, StoredEvent
from adapters.nats.inbox import serve_inbox
from adapters.nats.log_source import MARKERS
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.pipeline import Pipeline, Recorder, routes
from domain.events import Event
from handlers.base import Handler

log = logging.getLogger("catalyst.sequencer")

CONSUMER = "sequencer"  # the durable consumer of events published by other processes
# Market data older than this is not replayed into the handlers at a start (the scanner's
# and the strategy's windows are shorter; a bar missed while down is not decided later).
MD_HISTORY = timedelta(days=3)

Compute = Callable[[], Sequence[Event]]


def merge_streams(record: Sequence[StoredEvent], md: Sequence[StoredEvent]
                  ) -> list[StoredEvent]:
    """Both streams in dispatch order: by the stamps where both carry one, else by time
    (market data first on a tie, markers at once: as the log reader merges them)."""
    out: list[StoredEvent] = []
    i = j = 0
    while i < len(record) and j < len(md):
        r, m = record[i], md[j]
        if m.order is not None and r.order is not None:
            md_first = m.order < r.order
        elif r.event.type in MARKERS:
            md_first = False
        else:
            md_first = m.event.occurred_at <= r.event.occurred_at
        if md_first:
            out.append(m)
            j += 1
        else:
            out.append(r)
            i += 1
    out.extend(record[i:])
    out.extend(md[j:])
    return out


class Sequencer:
    """Start with `await Sequencer.open(...)`, then `start()`; `submit` from anywhere."""

    def __init__(self, event_log: EventLog, holder: SettingsHolder,
                 handlers: Sequence[Handler], last_order: int = 0, name: str = CONSUMER,
                 whole_system: bool = True) -> None:
        self.log = event_log
        self.holder = holder
        self.handlers = list(handlers)
        self.name = name
        # The whole system in this process: breadth-first dispatch, positions stamped. A
        # process running some roles (`catalyst serve --role`) shares the log with others:
        # its handlers take every event in the log's order and nothing is stamped.
        self.whole_system = whole_system
        self.recorder = Recorder(event_log)
        self.recorder.order = last_order  # stamps go on from the log's last one
        self.recorder.stamp = whole_system
        # Services: what each handler's decisions are fenced by (its role's writer, see
        # adapters.nats.fence), and the events of the unit in hand with their role.
        self.role_of: dict[str, str] = {}
        self.writers: dict[str, Any] = {}
        self._unit: list[tuple[str | None, Event]] = []
        self.rebuild_failures: list[tuple[str, Event, BaseException]] = []
        # Every id dispatched here or rebuilt from the log: the consumer of other processes'
        # events skips ours when the log hands them back, and an input submitted twice (a
        # restarted scheduler's start request, a broker update backfilled again) is dropped.
        self.known: set[UUID] = set()
        # The latest time of the data decided on (CATALYST_CLOCK=data: adapters.runtime.serve).
        self.data_time: datetime | None = None
        self.pipeline = Pipeline(holder, self.handlers, recorder=self.recorder,
                                 observers=[self._saw])
        self._lock = asyncio.Lock()
        self.running = False
        self.consumers: list[Consumer] = []
        self.dispatched_units = 0

    @classmethod
    async def open(cls, event_log: EventLog, holder: SettingsHolder,
                   handlers: Sequence[Handler], now: datetime, name: str = CONSUMER,
                   whole_system: bool = True) -> Sequencer:
        """Rebuild every handler from the log (both streams, in dispatch order), without
        deciding anything; what other processes published since this sequencer last ran
        is left to its consumer, which decides it."""
        floor = await _ack_floor(event_log, event_log.names.record, name)
        end = await event_log.last_seq(event_log.names.record)
        record: list[StoredEvent] = []
        pending = 0
        async for stored in event_log.read(["catalyst.>"]):
            if stored.seq > end:
                break
            # Not ours and not yet taken by the consumer: it is delivered again, and decided.
            if floor is not None and stored.order is None and stored.seq > floor:
                pending += 1
                continue
            record.append(stored)
        md = [s async for s in event_log.read(["catalyst.md.>"], start_time=now - MD_HISTORY,
                                              stream=event_log.names.market_data)]
        history = merge_streams(record, md)
        last_order = max((s.order for s in history if s.order is not None), default=0)
        seq = cls(event_log, holder, handlers, last_order, name, whole_system)
        for stored in history:
            ev = stored.event
            seq._saw(ev)
            for h in seq.handlers:
                if routes(h.subjects, stored.subject):
                    try:
                        h.rebuild((ev,))
                    except Exception as e:  # noqa: BLE001 - reported; the start goes on
                        # One event a handler cannot take (it raised on it live too) must
                        # not keep the runtime from ever starting again, positions open.
                        log.error("rebuild: %s failed on %s %s: %r", h.name, ev.type,
                                  ev.event_id, e)
                        seq.rebuild_failures.append((h.name, ev, e))
        seq._record_start = None if floor is not None else end + 1
        log.info("sequencer rebuilt from %d events (dispatch position %d); %d published "
                 "while down left to decide", len(history), last_order, pending)
        return seq

    _record_start: int | None = None
    _inbox: Any = None
    _md: Consumer | None = None

    async def start(self, md_subjects: Sequence[str] = ("catalyst.md.>",),
                    inbox: bool = True) -> None:
        self.running = True
        if inbox:
            self._inbox = await serve_inbox(self.log, self.submit)
        # Events other processes publish (a person's command sent straight to the log, a
        # bar from an external feed). Ours come back too and are skipped by id.
        self.consumers.append(await self.log.consume(
            self.name, ["catalyst.>"], self._from_log, stream=self.log.names.record,
            max_ack_pending=64, start_seq=self._record_start, ack_wait=3.0))
        if md_subjects:
            stream = self.log.names.market_data
            # A bar missed while down is stale: market data is consumed from now on.
            md_name = f"{self.name}_md"
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.log.api(f"deleting consumer {md_name}",
                                   lambda: self.log.js.delete_consumer(stream, md_name))
            self._md = await self.log.consume(
                md_name, list(md_subjects), self._from_log, stream=stream,
                max_ack_pending=4096, deliver_new=True)
            self.consumers.append(self._md)

    async def stop(self) -> None:
        if self._inbox is not None:
            with contextlib.suppress(Exception):
                await self._inbox.unsubscribe()
            self._inbox = None
        for c in self.consumers:
            await c.stop()
        self.consumers.clear()
        self.running = False

    async def submit(self, events: Iterable[Event], role: str | None = None) -> None:
        """Dispatch `events` (in order, each with everything it causes) and record them;
        returns once stored. An id already known here is dropped. `role`: whose input it
        is (its writes are fenced by that role's lease, among services)."""
        batch = list(events)
        if batch:
            await self._enqueue(lambda: batch, recorded=False, role=role)

    async def submit_computed(self, compute: Compute, role: str | None = None) -> None:
        """Like `submit`, for inputs that must be computed at their dispatch position: a
        config reload swaps the settings in force exactly where its ConfigChanged is
        recorded, so nothing before it is decided under the new settings."""
        await self._enqueue(compute, recorded=False, role=role)

    async def _from_log(self, event: Event) -> list[Event]:
        if self.whole_system and event.event_id in self.known:
            # Dispatched here already (ours, come back). Among services, what this process
            # decided comes back too and goes to its other handlers now, at its place in the
            # log (the one that decided it skips it by id).
            return []
        if not self.whole_system and self._md is not None \
                and not event.subject.startswith("catalyst.md."):
            # Among services, a decision another process made on a bar is stored after that
            # bar: take the bars already stored first, as a verification merges them (by
            # time, market data first), so this process decides on what that one saw.
            await self._md_caught_up()
        await self._enqueue(lambda: (event,), recorded=True)
        return []

    async def _md_caught_up(self, patience: float = 2.0) -> None:
        assert self._md is not None
        # Bounded: an ordering nicety must never stall a decision (NATS away, a flood).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(patience):
                while True:
                    info = await self._md.info()
                    if not info.num_pending and not info.num_ack_pending:
                        return
                    await asyncio.sleep(0.005)

    def _saw(self, ev: Event) -> None:
        self.known.add(ev.event_id)
        if ev.type not in MARKERS and (self.data_time is None or ev.occurred_at > self.data_time):
            self.data_time = ev.occurred_at

    def _decide_here(self, ev: Event, recorded: bool, role: str | None) -> None:
        """Among services: `ev` to this process's handlers, their decisions recorded and not
        dispatched further here; every handler takes events in the log's order, its own
        decisions included, exactly as a verification re-runs them."""
        self._saw(ev)
        if not recorded:
            self._unit.append((role, ev))
        settings = self.holder.current
        for h in self.pipeline.handlers_for(ev):
            for out in h.handle(ev, settings):
                self._saw(out)
                self._unit.append((self.role_of.get(h.name, role), out))

    async def _write_unit(self) -> None:
        unit, self._unit = self._unit, []
        i = 0
        while i < len(unit):
            # Runs of one role go together, through that role's fence when it has one.
            role = unit[i][0]
            j = i
            while j < len(unit) and unit[j][0] == role:
                j += 1
            events = [ev for _, ev in unit[i:j]]
            writer = self.writers.get(role) if role is not None else None
            if writer is not None:
                await writer.publish_many(events)
            else:
                await self.log.publish_many(events)
            i = j

    async def _enqueue(self, compute: Compute, recorded: bool, role: str | None = None
                       ) -> None:
        if not self.running:
            raise RuntimeError("the sequencer is not running")
        # One unit at a time, in the order submitters arrive (asyncio.Lock is FIFO); the
        # unit runs in the submitter's task, without a hop through a queue and a task of
        # its own (the stop's critical path goes through here).
        async with self._lock:
            try:
                for ev in compute():
                    if ev.event_id in self.known and not (recorded and not self.whole_system):
                        continue
                    if self.whole_system:
                        await self.pipeline.submit(ev, recorded=recorded)
                    else:
                        self._decide_here(ev, recorded, role)
                if self.whole_system:
                    await self.recorder.flush()
                else:
                    await self._write_unit()
            except Exception:
                log.exception("sequencer: dispatch failed")
                raise
            self.dispatched_units += 1


async def _ack_floor(event_log: EventLog, stream: str, name: str) -> int | None:
    try:
        info = await event_log.api(f"consumer {stream}/{name} info",
                                   lambda: event_log.js.consumer_info(stream, name))
    except nats.js.errors.NotFoundError:
        return None
    return info.ack_floor.stream_seq if info.ack_floor else 0


def guard_handlers(handlers: Sequence[Handler], on_error: Callable[[Handler, Event,
                                                                      BaseException], Any]
                   ) -> None:
    """A handler that raises on one event must not stop the others, nor the sequencer: the
    event is reported (`on_error`) and the handler decides nothing on it."""
    for h in handlers:
        inner = h.handle

        def handle(ev: Event, settings: Any, _inner: Any = inner, _h: Handler = h
                   ) -> list[Event]:
            try:
                return _inner(ev, settings)
            except Exception as e:  # noqa: BLE001 - reported by on_error
                on_error(_h, ev, e)
                return []

        h.handle = handle  # type: ignore[method-assign]
