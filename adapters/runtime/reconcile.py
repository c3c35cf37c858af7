"""Reconciliation at a start: the broker against the log.

The broker is the truth for what exists (positions, open orders), the log for why. Orders
in flight at a hard stop are adopted (their client_order_id derives from a recorded
approval); fills the broker reports on orders the log sent are recorded at their own
prices; what is still unexplained is reported and, once the broker's updates are caught up,
adopted as a reconciliation fill. See docs/execution.md, "The order-update contract".
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from adapters.broker.execution import ExecutionService
from adapters.broker.port import BrokerPort
from adapters.broker.translate import (
    FeedLedger,
    OrderRefs,
    catch_up,
    ledger_from_log,
    trade_update_to_events,
)
from adapters.nats.event_log import EventLog
from adapters.runtime.config_watcher import SettingsHolder
from domain.events import (
    EmergencyStopCompleted,
    EmergencyStopTriggered,
    Event,
    FlattenRequested,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    PositionCloseRequested,
    ReconciliationDiscrepancyFound,
    TradingResumed,
)
from domain.values import Side
from handlers.executor import submit_commands
from projections.positions import PositionsProjection

log = logging.getLogger("catalyst.services")

# What the broker's update stream records (translate.py); their ids derive from broker facts.
_BROKER_UPDATES = (OrderFilled, OrderPartiallyFilled, OrderCanceled)


class Reconciler:
    def __init__(self, event_log: EventLog, broker: BrokerPort,
                 service: ExecutionService | None,
                 holder: SettingsHolder, clock: Callable[[], datetime]) -> None:
        self.log = event_log
        self.broker = broker
        self.service = service
        self.holder = holder
        self.clock = clock

    async def recorded_broker_updates(self) -> tuple[datetime | None, set[UUID], FeedLedger]:
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

    async def pump_trade_updates(self, record: Callable[[list[Event]], Awaitable[Any]]
                                 ) -> None:
        """The broker's order updates, from where the log stops, recorded through `record`
        (each once, beyond what the log holds), until cancelled."""
        since, recorded, ledger = await self.recorded_broker_updates()
        # Only brokers with a stream of their own get here (not the simulated one); the
        # Alpaca adapter's `trade_updates(since, ledger)` first lists what changed since
        # then and compares it with what the log holds.
        options: dict[str, Any] = {"since": since}
        if "ledger" in inspect.signature(self.broker.trade_updates).parameters:
            options["ledger"] = ledger  # (a port without it still gets the cursor)
        updates = self.broker.trade_updates(**options)
        async for update in updates:
            assert self.service is not None
            events = [e for e in self.service.translate(update, "broker")
                      if e.event_id not in recorded]
            if events:
                await record(events)

    async def adopt_in_flight(self) -> list[Event]:
        """Orders in flight at a hard stop (approved and sent, the submission never
        recorded) are ours: their client_order_id derives from a recorded approval. Each one
        the broker holds is recorded as submitted, with the event (and id) the executor
        would have emitted, so reconciliation does not take it for a stranger and its fills
        resolve to our order. An approval the broker does not know is left to the executor
        (its consumer redelivers it)."""
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
            # Sent is sent: adopted even when a stop came after it (the stop cancels it).
            for cmd in submit_commands(approval, self.holder.current):
                log.warning("order %s was sent before the last stop but not recorded; "
                            "adopting it as submitted", coid)
                assert self.service is not None
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

    async def _closing(self) -> set[str] | None:
        """Symbols the log asked to close and may still be closing: None for every symbol
        (an emergency stop not completed, or a flatten), else those of close requests."""
        stop_open = flatten = False
        symbols: set[str] = set()
        async for stored in self.log.read(["catalyst.risk.emergency_stop_triggered",
                                           "catalyst.risk.emergency_stop_completed",
                                           "catalyst.risk.trading_resumed",
                                           "catalyst.session.flatten_requested",
                                           "catalyst.position.close_requested"]):
            ev = stored.event
            if isinstance(ev, EmergencyStopTriggered):
                stop_open = True
            elif isinstance(ev, EmergencyStopCompleted | TradingResumed):
                stop_open = False
            elif isinstance(ev, FlattenRequested):
                flatten = True
            elif isinstance(ev, PositionCloseRequested):
                symbols.add(ev.symbol)
        return None if stop_open or flatten else symbols

    async def reconciliation(self, adopt: bool = False) -> list[Event]:
        """Broker vs the log at start. The broker is the truth for what exists (positions,
        open orders); the log is the truth for why. Each difference is recorded; with
        `adopt`, a position difference is also booked as a reconciliation fill, so the
        projections and the risk guard work from what the broker really holds."""
        positions = PositionsProjection()
        submitted: dict[str, str] = {}  # client_order_id -> symbol, entries we sent
        approved: set[str] = set()  # client_order_ids of our approvals
        done: set[str] = set()  # entries the log says are no longer open
        # Broker ids of our brackets' legs: a flat listing names no leg's parent (the update
        # stream teaches it, and it may be down), so a leg is known as ours by its id.
        our_legs: set[str] = set()
        events: list[Event] = []
        async for stored in self.log.read(["catalyst.order.>"]):
            ev = stored.event
            events.append(ev)
            positions.rebuild([ev])
            if isinstance(ev, OrderApproved):
                approved.add(ev.client_order_id)
            elif isinstance(ev, OrderSubmitted):
                submitted[ev.client_order_id] = ev.symbol
                our_legs.update(ev.legs)
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
        open_entries = {o.client_order_id: o for o in open_orders
                        if o.parent_id is None and o.id not in our_legs}
        closing = await self._closing()
        for coid, o in sorted(open_entries.items()):
            if coid in submitted or coid in approved:  # ours if we approved it
                continue
            if _our_close(o, recorded.get(o.symbol), closing):
                # Alpaca names a position's close itself: it is ours by what it does (it
                # reduces a position the log holds, one the log asked to close).
                continue
            found("order", o.symbol, f"open {o.side} {o.qty} ({o.id})", "unknown",
                  "an order this system did not send is open at the broker; left as it "
                  "is for a person to review")
        for coid, symbol in sorted(submitted.items()):
            if coid not in done and coid not in open_entries:
                found("order", symbol, "not open", f"open ({coid})",
                      "the broker's state is taken; its fills and cancels are backfilled "
                      "from the order-update stream")
        return out


def _our_close(order: Any, position: Any, closing: set[str] | None) -> bool:
    """A market order with no legs that reduces a position the log holds, for a symbol the
    log asked to close (`closing` None: every symbol)."""
    if position is None or order.legs or order.type != "market":
        return False
    if closing is not None and order.symbol not in closing:
        return False
    reduces = Side.SELL if position.qty > 0 else Side.BUY
    return bool(order.side == reduces and order.qty <= abs(position.qty))


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
