"""The real-time runtime: paper and live trading.

Every pure handler decides in one process-wide order, the sequencer's (adapters.runtime
.sequencer: the same Pipeline and composition as a backtest, every event stamped with its
dispatch position), so a paper or live log verifies like a backtest's. Around it, each effect
is a durable JetStream consumer that acts on what was recorded and hands its outcome back to
the sequencer as an input: the broker effect (one message at a time), alert delivery (naks to
retry while SMTP is down, so the queue lives in the log). Also here: the broker's
order-update stream, live market data, the market-hours scheduler, reconciliation at start
and the config watcher, all feeding the sequencer.

Past ~400 lines: `Services.start` wires the sequencer, the effects' consumers and the
background loops in the one order a restart is safe in (rebuild, effects, reconciliation
after the update stream caught up, then the feeds); the pieces live in sequencer.py,
reconcile.py and feeds.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import nats.js.errors

from adapters.alerts.delivery import AlertDelivery
from adapters.broker.execution import ExecutionService
from adapters.broker.port import BrokerPort, BrokerUnavailable
from adapters.broker.sim import SimulatedBroker
from adapters.nats.event_log import MD_PREFIX, Consumer, EventLog, Retry, log_context
from adapters.nats.retry import backoff_delay
from adapters.runtime.composition import AlertEffect, BrokerEffect
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.feeds import pump_market_data, run_schedule
from adapters.runtime.reconcile import Reconciler
from adapters.runtime.roles import HANDLERS
from adapters.runtime.sequencer import CONSUMER, Sequencer, _ack_floor, guard_handlers
from config.settings import Settings
from domain.events import (
    AlertRaised,
    EmergencyStopTriggered,
    Event,
    HandlerCrashLooping,
)
from handlers.base import Handler
from handlers.executor import Executor

log = logging.getLogger("catalyst.services")

Clock = Callable[[], datetime]


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
    # Short: a message a dead process held is redelivered this soon (the consumer tells
    # the server a slow one is in progress meanwhile).
    ack_wait: float = 2.0


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
            for name, ev, e in self.sequencer.rebuild_failures:
                self._crash_looping_later(name, f"rebuild: {ev.type} {ev.event_id}: {e!r}")
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
                deliver_new=plan.deliver_new, ack_wait=plan.ack_wait))
        if on_broker is not None:
            await self._resume_unfinished_stop(on_broker)

        caught_up = False
        if execution and sim is None:
            if self.reconcile:
                # Before the update stream: its fills must find the order's references.
                await self.record(await self.adopt_in_flight(), "execution")
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

    def _crash_looping_later(self, name: str, error: str) -> None:
        """Reported once the sequencer runs (a person hears of it; the start goes on)."""
        async def report() -> None:
            while self.sequencer is not None and not self.sequencer.running:
                await asyncio.sleep(0.05)
            await self._crash_looping(name, 1, error)

        self.tasks.append(asyncio.get_running_loop().create_task(report()))

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
                await asyncio.sleep(backoff_delay(failures + 1, 0.5, 30.0))

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
        assert self.service is not None
        await Reconciler(self.log, self.broker, self.service, self.holder,
                         self.clock).pump_trade_updates(
            lambda events: self.record(events, "execution"))

    async def _ack_floor(self, stream: str, name: str) -> int | None:
        return await _ack_floor(self.log, stream, name)

    # --- around the handlers ---------------------------------------------------------------

    async def adopt_in_flight(self) -> list[Event]:
        assert self.service is not None
        return await Reconciler(self.log, self.broker, self.service, self.holder,
                                self.clock).adopt_in_flight()

    async def reconciliation(self, adopt: bool = False) -> list[Event]:
        return await Reconciler(self.log, self.broker, self.service, self.holder,
                                self.clock).reconciliation(adopt)

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
        await pump_market_data(self.market_data, symbols, self.clock, self._market_input)

    async def _scheduler(self) -> None:
        await run_schedule(self.clock, self.sleep, lambda evs: self.record(evs, "session"))

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
