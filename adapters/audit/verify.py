"""`catalyst replay --verify`: the proof that the log explains every decision.

Verification re-runs fresh pure handlers (runtime.composition.build_handlers) over the recorded
log, in the recorded order:

* An event some pure handler emits (`SignalGenerated`, `OrderApproved`, `DailyPnLChanged`,
  `AlertRaised`...; anything carrying a causation id whose type a handler of the set emits)
  is *derived*: the fresh handlers must produce it, with the same id and the same content,
  before it appears in the log.
* Everything else is an *input* and is fed as recorded: market data, clock ticks, start
  requests, broker outcomes (`OrderSubmitted`, `OrderFilled`, `OrderCanceled`,
  `EmergencyStopCompleted`...), alert delivery results, `TradingResumed`, config events,
  signals read from a backtest's SIGNALS.csv (no strategy handler in that set).

Every recorded event goes to the handlers it routes to (derived ones too: the handler that
emitted it skips it by id, the others evolve on it, exactly as in the pipeline). Outputs wait
in an "expected" map by event id until their recorded copy arrives. Divergences:

    differs        recorded content != what the handlers decide now
    unexpected     recorded as derived, but no handler decides it
    missing        a handler decides it, but it is not in the log
    before_cause   recorded before the event that caused it
    out_of_order   a dispatch position lower than the one before it
    gap            dispatch positions missing (an event removed from the log)

Settings: the config recorded by `RunStarted` (falls back to the config in force now, said
so in the output), then every `ConfigChanged` applied as it comes. Handler set and broker
name: from `RunStarted`, else inferred (`SessionStarted.broker`; the scanner ran if the log
has a `ScanCompleted`, or no `ScanRequested` at all).

Windows (`--date`, `--from/--to`, `--session`) are spans of the log in its order: from the
first event dated inside the window to the first event dated after it. Verifying a window
replays everything before it into the handlers' state first (evolve only, no decisions).


Past ~400 lines: `Verifier` is one state machine over the log (expected decisions, early
copies, dispatch order, helper processes); split, its invariants would live in several
places."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from adapters.audit import verify_helper
from adapters.audit.divergence import Divergence, VerifyResult, _link, field_diffs
from adapters.audit.settings_history import SETTINGS_EVENTS, Plan, next_settings
from adapters.audit.window import AFTER, BEFORE, IN, Phases, Window
from adapters.nats.log_source import (
    ENVELOPE,
    EventEnvelope,
    LogEntry,
    LogSource,
    NatsSource,
    bulk_gc,
)
from domain.events import (
    REGISTRY,
    Event,
    EventDecodeError,
    decode_event,
)
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings


# Handlers a verification on more than one core re-runs in helper processes (see
# adapters.audit.verify_helper): ones that take market data, the bulk of the log. The main process
# then reads market data as envelopes, decoding one only for a handler of its own that does
# not `ignores` it.
MARKET_DATA_HANDLERS = frozenset({"scanner", "daily_pnl", "executor"})


def helper_groups(jobs: int) -> list[frozenset[str]]:
    """For `jobs` 2, one helper: the scanner, the costliest by far. From 3 on, every market
    data handler is in a helper, the scanner in its own."""
    if jobs <= 1:
        return []
    if jobs == 2:
        # The daily P&L and the executor stay here, decoding only the bars they do not
        # ignore: the two processes' loads come out about even (docs/replay-audit.md).
        return [frozenset({"scanner"})]
    return [frozenset({"scanner"}), MARKET_DATA_HANDLERS - {"scanner"}]


class Router:
    """Which handlers an event goes to, as the pipeline routes it (cached per type, or per
    type and subject when the subject names something a route could filter on)."""

    def __init__(self, handlers: list[Handler]) -> None:
        self.handlers = handlers
        self._routes: dict[object, list[Handler]] = {}

    def route_market_data(self, type_name: str) -> list[Handler]:
        """The route of a market data type, by name (no event needed: see `route`)."""
        cls = REGISTRY[type_name]
        found = self._routes.get(cls)
        if found is None:
            from adapters.runtime.pipeline import routes

            subject = cls.subject_template.format(symbol="ANY")
            found = self._routes[cls] = [
                h for h in self.handlers if routes(h.subjects, subject)
                and (h.accepts is None or type_name in h.accepts)]
        return found

    def route(self, ev: Event) -> list[Handler]:
        # Market data subjects differ only in the symbol, which no handler filters on: one
        # route per type. Other subjects are fixed per type unless they name a symbol.
        cls = type(ev)
        found = self._routes.get(cls)
        if found is not None:
            return found
        from adapters.runtime.pipeline import routes

        subject = ev.subject
        tpl = cls.subject_template
        by_type = tpl.startswith("catalyst.md.") or "{" not in tpl
        key: object = cls if by_type else (cls, subject)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = [h for h in self.handlers
                                         if routes(h.subjects, subject) and h.wants(ev)]
        return found


def default_jobs() -> int:
    """Two processes where there are two cores to run them (on two cores a third gives
    nothing: measured with bench/replay.py --jobs 3)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def decode_stored(type_name: str, raw: bytes | None) -> Event | str:
    """An event read as its envelope, decoded in full from its stored bytes as a full read
    decodes it (log_source: the typed validator, then `decode_event`); or, when its payload
    does not decode, why not (a verification reports it and goes on)."""
    try:
        return REGISTRY[type_name].__pydantic_validator__.validate_json(raw or b"")
    except ValueError:
        try:
            return decode_event(raw or b"")
        except EventDecodeError as e:
            return str(e)


def undecodable(type_name: str, event_id: UUID, at: int, reason: str) -> Divergence:
    """A market data event whose envelope reads but whose payload does not decode. Said the
    same way whichever process decoded it: by its id and its position in the read."""
    return Divergence("undecodable", type_name, event_id,
                      f"does not decode ({reason}); position {at} of this read")


def _helper_main(plan: Plan, names: frozenset[str]) -> Callable[[int, int], None]:
    """The helper process's loop: the named handlers over the events forwarded to it."""

    def run(fd_in: int, fd_out: int) -> None:
        from adapters.audit.verify_helper import (
            APPLY,
            CONFIG,
            END,
            HANDLE,
            SYNC,
            UNDECODABLE,
            cpu_seconds,
            peak_rss_mb,
            read_frames,
            write_frame,
        )

        route = Router([h for h in plan.handlers() if h.name in names]).route
        settings = plan.settings
        registry = REGISTRY
        for frame in read_frames(fd_in):
            out: list[Any] = []
            for item in frame:
                kind = item[0]
                if kind == HANDLE or kind == APPLY:
                    at = item[1]
                    ev = decode_stored(item[2], item[3])
                    if isinstance(ev, str):
                        out.append((UNDECODABLE, at, item[2], item[3], ev))
                    elif kind == HANDLE:
                        for h in route(ev):
                            for i, o in enumerate(h.handle(ev, settings)):
                                out.append((at, h.name, i, o.type, o.event_id.bytes,
                                            o.to_json()))
                    else:
                        for h in route(ev):
                            h.apply(ev)
                elif kind == CONFIG:
                    ev = registry[item[2]].__pydantic_validator__.validate_json(item[3])
                    settings = next_settings(settings, ev)
                elif kind == SYNC:
                    out.append(("sync", item[1]))
                elif kind == END:
                    out.append(("end", peak_rss_mb(), cpu_seconds()))
                    write_frame(fd_out, out)
                    return
            if out:
                write_frame(fd_out, out)

    return run


# What is remembered of a recent event: type, occurred_at, causation id, phase, position.
Recent = tuple[str, datetime, UUID | None, int, int]


# An expected decision: the event a handler emitted here, or its JSON from a helper.
Expected = Event | bytes


def _event_of(x: Expected) -> Event:
    return decode_event(x) if isinstance(x, bytes) else x


class Verifier:
    def __init__(self, plan: Plan, window: Window | None = None, recent_limit: int = 50_000,
                 max_reported: int = 200, jobs: int = 1) -> None:
        self.settings = plan.settings
        handlers = plan.handlers()
        self.derived_types: set[str] = set()
        for h in handlers:
            self.derived_types |= h.emits
        # (helper, the router of its handlers)
        self.helpers: list[tuple[verify_helper.Helper, Router]] = []
        away: set[str] = set()
        names = {h.name for h in handlers}
        groups = [g & names for g in helper_groups(jobs) if g & names]
        if verify_helper.available():
            for group in groups:
                helper = verify_helper.Helper(_helper_main(plan, group))
                self.helpers.append((helper, Router([h for h in handlers if h.name in group])))
                away |= group
        self.handlers = [h for h in handlers if h.name not in away]
        self._local = Router(self.handlers)
        # Where one process calls each handler at an event: ties in the report follow it.
        self._rank = {h.name: i for i, h in enumerate(handlers)}
        # With helpers, market data is read here as its envelope: its stored bytes go to the
        # helpers (which decode and validate it), and a handler here decodes it only when it
        # does not `ignores` it (the daily P&L wants the bars of symbols it holds, the
        # executor any bar once a position is due to close).
        # (Market data nobody takes is read in full: its payload is checked all the same.)
        self.envelopes = frozenset(
            name for name, cls in REGISTRY.items()
            if cls.subject_template.startswith("catalyst.md.")
            and name not in self.derived_types
            and any(r.route_market_data(name) for _, r in self.helpers))
        self.phases = Phases(window or Window())
        self.result = VerifyResult(notes=list(plan.notes))
        self.max_reported = max_reported
        self.done = False
        self._at = 0  # position of the entry being fed: where a decision is made
        # Decisions awaiting their recorded copy: (decision, handler, report key).
        self._expected: dict[UUID, tuple[Expected, str, tuple[int, ...]]] = {}
        # Recorded derived events nobody decided yet, each copy with its position.
        self._early: dict[UUID, list[tuple[LogEntry, int]]] = {}
        self._orphans: dict[UUID, list[LogEntry]] = {}  # cause id -> events recorded before it
        # Reported as recorded before their cause: id -> the position where that was found.
        self._reported_early: dict[UUID, int] = {}
        # Recent events: id.int -> (type, occurred_at, causation id, phase, position), in two
        # generations of `recent_limit` (bounded memory without per-event eviction; int keys
        # hash in C where UUID.__hash__ is Python).
        self._recent: dict[int, Recent] = {}
        self._recent_old: dict[int, Recent] = {}
        self._recent_limit = recent_limit
        self._max_order: int | None = None
        self._holes: list[list[Any]] = []  # [first, last, entry after the hole]
        self._found: list[tuple[tuple[int, ...], int, Divergence]] = []
        self._undecodable_at: set[int] = set()  # positions reported as undecodable
        self._found_seq = 0

    # --- plumbing ----------------------------------------------------------------------------

    def _recent_get(self, eid: UUID) -> Recent | None:
        k = eid.int
        found = self._recent.get(k)
        return found if found is not None else self._recent_old.get(k)

    def _remember(self, ev: Event, phase: int) -> None:
        k = ev.event_id.int
        recent = self._recent
        if k in recent or k in self._recent_old:
            return
        if len(recent) >= self._recent_limit:
            self._recent_old = recent
            recent = self._recent = {}
        recent[k] = (ev.type, ev.occurred_at, ev.causation_id, phase, self._at)

    def chain(self, cause: UUID | None, first: Event | None = None, depth: int = 8,
              upto: int | None = None) -> tuple[str, ...]:
        """The causation chain as known at position `upto` (default: the entry being fed),
        so a divergence reads the same however late a helper's decision came."""
        out = []
        if first is not None:
            out.append(_link(first.type, first.occurred_at, first.event_id))
        upto = self._at if upto is None else upto
        while cause is not None and len(out) < depth:
            info = self._recent_get(cause)
            if info is None or info[4] > upto:
                out.append(f"{cause} (not in the replayed part of the log)")
                break
            out.append(_link(info[0], info[1], cause))
            cause = info[2]
        return tuple(out)

    def _report(self, d: Divergence, key: tuple[int, ...] | None = None) -> None:
        """Count `d`; keep the first `max_reported` in the order one process finds them.

        `key`: (position, 0) for what feeding the entry at that position finds (the
        default: the entry being fed), (position, 1, handler rank, output index) for what a
        decision made there finds; then as found. A helper's decisions arrive late, so the
        order is restored here, not assumed."""
        self.result.divergences += 1
        r = d.recorded
        if r is not None and isinstance(r.event, EventEnvelope) and r.raw is not None:
            with contextlib.suppress(EventDecodeError):  # shown in full, when it decodes
                d.recorded = r._replace(event=decode_event(r.raw))
        self._found_seq += 1
        self._found.append((key or (self._at, 0), self._found_seq, d))
        if len(self._found) >= 2 * self.max_reported:
            self._found.sort(key=lambda f: f[:2])
            del self._found[self.max_reported:]

    def _check_order(self, entry: LogEntry) -> None:
        """Dispatch positions must come 1, 2, 3...: a late one is out of order, a hole that
        never fills is a gap (reported at the end)."""
        order = entry.order
        if order is None:
            return
        top = self._max_order
        if top is None or order == top + 1:
            self._max_order = order
            return
        if order > top:
            self._holes.append([top + 1, order - 1, entry])
            self._max_order = order
            return
        ev = entry.event
        self._report(Divergence("out_of_order", ev.type, ev.event_id,
                                f"dispatch position {order} recorded after {top}",
                                recorded=entry))
        for h in self._holes:
            if h[0] <= order <= h[1]:
                if h[0] == h[1]:
                    self._holes.remove(h)
                elif order == h[0]:
                    h[0] += 1
                elif order == h[1]:
                    h[1] -= 1
                else:
                    self._holes.append([order + 1, h[1], h[2]])
                    h[1] = order - 1
                return

    # --- the check ---------------------------------------------------------------------------

    def feed_many(self, batch: Iterable[LogEntry]) -> None:
        for e in batch:
            if self.done:
                return
            self.feed(e)
        for helper, _ in self.helpers:
            if not helper.closed:
                helper.flush()
                self._take(helper.take())

    def feed(self, entry: LogEntry) -> None:
        ev = entry.event
        t = ev.type
        phase = self.phases.of(ev)
        if phase == AFTER:
            self._drain(entry)
            return
        self._at += 1
        helpers = self.helpers
        if t in SETTINGS_EVENTS:
            self.settings = next_settings(self.settings, ev)
            for helper, _ in helpers:
                helper.send((verify_helper.CONFIG, 0, t, entry.raw or ev.to_json()))
        order = entry.order
        if order is not None and order - 1 == self._max_order:
            self._max_order = order  # the common case of _check_order, inline
        else:
            self._check_order(entry)
        settings = self.settings
        envelope = type(ev) is EventEnvelope
        if phase == BEFORE:
            self.result.context += 1
            self._remember(ev, BEFORE)
            if envelope:
                for h, full in self._not_ignoring(entry, settings):
                    h.apply(full)
            else:
                for h in self._local.route(ev):
                    h.apply(ev)
            for helper, router in helpers:
                if router.route_market_data(t) if envelope else router.route(ev):
                    helper.send((verify_helper.APPLY, self._at, t, entry.raw or ev.to_json()))
            return
        self.result.events += 1
        eid, cid = ev.event_id, ev.causation_id
        if cid is not None and self._recent_get(cid) is None:
            self._orphans.setdefault(cid, []).append(entry)
        self._remember(ev, IN)
        waiting = self._orphans.pop(eid, None) if self._orphans else None
        if waiting:
            for w in waiting:
                self._reported_early.setdefault(w.event.event_id, self._at)
                self._report(Divergence(
                    "before_cause", w.event.type, w.event.event_id,
                    f"recorded before its cause {t} {eid}", recorded=w,
                    chain=self.chain(cid, ev)))
        if cid is not None and t in self.derived_types:
            cause = self._recent_get(cid)
            if cause is not None and cause[3] == BEFORE:
                pass  # decided before the window: taken as recorded
            else:
                self.result.derived += 1
                exp = self._expected.pop(eid, None)
                if exp is None:
                    self._early.setdefault(eid, []).append((entry, self._at))
                else:
                    self._compare(exp[0], exp[1], entry, (self._at, 0))
        for helper, router in helpers:
            if router.route_market_data(t) if envelope else router.route(ev):
                helper.send((verify_helper.HANDLE, self._at, t, entry.raw or ev.to_json()))
        if envelope:
            for h, full in self._not_ignoring(entry, settings):
                self._handle(h, full, settings)
            return
        for h in self._local.route(ev):
            self._handle(h, ev, settings)

    def _not_ignoring(self, entry: LogEntry, settings: Settings
                      ) -> Iterator[tuple[Handler, Event]]:
        """This process's handlers of an entry read as its envelope, with the event decoded
        in full (once) for those that do not `ignores` it; the others `skip` it."""
        env = entry.event
        t = env.type
        full: Event | str | None = None
        if t not in self.envelopes:  # read in full, yet an envelope: it did not decode
            full = self._decode(entry)
        for h in self._local.route_market_data(t):
            if h.ignores(t, env.occurred_at, env.symbol, settings):  # type: ignore[attr-defined]
                h.skip(env.event_id)
                continue
            if full is None:
                full = self._decode(entry)
            if not isinstance(full, str):
                yield h, full

    def _decode(self, entry: LogEntry) -> Event | str:
        """`decode_stored`, reporting an event that does not decode (no handler takes it)."""
        full = decode_stored(entry.event.type, entry.raw)
        if isinstance(full, str):
            self._undecodable(self._at, entry.event.type, entry.raw, full)
        return full

    def _undecodable(self, at: int, type_name: str, raw: bytes | None, reason: str) -> None:
        if at in self._undecodable_at:
            return  # found here and in a helper: once
        self._undecodable_at.add(at)
        env = ENVELOPE.validate_json(raw or b"")
        self._report(undecodable(type_name, env.event_id, at, reason), (at, 0))

    def _handle(self, h: Handler, ev: Event, settings: Settings) -> None:
        outs = h.handle(ev, settings)
        if outs:
            at = self._at
            for i, o in enumerate(outs):
                self._decided(o.event_id, o.type, h.name, at, i, o)

    def _take(self, decisions: list[verify_helper.Decision]) -> None:
        for d in decisions:
            if d[0] == verify_helper.UNDECODABLE:
                _, at, type_, raw, reason = d
                self._undecodable(at, type_, raw, reason)
                continue
            at, handler, index, type_, eid, data = d
            self._decided(UUID(bytes=eid), type_, handler, at, index, data)

    def _decided(self, oid: UUID, type_: str, handler: str, at: int, index: int,
                 o: Expected) -> None:
        """`handler` decided `o` (its output `index`) handling the entry at position `at`.

        A helper's decisions arrive late: everything is judged by where they were made. The
        decision takes the first recorded copy; if that was recorded before `at`, it was
        recorded before it was decided. Any other copy is left over ("unexpected")."""
        if type_ not in self.derived_types:
            self.derived_types.add(type_)
        key = (at, 1, self._rank.get(handler, 0), index)
        copies = self._early.get(oid)
        if not copies:
            self._expected[oid] = (o, handler, key)
            return
        rec, rec_at = copies.pop(0)
        if not copies:
            del self._early[oid]
        if rec_at > at:  # recorded after the decision: one process compares it there
            self._compare(o, handler, rec, (rec_at, 0))
            return
        self._compare(o, handler, rec, key)
        reported = self._reported_early.get(oid)
        if reported is None or reported > at:
            ev = _event_of(o)
            self._report(Divergence(
                "before_cause", type_, oid, "recorded before the handler decided it",
                handler=handler, recorded=rec, chain=self.chain(ev.causation_id, ev, upto=at)),
                key)

    def _compare(self, expected: Expected, handler: str, entry: LogEntry,
                 key: tuple[int, ...]) -> None:
        rec = entry.event
        exp = expected if isinstance(expected, bytes) else expected.to_json()
        # The stored bytes first (the common case); then the recorded event re-serialised,
        # for a log written by another client with other formatting.
        if exp != entry.raw and exp != rec.to_json():
            exp_ev = _event_of(expected)
            diffs = field_diffs(exp_ev, rec)
            what = ", ".join(k for k, _, _ in diffs[:6]) or "serialisation"
            self._report(Divergence("differs", rec.type, rec.event_id,
                                    f"recorded content differs ({what})", handler=handler,
                                    expected=exp_ev, recorded=entry,
                                    chain=self.chain(rec.causation_id, rec, upto=key[0])),
                         key)

    def _drain(self, entry: LogEntry) -> None:
        """After the window: only the recorded copies of decisions still awaited."""
        for helper, _ in self.helpers:
            if helper.in_flight:
                self._take(helper.sync())  # every decision made inside the window, first
        if not self._expected:
            self.done = True
            return
        exp = self._expected.pop(entry.event.event_id, None)
        if exp is not None:
            self.result.derived += 1
            self._compare(exp[0], exp[1], entry, (self._at, 0))

    def close(self) -> None:
        """Stop the helpers without waiting for them: on errors and interruptions."""
        for helper, _ in self.helpers:
            helper.kill()

    def finish(self) -> VerifyResult:
        for helper, _ in self.helpers:
            self._take(helper.close())
        if self.helpers:
            self.result.helper_peak_rss_mb = sum(h.peak_rss_mb or 0 for h, _ in self.helpers)
            self.result.helper_cpu_seconds = sum(h.cpu_seconds or 0 for h, _ in self.helpers)
        # What the end of the log shows, after everything found on the way, in log order
        # (by where it was recorded, or decided) however late a helper's decisions came.
        end = self._at + 1
        left = sorted(((rec_at, eid, entry) for eid, copies in self._early.items()
                       for entry, rec_at in copies), key=lambda c: c[0])
        for rec_at, eid, entry in left:
            if eid in self._reported_early:
                continue
            ev = entry.event
            cause_known = (ev.causation_id is not None
                           and self._recent_get(ev.causation_id) is not None)
            self._report(Divergence(
                "unexpected", ev.type, eid,
                "recorded as decided by a handler, but no handler decides it"
                + ("" if cause_known else f"; its cause {ev.causation_id} is not in the log"),
                recorded=entry, chain=self.chain(ev.causation_id, ev)), (end, 0, rec_at))
        for eid, (o, handler, key) in sorted(self._expected.items(), key=lambda kv: kv[1][2]):
            exp = _event_of(o)
            self._report(Divergence(
                "missing", exp.type, eid, "decided by the handlers but not in the log",
                handler=handler, expected=exp, chain=self.chain(exp.causation_id, exp)),
                (end, 1, *key))
        for first, last, entry in sorted(self._holes, key=lambda h: h[0]):
            n = last - first + 1
            ev = entry.event
            self._report(Divergence(
                "gap", ev.type, ev.event_id,
                f"{n} event{'s' if n > 1 else ''} missing from the log before this one "
                f"(dispatch position{'s' if n > 1 else ''} {first}"
                + (f"..{last})" if n > 1 else ")"), recorded=entry), (end, 2, first))
        self._holes.clear()
        self._early.clear()
        self._expected.clear()
        self._found.sort(key=lambda f: f[:2])
        self.result.reported = [d for _, _, d in self._found[:self.max_reported]]
        return self.result


async def verify(source: LogSource, plan: Plan, window: Window | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 jobs: int | None = None) -> VerifyResult:
    """`jobs` processes (None: `default_jobs()`); more than one runs the costliest handler
    in a helper process (adapters.audit.verify_helper), with the same result."""
    v = Verifier(plan, window, jobs=default_jobs() if jobs is None else jobs)
    if isinstance(source, NatsSource):
        source.envelopes = v.envelopes
        source.keep_undecoded = True  # reported, the same way with any number of processes
    try:
        with bulk_gc():
            async for batch in source.batches():
                v.feed_many(batch)
                if on_batch:
                    on_batch(len(batch))
                if v.done:
                    break
        return v.finish()
    finally:
        v.close()
