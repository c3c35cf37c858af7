"""What a run is made of: the pure handlers in dispatch order and the effects around them
(broker, alert delivery), shared by the simulated and real-time runtimes."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, uuid5

from adapters.alerts.delivery import AlertDelivery
from adapters.broker.execution import ExecutionService
from adapters.broker.port import TradeUpdate
from adapters.broker.sim import SimulatedBroker
from adapters.runtime.simulation import XnysCalendar
from config.settings import Settings
from domain.events import (
    AccountSnapshotted,
    AlertFailed,
    AlertRaised,
    AlertSent,
    BarReceived,
    ClockTicked,
    Event,
    OrderFilled,
    OrderPartiallyFilled,
    SessionEnded,
    SessionStarted,
)
from handlers.alerter import Alerter
from handlers.base import Handler
from handlers.executor import Executor
from handlers.risk_guard import RiskGuard
from handlers.scanner import Scanner
from handlers.session import SessionHandler
from handlers.strategy import Strategy
from projections.daily_pnl import DailyPnLProjection
from projections.positions import PositionsProjection

log = logging.getLogger("catalyst.app")


async def _no_sleep(_: float) -> None:
    return None


def build_handlers(settings: Settings, broker_name: str, scanner: bool = True) -> list[Handler]:
    """Every pure handler, in the fixed order the in-process pipeline calls them."""
    hs: list[Handler] = [SessionHandler(XnysCalendar(), broker_name)]
    if scanner:
        hs += [Scanner(), Strategy()]
    hs += [
        RiskGuard(starting_cash=settings.trading.broker.sim.starting_cash),
        Executor(),
        PositionsProjection(),
        DailyPnLProjection(),
        Alerter(),
    ]
    return hs


class BrokerEffect:
    """Runs the executor's broker commands and turns broker updates into events.

    It also reports the broker's account (`AccountSnapshotted`) at the session start, after
    every fill and every minute (ClockTicked), so the risk guard sizes against the real
    account. The simulated broker's is read from its engine at the cause's simulated time
    (deterministic); a live broker's with one REST read, and a failed read is skipped: the
    next minute's replaces it.
    """

    name = "broker"
    subjects = ("catalyst.order.approved", "catalyst.order.submitted",
                "catalyst.position.close_requested", "catalyst.session.flatten_requested",
                "catalyst.risk.emergency_stop_triggered", "catalyst.session.ended",
                "catalyst.session.started", "catalyst.session.clock_ticked",
                "catalyst.order.filled", "catalyst.order.partially_filled",
                "catalyst.md.bar.>")

    def __init__(self, executor: Executor, service: ExecutionService,
                 sim: SimulatedBroker | None = None) -> None:
        self.executor = executor
        self.service = service
        self.sim = sim
        self._updates: list[TradeUpdate] = []
        self._last_bar: dict[str, datetime] = {}  # symbol -> start of its latest 1Min bar
        if sim is not None:
            sim.engine.listener = self._updates.append

    def _drain(self, correlation_id: str) -> list[Event]:
        if not self._updates:  # most bars trade nothing
            return []
        updates, self._updates[:] = list(self._updates), []
        out: list[Event] = []
        for u in updates:
            out += self.service.translate(u, correlation_id)
        return out

    async def on_event(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, BarReceived):  # every bar: first, and nothing it does not need
            bar, sim = event.bar, self.sim
            if sim is None or bar.timeframe != "1Min":
                return []
            sim.engine.on_bar(bar)
            self._last_bar[event.symbol] = bar.timestamp
            out = self._drain(event.correlation_id)
            if self.service.emergency_pending:
                out += await self.service.check_pending()
            return out
        if isinstance(event, _SNAPSHOT_CAUSES):
            return await self.account_snapshot(event)
        self.service.observe(event)  # (order references: nothing to take from a bar)
        out: list[Event] = []
        if isinstance(event, SessionEnded):
            return self._market_closed(event, settings) if self.sim is not None else []
        if self.sim is not None:
            self.sim.set_clock(event.occurred_at)
        for cmd in self.executor.commands_for(event, settings):
            out += await self.service.execute(cmd)
        if self.sim is not None:
            out += self._drain(event.correlation_id)
        return out


    async def account_snapshot(self, cause: Event | None = None, now: datetime | None = None
                               ) -> list[Event]:
        """The broker's account now, as an event caused by `cause` (id derived from it), or
        without a cause at `now` (a process start: id from the broker and the time)."""
        if self.sim is not None:
            acct = self.sim.engine.account()
            broker = self.sim.name
        else:
            broker = getattr(self.service.broker, "name", "broker")
            try:
                acct = await self.service.broker.get_account()
            except Exception as e:  # noqa: BLE001 - a snapshot is refreshed every minute
                log.warning("account snapshot (%s) failed: %s",
                            cause.type if cause else "start", e)
                return []
        figures = {"broker": broker, "cash": acct.cash, "equity": acct.equity,
                   "buying_power": acct.buying_power}
        if cause is not None:
            return [AccountSnapshotted.caused_by(cause, 0, "broker:account", **figures)]
        assert now is not None
        return [AccountSnapshotted(
            event_id=uuid5(NAMESPACE_URL, f"catalyst:account:{broker}:{now.isoformat()}"),
            type="AccountSnapshotted", occurred_at=now, correlation_id="broker", **figures)]

    def _market_closed(self, event: SessionEnded, settings: Settings) -> list[Event]:
        """The simulated market closes as Alpaca's does: day orders expire. A flatten that
        found no bar left to fill in (requested in the last minute) is done at the last
        price, as a market-on-close would be, for symbols that traded since the flatten was
        due; one with no bars since (halted, say) stays held."""
        assert self.sim is not None
        engine = self.sim.engine
        engine.set_clock(event.occurred_at)
        engine.cancel_all(event.occurred_at)
        cfg = settings.session
        if cfg.auto_close_at_market_close:
            due = event.occurred_at - timedelta(minutes=cfg.flatten_minutes_before_close)
            for p in engine.positions():
                last = self._last_bar.get(p.symbol)
                if last is not None and last >= due - timedelta(minutes=1):
                    engine.close_position(p.symbol, event.occurred_at, immediate_price=True)
        return self._drain(event.correlation_id)


_SNAPSHOT_CAUSES = (SessionStarted, ClockTicked, OrderFilled, OrderPartiallyFilled)


class AlertEffect:
    """Delivers what the alerter raised; records AlertSent / AlertFailed."""

    name = "alerts"
    subjects = ("catalyst.alert.>",)

    def __init__(self, delivery: AlertDelivery) -> None:
        self.delivery = delivery

    async def on_event(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, AlertSent | AlertFailed):
            self.delivery.evolve(event)
            return []
        if isinstance(event, AlertRaised):
            return list(await self.delivery.deliver(event))
        return []
