"""The real-time runtime: paper and live trading.

Every pure handler decides in one process-wide order, the sequencer's (adapters.runtime
.sequencer: the same Pipeline and composition as a backtest, every event stamped with its
dispatch position), so a paper or live log verifies like a backtest's. Around it, each effect
is a durable JetStream consumer that acts on what was recorded and hands its outcome back to
the sequencer as an input: the broker effect (one message at a time), alert delivery (naks to
retry while SMTP is down, so the queue lives in the log). Also here: the broker's
order-update stream, live market data, the market-hours scheduler, reconciliation at start
and the config watcher, all feeding the sequencer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import nats.js.errors
from rich.console import Console
from rich.panel import Panel

from adapters.alerts.delivery import AlertDelivery
from adapters.broker.execution import ExecutionService
from adapters.broker.port import BrokerPort, BrokerUnavailable
from adapters.broker.sim import SimulatedBroker
from adapters.broker.translate import (
    FeedLedger,
    OrderRefs,
    catch_up,
    ledger_from_log,
    trade_update_to_events,
)
from adapters.nats.event_log import MD_PREFIX, Consumer, EventLog, Retry, log_context
from adapters.runtime.composition import AlertEffect, BrokerEffect, build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.roles import HANDLERS
from adapters.runtime.sequencer import CONSUMER, Sequencer, _ack_floor, guard_handlers
from adapters.runtime.simulation import XnysCalendar
from config.settings import Settings
from domain.calendar import NEW_YORK as XNYS_TZ
from domain.events import (
    AlertRaised,
    BarReceived,
    ClockTicked,
    EmergencyStopTriggered,
    Event,
    HandlerCrashLooping,
    NewsReceived,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    ReconciliationDiscrepancyFound,
    SessionStartRequested,
)
from domain.values import Bar, Headline, Side
from handlers.base import Handler
from handlers.executor import Executor, SubmitOrder
from projections.positions import PositionsProjection

log = logging.getLogger("catalyst.services")

Clock = Callable[[], datetime]
# What the broker's update stream records (translate.py); their ids derive from broker facts.
_BROKER_UPDATES = (OrderFilled, OrderPartiallyFilled, OrderCanceled)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _split(subjects: Sequence[str]) -> tuple[list[str], list[str]]:
    record = [s for s in subjects if not s.startswith(MD_PREFIX) and s != "catalyst.>"]
    md = [s for s in subjects if s.startswith(MD_PREFIX)]
    return record, md


@dataclass
class _ConsumerPlan:
    name: str
    subjects: list[str]
    stream: str
    cb: Callable[[Event], Awaitable[list[Event]]]
    max_ack_pending: int
    start_seq: int | None = None
    deliver_new: bool = False


@dataclass
class Services:
    """Start with `await services.start()`, stop with `await services.stop()`."""

    holder: SettingsHolder
    log: EventLog
    broker: BrokerPort
    handlers: list[Handler]
    clock: Clock = utc_now
    market_data: Any = None  # MarketDataPort for live bars/news; None: bars come via NATS
    schedule: bool = True
    reconcile: bool = True
    consumers: list[Consumer] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    service: ExecutionService | None = None
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep  # the scheduler's waits
    broker_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # None: every role (`catalyst run`); else the roles of `catalyst serve --role`.
    roles: tuple[str, ...] | None = None
    leases: dict[str, Any] = field(default_factory=dict)  # role -> RoleLease, held
    sequencer: Sequencer | None = None  # made by start() when handlers run here
    _handler_failures: dict[str, int] = field(default_factory=dict)

    def runs(self, role: str) -> bool:
        """Whether this process runs `role` (every role, in `catalyst run`)."""
        return self.roles is None or role in self.roles

    async def record(self, events: Sequence[Event], role: str | None = None) -> None:
        """An input from this process (`role`'s, fenced by its lease among services):
        through the sequencer when handlers run here, else straight to the log."""
        if not events:
            return
        if self.sequencer is not None:
            await self.sequencer.submit(events, role)
        else:
            await self.log.publish_many(events)

    def check_lease(self, role: str) -> None:
        """Before an act outside the log (a broker order, an email): raises LeaseLostError
        when this instance no longer holds `role`."""
        lease = self.leases.get(role)
        if lease is not None:
            lease.check()

    async def start(self) -> None:
        settings = self.holder.current
        sim = self.broker if isinstance(self.broker, SimulatedBroker) else None
        execution = self.runs("execution")
        whole = self.roles is None
        if self.handlers:
            # Every handler here decides in one order, the sequencer's (rebuilt from the log
            # first: nothing decides on a half-rebuilt state). The effects act on what was
            # recorded, each through its own consumer, and hand their outcomes back to it.
            guard_handlers(self.handlers, self._handler_failed)
            name = CONSUMER if whole else f"{CONSUMER}_{'_'.join(self.roles or ())}"
            self.sequencer = await Sequencer.open(self.log, self.holder, self.handlers,
                                                  self.clock(), name=name,
                                                  whole_system=whole)
            # Each decision is fenced by the lease of the role that made it.
            self.sequencer.writers = {r: lease.writer() for r, lease in self.leases.items()}
            self.sequencer.role_of = {n: r for r in self.roles or () for n in HANDLERS.get(r, ())}
        plans: list[_ConsumerPlan] = []
        on_broker: Callable[[Event], Awaitable[list[Event]]] | None = None
        broker_effect: BrokerEffect | None = None
        executor: Executor | None = None
        if execution:
            executor = next(h for h in self.handlers if isinstance(h, Executor))
            # The simulated broker fills the emergency close orders only on the next bar,
            # and that bar waits for the broker lock; verify polls (sleeps, lock held) would
            # only stall every broker action for ~3.5 s. Without them the stop stays pending
            # and the next bar's check_pending completes it (as the backtest pipeline does).
            polls: dict[str, Any] = {"verify_polls": 0} if sim is not None else {}
            self.service = ExecutionService(self.broker, clock=self.clock, **polls)
            broker_effect = effect = BrokerEffect(executor, self.service, sim)

            async def on_broker(ev: Event) -> list[Event]:
                async with self.broker_lock:  # one broker action at a time, in log order
                    self.check_lease("execution")
                    try:
                        out = await effect.on_event(ev, self.holder.current)
                    except BrokerUnavailable as e:
                        # Never dead-letter a broker command because the broker is away:
                        # keep it in the log and try again (its client_order_id makes that
                        # safe).
                        raise Retry(f"broker unreachable: {e}", delay=2.0) from None
                await self.record(out, "execution")
                return []

            effects_history: list[tuple[datetime, int, int, Event]] = []
            plans.append(await self._plan("broker_effects", _split(BrokerEffect.subjects)[0],
                                          on_broker, effects_history, max_ack_pending=1))
            for _, _, _, ev in effects_history:
                self.service.observe(ev)
            if sim is not None:
                plans.append(await self._plan_md("sim_broker_md", ["catalyst.md.bar.>"],
                                                 on_broker, None))
        if self.runs("alerts"):
            plans.append(await self._alert_plan(settings))
        if self.sequencer is not None:
            md_subjects = sorted({s for h in self.handlers for s in _split(h.subjects)[1]})
            # The inbox takes a person's commands: one process answers it, the one that
            # runs the session (or the whole system).
            await self.sequencer.start(md_subjects, inbox=self.runs("session"))
        for plan in plans:
            self.consumers.append(await self.log.consume(
                plan.name, plan.subjects, plan.cb, stream=plan.stream,
                max_ack_pending=plan.max_ack_pending, start_seq=plan.start_seq,
                deliver_new=plan.deliver_new))
        if on_broker is not None:
            await self._resume_unfinished_stop(on_broker)

        caught_up = False
        if execution and sim is None:
            assert executor is not None
            if self.reconcile:
                # Before the update stream: its fills must find the order's references.
                await self.record(await self.adopt_in_flight(executor), "execution")
            self._spawn("broker_updates", self._pump_trade_updates_from_log)
            event = getattr(self.broker, "caught_up", None)
            if event is not None:
                try:
                    await asyncio.wait_for(event.wait(), timeout=30.0)
                    caught_up = True
                except TimeoutError:
                    log.error("broker update stream did not catch up in 30 s; reconciliation "
                              "will report differences without adopting them")
        if execution:
            self._spawn("emergency_watch", self._emergency_watch)
        self._spawn("config_watch", self._config_watch)
        self._spawn("consumer_watch", self._watch_consumers)
        if execution and broker_effect is not None:
            if self.reconcile:
                # Adopt the broker's positions only once its missed updates are in the log,
                # or a fill made while we were down would be counted twice.
                await self.record(await self.reconciliation(adopt=caught_up), "execution")
            # The broker's account at start, so the risk guard sizes against it from the
            # first signal (then after every fill and every minute: BrokerEffect).
            async with self.broker_lock:
                start_snapshot = await broker_effect.account_snapshot(now=self.clock())
            await self.record(start_snapshot, "execution")
        if self.market_data is not None and self.runs("ingest"):
            self._spawn("market_data", self._pump_market_data)
        if self.schedule and self.runs("session"):
            self._spawn("scheduler", self._scheduler)

    async def _alert_plan(self, settings: Settings) -> _ConsumerPlan:
        delivery = AlertDelivery(settings, clock=self.clock)
        alert_effect = AlertEffect(delivery)

        async def on_alert(ev: Event) -> list[Event]:
            delivery.settings = self.holder.current  # recipients follow a config reload
            self.check_lease("alerts")
            out = await alert_effect.on_event(ev, self.holder.current)
            delay = delivery.retry_delay(out) if isinstance(ev, AlertRaised) else None
            await self.record(out, "alerts")
            if delay is not None:
                # The failure is recorded; the alert stays unacked: the log redelivers it.
                raise Retry(f"alert {ev.alert_id} delivery failed; retry", delay)
            return []

        plan = await self._plan("alert_delivery", ["catalyst.alert.>"], on_alert, [])
        # Delivery state from the whole log, not up to the ack floor: an alert still being
        # retried on one channel sits below the floor while the AlertSent of a channel that
        # took it lies past it; read only to the floor, that channel would send it again.
        async for stored in self.log.read(["catalyst.alert.sent", "catalyst.alert.failed"]):
            delivery.evolve(stored.event)
        return plan

    def _handler_failed(self, h: Handler, ev: Event, e: BaseException) -> None:
        log.error("handler %s failed on %s %s: %r", h.name, ev.type, ev.event_id, e,
                  extra=log_context(ev, h.name))
        self._handler_failures[h.name] = self._handler_failures.get(h.name, 0) + 1
        if self._handler_failures[h.name] in (1, 3):
            # A person hears of it; the sequencer goes on with the other handlers.
            asyncio.get_running_loop().create_task(self._crash_looping(
                h.name, self._handler_failures[h.name], f"{ev.type} {ev.event_id}: {e!r}"))

    async def _config_watch(self) -> None:
        """A config edit takes effect where its ConfigChanged is recorded. Among services,
        the session's process records it; the others apply their own copy of the files."""
        while True:
            await asyncio.sleep(0.5)
            if not self.holder.changed():
                continue
            if self.sequencer is None or not self.runs("session"):
                self.holder.reload(self.clock())
                continue

            def reload() -> list[Event]:
                ev = self.holder.reload(self.clock())
                return [ev] if ev is not None else []

            await self.sequencer.submit_computed(reload, "session")

    async def _resume_unfinished_stop(
        self, on_broker: Callable[[Event], Awaitable[list[Event]]]
    ) -> None:
        """An emergency stop triggered before a restart and never completed is driven again:
        its pending state lived in memory only, and positions must not stay open. (Unless a
        person has resumed trading since.)"""
        last: Event | None = None
        async for stored in self.log.read(["catalyst.risk.emergency_stop_triggered",
                                           "catalyst.risk.emergency_stop_completed",
                                           "catalyst.risk.trading_resumed"]):
            last = stored.event
        if isinstance(last, EmergencyStopTriggered):
            log.warning("emergency stop %s was not completed before the restart; resuming it",
                        last.event_id)
            with contextlib.suppress(Retry):
                await on_broker(last)

    async def _plan(self, name: str, subjects: list[str],
                    cb: Callable[[Event], Awaitable[list[Event]]],
                    history: list[tuple[datetime, int, int, Event]],
                    max_ack_pending: int = 256) -> _ConsumerPlan:
        """A record-stream consumer: history up to its ack floor, resume after it."""
        stream = self.log.names.record
        floor = await self._ack_floor(stream, name)
        end = floor if floor is not None else await self.log.last_seq(stream)
        if end:
            async for stored in self.log.read(subjects, start_seq=1, stream=stream):
                if stored.seq > end:
                    break
                history.append((stored.event.occurred_at, 1, stored.seq, stored.event))
        # A consumer new to an existing log starts after the history it was rebuilt from,
        # so history is applied, never re-decided.
        return _ConsumerPlan(name, subjects, stream, cb, max_ack_pending,
                             start_seq=None if floor is not None else end + 1)

    async def _plan_md(self, name: str, subjects: list[str],
                       cb: Callable[[Event], Awaitable[list[Event]]],
                       history: list[tuple[datetime, int, int, Event]] | None) -> _ConsumerPlan:
        """Market data: history from the recent past, then bars from now on (a bar missed
        while down is stale; deciding on it later would be worse than not at all)."""
        stream = self.log.names.market_data
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.log.api(f"deleting consumer {name}",
                               lambda: self.log.js.delete_consumer(stream, name))
        if history is not None:
            since = self.clock() - timedelta(days=3)
            async for stored in self.log.read(subjects, start_time=since, stream=stream):
                history.append((stored.event.occurred_at, 0, stored.seq, stored.event))
        return _ConsumerPlan(name, subjects, stream, cb, 4096, deliver_new=True)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[Any]]) -> None:
        self.tasks.append(asyncio.create_task(self._supervise(name, factory), name=name))

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[Any]]) -> None:
        """Restart a background loop that fails, with backoff; a person hears about it
        (HandlerCrashLooping, a CRITICAL alert) when it keeps failing."""
        failures = 0
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - supervised: logged, alerted, restarted
                if asyncio.get_running_loop().time() - started > 300:
                    failures = 0  # it ran for a while: a new streak
                failures += 1
                log.error("%s failed (%d in a row), restarting: %r", name, failures, e)
                if failures == 3:
                    await self._crash_looping(name, failures, repr(e))
                await asyncio.sleep(min(30.0, 0.5 * 2 ** failures))

    async def _crash_looping(self, name: str, failures: int, error: str) -> None:
        ev = HandlerCrashLooping(
            event_id=uuid4(), type="HandlerCrashLooping", occurred_at=self.clock(),
            correlation_id="ops", handler=name, failures=failures, error=error[:500])
        with contextlib.suppress(Exception):
            await self.record([ev])

    async def _watch_consumers(self) -> None:
        """A handler whose messages keep failing (naked again and again) is crash-looping."""
        flagged: set[str] = set()
        while True:
            await asyncio.sleep(2.0)
            for c in self.consumers:
                n = c.stats.consecutive_failures
                if n >= 5 and c.name not in flagged:
                    flagged.add(c.name)
                    await self._crash_looping(c.name, n, c.stats.last_error)
                elif n == 0:
                    flagged.discard(c.name)

    async def _pump_trade_updates_from_log(self) -> None:
        since, recorded, ledger = await self._recorded_broker_updates()
        await self._pump_trade_updates(since, recorded, ledger)

    async def _ack_floor(self, stream: str, name: str) -> int | None:
        return await _ack_floor(self.log, stream, name)

    # --- around the handlers ---------------------------------------------------------------

    async def adopt_in_flight(self, executor: Executor) -> list[Event]:
        """Orders in flight at a hard stop (approved and sent, the submission never
        recorded) are ours: their client_order_id derives from a recorded approval. Each one
        the broker holds is recorded as submitted, with the event (and id) the executor
        would have emitted, so reconciliation does not take it for a stranger and its fills
        resolve to our order. An approval the broker does not know is left to the executor
        (its consumer redelivers it)."""
        assert self.service is not None
        approvals: dict[str, OrderApproved] = {}
        outcome: set[str] = set()
        async for stored in self.log.read(["catalyst.order.approved",
                                           "catalyst.order.submitted",
                                           "catalyst.order.rejected"]):
            ev = stored.event
            if isinstance(ev, OrderApproved):
                approvals[ev.client_order_id] = ev
            elif isinstance(ev, OrderSubmitted | OrderRejected):
                outcome.add(ev.client_order_id)
        out: list[Event] = []
        for coid, approval in approvals.items():
            if coid in outcome:
                continue
            try:
                order = await self.broker.get_order_by_client_id(coid)
            except Exception as e:  # noqa: BLE001 - the executor's redelivery covers it
                log.warning("could not look up order %s in flight at the last stop: %s",
                            coid, e)
                continue
            if order is None:
                continue
            for cmd in executor.commands_for(approval, self.holder.current):
                if isinstance(cmd, SubmitOrder):
                    log.warning("order %s was sent before the last stop but not recorded; "
                                "adopting it as submitted", coid)
                    out.append(self.service.submitted(cmd, order))
        return out

    async def _missing_broker_fills(self, events: list[Event], symbols: set[str]
                                    ) -> list[Event]:
        """Fills the broker reports on orders this log sent, beyond what the log holds, for
        `symbols`: recorded as the update stream would have (same ids, the broker's own
        prices), so a position difference is explained at the real fill price."""
        if not symbols:
            return []
        ledger = ledger_from_log(events)
        refs = OrderRefs()
        starts = []
        for ev in events:
            if isinstance(ev, OrderSubmitted):
                refs.record_submitted(ev)
                if ev.symbol in symbols:
                    starts.append(ev.occurred_at)
        if not starts:
            return []
        # The orders to read are the ones sent for these symbols; a week at most.
        since = max(min(starts), self.clock() - timedelta(days=7))
        try:
            listing = await self.broker.list_orders_since(since)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            log.error("reconciliation: could not list the broker's orders: %s", e)
            return []
        ours = [o for o in listing if o.symbol in symbols and o.id in ledger.known]
        out: list[Event] = []
        for update in catch_up(ours, ledger, None):
            out += trade_update_to_events(update, correlation_id="reconciliation", refs=refs)
        return [e for e in out if isinstance(e, OrderFilled | OrderPartiallyFilled)]

    async def reconciliation(self, adopt: bool = False) -> list[Event]:
        """Broker vs the log at start. The broker is the truth for what exists (positions,
        open orders); the log is the truth for why. Each difference is recorded; with
        `adopt`, a position difference is also booked as a reconciliation fill, so the
        projections and the risk guard work from what the broker really holds."""
        positions = PositionsProjection()
        submitted: dict[str, str] = {}  # client_order_id -> symbol, entries we sent
        approved: set[str] = set()  # client_order_ids of our approvals
        done: set[str] = set()  # entries the log says are no longer open
        events: list[Event] = []
        async for stored in self.log.read(["catalyst.order.>"]):
            ev = stored.event
            events.append(ev)
            positions.rebuild([ev])
            if isinstance(ev, OrderApproved):
                approved.add(ev.client_order_id)
            elif isinstance(ev, OrderSubmitted):
                submitted[ev.client_order_id] = ev.symbol
            elif isinstance(ev, OrderRejected) or (
                isinstance(ev, OrderFilled | OrderCanceled) and ev.leg is None
            ):
                done.add(ev.client_order_id)
        recorded = {v.symbol: v for v in positions.snapshot()}
        try:
            at_broker = {p.symbol: p for p in await self.broker.list_positions()}
            open_orders = await self.broker.list_open_orders()
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            log.error("reconciliation: broker unreachable: %s", e)
            return []
        now = self.clock()
        out: list[Event] = []

        def found(kind: str, symbol: str, broker: str, recorded: str, resolution: str) -> None:
            out.append(ReconciliationDiscrepancyFound(
                event_id=uuid5(NAMESPACE_URL, f"reconcile:{now.date()}:{kind}:{symbol}:"
                                              f"{broker}:{recorded}"),
                type="ReconciliationDiscrepancyFound", occurred_at=now,
                correlation_id="reconciliation", kind=kind, symbol=symbol, broker=broker,
                recorded=recorded, resolution=resolution))

        def differing() -> set[str]:
            return {s for s in set(recorded) | set(at_broker)
                    if (recorded[s].qty if s in recorded else Decimal(0))
                    != (at_broker[s].qty if s in at_broker else Decimal(0))}

        explained: dict[str, list[Event]] = {}
        if adopt:
            # First the broker's own fills on orders we sent (their real prices); only what
            # they leave unexplained is booked at an estimated price below.
            for fill in await self._missing_broker_fills(events, differing()):
                explained.setdefault(fill.symbol, []).append(fill)  # type: ignore[attr-defined]
                positions.rebuild([fill])
            recorded = {v.symbol: v for v in positions.snapshot()}
        for symbol in sorted(set(recorded) | set(at_broker) | set(explained)):
            rec = recorded[symbol].qty if symbol in recorded else Decimal(0)
            brk = at_broker[symbol].qty if symbol in at_broker else Decimal(0)
            if symbol in explained:
                fills = explained[symbol]
                before = rec - sum(
                    (f.qty if f.side is Side.BUY else -f.qty for f in fills),  # type: ignore[attr-defined]
                    Decimal(0))
                found("position", symbol, format(brk, "f"), format(before, "f"),
                      "recorded the broker's fills the log missed, at their own prices: "
                      + ", ".join(f"{f.side} {f.qty} @ {f.price}"  # type: ignore[attr-defined]
                                  for f in fills))
                out.extend(fills)
            if rec == brk:
                continue
            if not adopt:
                found("position", symbol, format(brk, "f"), format(rec, "f"),
                      "broker quantity is the truth; not adopted (updates not caught up); "
                      "review the log for why")
                continue
            price = _adoption_price(at_broker.get(symbol), recorded.get(symbol))
            found("position", symbol, format(brk, "f"), format(rec, "f"),
                  f"adopted the broker's quantity with a reconciliation fill of "
                  f"{format(brk - rec, 'f')} at {price}; review the log for why")
            out.append(_reconciliation_fill(out[-1], symbol, brk - rec, price))
        open_entries = {o.client_order_id: o for o in open_orders if o.parent_id is None}
        for coid, o in sorted(open_entries.items()):
            if coid not in submitted and coid not in approved:  # ours if we approved it
                found("order", o.symbol, f"open {o.side} {o.qty} ({o.id})", "unknown",
                      "an order this system did not send is open at the broker; left as "
                      "it is for a person to review")
        for coid, symbol in sorted(submitted.items()):
            if coid not in done and coid not in open_entries:
                found("order", symbol, "not open", f"open ({coid})",
                      "the broker's state is taken; its fills and cancels are backfilled "
                      "from the order-update stream")
        return out

    async def _recorded_broker_updates(self) -> tuple[datetime | None, set[UUID], FeedLedger]:
        """The broker time of the last order event in the log, the ids of the broker
        updates already recorded, and per broker order what the log already holds (its
        cumulative filled quantity and average price). The update stream backfills from
        that time and records only what goes beyond the ledger, so what happened while this
        process was down is recorded once after a restart (JetStream drops a repeated id
        only within its window, and a partial fill's rest has an id of its own)."""
        since: datetime | None = None
        recorded: set[UUID] = set()
        events: list[Event] = []
        async for stored in self.log.read(["catalyst.order.>"]):
            ev = stored.event
            events.append(ev)
            if isinstance(ev, (*_BROKER_UPDATES, OrderRejected)):
                # (a rejection the stream reported is listed again by every backfill of a
                # known order: its id must be known to be skipped)
                recorded.add(ev.event_id)
            if isinstance(ev, (OrderSubmitted, *_BROKER_UPDATES)):  # broker-clock times
                since = ev.occurred_at if since is None else max(since, ev.occurred_at)
        return since, recorded, ledger_from_log(events)

    async def _pump_trade_updates(self, since: datetime | None, recorded: set[UUID],
                                  ledger: FeedLedger | None = None) -> None:
        assert self.service is not None
        # Only brokers with a stream of their own get here (not the simulated one); the
        # Alpaca adapter's `trade_updates(since, ledger)` first lists what changed since
        # then and compares it with what the log holds.
        options: dict[str, Any] = {"since": since}
        if "ledger" in inspect.signature(self.broker.trade_updates).parameters:
            options["ledger"] = ledger  # (a port without it still gets the cursor)
        updates = self.broker.trade_updates(**options)
        async for update in updates:
            events = [e for e in self.service.translate(update, "broker")
                      if e.event_id not in recorded]
            if events:
                await self.record(events, "execution")

    async def _emergency_watch(self) -> None:
        """An emergency stop not yet confirmed flat is driven again every second."""
        assert self.service is not None
        while True:
            await asyncio.sleep(1.0)
            if self.service.emergency_pending:
                async with self.broker_lock:  # never alongside another broker action
                    events = await self.service.check_pending()
                if events:
                    await self.record(events, "execution")

    async def _market_input(self, events: Sequence[Event]) -> None:
        """Market data is nobody's decision and cannot be fenced: among services it goes
        straight to the log (any number of ingest instances may run), and every role's
        sequencer takes it from there."""
        if self.roles is None:
            await self.record(events)
        elif events:
            await self.log.publish_many(events)

    async def _pump_market_data(self) -> None:
        symbols = list(self.holder.current.trading.market_data.symbols)
        now = self.clock()
        daily = await self.market_data.get_bars(symbols, "1Day", now - timedelta(days=60), now)
        await self._market_input([bar_event(b, b.timestamp + timedelta(days=1), "md")
                                  for b in daily if b.timestamp.date() < now.date()])
        news_task = asyncio.create_task(self._poll_news(symbols))
        try:
            async for b in self.market_data.stream_bars(symbols):
                await self._market_input(
                    [bar_event(b, b.timestamp + timedelta(minutes=1), "md")])
        finally:
            news_task.cancel()

    async def _poll_news(self, symbols: list[str]) -> None:
        since = self.clock() - timedelta(hours=12)
        while True:
            now = self.clock()
            try:
                for h in await self.market_data.get_news(symbols, since, now):
                    await self._market_input(news_events(h, "md"))
                since = now
            except Exception as e:  # noqa: BLE001 - news is best effort; retry next minute
                log.warning("news poll failed: %s", e)
            await asyncio.sleep(60)

    async def _scheduler(self) -> None:
        """09:30 New York: SessionStartRequested; then a ClockTicked every minute."""
        cal = XnysCalendar()
        while True:
            now = self.clock()
            day = now.astimezone(XNYS_TZ).date()
            session = cal.session(day)
            if session is None or now >= session.close:
                await self.sleep(min(300.0, _seconds_to_next_day(now)))
                continue
            if now < session.open:
                log.warning("waiting for the open at %s", session.open.astimezone(XNYS_TZ))
                await self.sleep(min(60.0, (session.open - now).total_seconds()))
                continue
            await self.record([SessionStartRequested(
                event_id=uuid5(NAMESPACE_URL, f"scheduler:start:{day}"),
                type="SessionStartRequested", occurred_at=max(now, session.open),
                correlation_id=f"session-{day}", requested_by="scheduler", session_date=day)],
                "session")
            # Tick from the next minute on: started (or restarted) late, the minutes already
            # gone are not replayed as if they were now (no burst of stale scans).
            minute = max(session.open + timedelta(minutes=1), _next_minute(self.clock()))
            while minute <= session.close:
                wait = (minute - self.clock()).total_seconds()
                if wait > 0:
                    await self.sleep(wait)
                await self.record([ClockTicked(
                    event_id=uuid5(NAMESPACE_URL, f"scheduler:tick:{minute.isoformat()}"),
                    type="ClockTicked", occurred_at=minute, correlation_id=f"session-{day}",
                    session_date=day)], "session")
                minute += timedelta(minutes=1)

    async def stop(self) -> None:
        if self.sequencer is not None:
            await self.sequencer.stop()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for c in self.consumers:
            await c.stop()
        with contextlib.suppress(Exception):
            await self.broker.close()


def _next_minute(now: datetime) -> datetime:
    floor = now.replace(second=0, microsecond=0)
    return floor if floor == now else floor + timedelta(minutes=1)


def _seconds_to_next_day(now: datetime) -> float:
    local = now.astimezone(XNYS_TZ)
    nxt = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), XNYS_TZ)
    return max(1.0, (nxt - local).total_seconds())


def _adoption_price(at_broker: Any, recorded: Any) -> Decimal:
    """The price a reconciliation fill is booked at: the broker's average entry when it
    holds the position, else its last price, else our own average (P&L unknown: zero)."""
    if at_broker is not None and at_broker.avg_entry_price:
        return Decimal(at_broker.avg_entry_price)
    if at_broker is not None and at_broker.current_price:
        return Decimal(at_broker.current_price)
    avg = getattr(recorded, "avg_entry_price", None)
    return Decimal(avg) if avg else Decimal("0.01")


def _reconciliation_fill(cause: Event, symbol: str, delta: Decimal, price: Decimal
                         ) -> OrderFilled:
    """The log adopts what the broker holds: a fill for the difference, caused by the
    discrepancy it resolves, so every projection and the risk guard see the broker's truth."""
    qty = abs(delta)
    return OrderFilled.caused_by(
        cause, 0, "reconciliation", order_id=f"reconcile-{symbol}-{cause.event_id}",
        client_order_id=f"reconcile-{cause.event_id}", broker_order_id="",
        fill_id=f"reconcile-{cause.event_id}", symbol=symbol,
        side=Side.BUY if delta > 0 else Side.SELL, qty=qty, price=price, filled_qty=qty)


def bar_event(b: Bar, at: datetime, correlation: str) -> BarReceived:
    return BarReceived(
        event_id=uuid5(NAMESPACE_URL, f"md:bar:{b.symbol}:{b.timeframe}:{b.timestamp}"),
        type="BarReceived", occurred_at=at, correlation_id=correlation, symbol=b.symbol, bar=b)


def news_events(h: Headline, correlation: str) -> list[NewsReceived]:
    return [NewsReceived(
        event_id=uuid5(NAMESPACE_URL, f"md:news:{h.id}:{s}"), type="NewsReceived",
        occurred_at=h.created_at, correlation_id=correlation, symbol=s, headline=h)
        for s in h.symbols]


def build_broker(settings: Settings) -> BrokerPort:
    b = settings.trading.broker
    if b.effective_kind == "alpaca":
        from adapters.broker.alpaca import AlpacaBroker

        return AlpacaBroker(b)
    return SimulatedBroker.from_settings(b.sim)


async def run_services(settings: Settings, config_dir: Path | None, console: Console,
                       stop: asyncio.Event | None = None,
                       metrics_port: int | None = None, serve: Any = None) -> None:
    """`catalyst run` with Alpaca keys: paper (or guarded live) trading in real time."""
    from adapters.nats.connection import open_event_log

    broker = build_broker(settings)
    check_keys = getattr(broker, "check_keys", None)
    if check_keys is not None:
        # Before anything starts: wrong keys are a refusal to run, not a runtime that
        # waits, logs and trades on with every order rejected.
        try:
            await check_keys()
        except Exception:
            with contextlib.suppress(Exception):
                await broker.close()
            raise
    mode = settings.trading.broker.mode
    if mode == "live":
        console.print(Panel.fit(
            "[bold white on red] LIVE TRADING [/] orders go to Alpaca LIVE with REAL MONEY.\n"
            f"Limits: daily loss ${settings.limits.max_daily_loss_usd}, "
            f"{settings.limits.max_positions} positions, "
            f"${settings.limits.max_position_size_usd} per position.",
            border_style="red"))
    else:
        console.print(f"[bold]Catalyst[/] {broker.name} trading; Ctrl-C to stop")
    market_data = None
    if settings.trading.market_data.source != "bundled" and settings.trading.broker.has_keys:
        from adapters.market_data.alpaca import AlpacaMarketData

        market_data = AlpacaMarketData.from_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with open_event_log(settings, announce=True) as event_log:
        holder = SettingsHolder(settings, config_dir)
        handlers = build_handlers(settings, broker.name)
        run_id = f"{mode}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        from adapters.runtime.run_record import run_started

        await event_log.publish(run_started(run_id, mode, settings, handlers, broker.name,
                                            datetime.now(UTC)))
        lag_task = None
        if metrics_port:
            from adapters.runtime.metrics import Metrics, start_metrics_server

            metrics = Metrics()
            for h in handlers:  # count and time every handler call, as in-process runs do
                h.handle = metrics._timed(h.name, h.handle)  # type: ignore[method-assign]
            start_metrics_server(metrics_port, metrics)
            lag_task = asyncio.create_task(metrics.poll_consumer_lag(event_log))
        services = Services(holder, event_log, broker, handlers, market_data=market_data)
        await services.start()
        api = None
        if serve is not None:  # the HTTP API and dashboard (an ApiLauncher), same log
            api = await serve.beside_live(event_log, lambda: holder.current, mode,
                                          broker.name, console)
        try:
            await stop.wait()
        finally:
            if api is not None:
                await api.stop()
            if lag_task is not None:
                lag_task.cancel()
            await services.stop()
            if market_data is not None:
                with contextlib.suppress(Exception):
                    await market_data.close()
        # Stopped with alerts undelivered: say so, and fail on a CRITICAL nobody received.
        from adapters.alerts.pending import check_pending, pending_in_log

        check_pending(await pending_in_log(holder.current, event_log), console, None)

