"""Runs the executor's broker commands against any `BrokerPort` and reports what happened.

    service = ExecutionService(broker)
    events = await service.execute(command)       # OrderSubmitted / OrderRejected / ...
    events += await service.check_pending()       # after each trade update or bar
    events = service.translate(update, correlation_id)   # broker trade update -> events

* SubmitOrder -> `OrderSubmitted`, or `OrderRejected` with the broker's code and message.
  A duplicate client_order_id (40010001: we already sent it, e.g. before a crash) is not an
  error: the existing order is fetched and reported as submitted, with the same event id.
  `BrokerUnavailable` propagates, so the runtime redelivers the approval later.
* ClosePosition -> cancel that symbol's open orders (bracket legs hold the shares), close it,
  `PositionClosed` (the fill itself arrives later as `OrderFilled`).
* CloseAll -> cancel every open order, close every position, one `PositionClosed` each.
* EmergencyClose -> cancel all open orders, then close all positions, then verify the broker
  reports none left. Broker calls that fail are retried with exponential backoff (the one
  retry policy, injectable `sleep`); each failed attempt emits
  `EmergencyStopFailed(attempt, error)`.
  `EmergencyStopCompleted` is emitted only once the broker is verified flat, with the orders
  canceled, each position closed at its fill price, and the realized P&L after the stop.
  When the close orders are accepted but not yet filled (the simulated broker fills them at
  the next bar), the stop stays pending and `check_pending()` finishes it later; it is never
  reported done while anything is left.

Emitted ids derive from the command's cause, so re-running a command after a crash emits the
same ids and the event log drops the repeats.

Past ~400 lines: one service per broker connection. Submit, close and the emergency stop share
its state (the order refs, closes in flight, the pending stop) and its retry policy
(adapters/nats/retry.py); the emergency stop alone is half of it and leans on the close path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState

from adapters.broker.port import (
    BrokerOrder,
    BrokerPort,
    BrokerPosition,
    BrokerRejection,
    OrderRequest,
    TradeUpdate,
)
from adapters.broker.translate import OrderRefs, trade_update_to_events
from adapters.nats.event_log import log_context
from adapters.nats.retry import backoff_delay, retrying
from domain.events import (
    ClosedPosition,
    EmergencyStopCompleted,
    EmergencyStopFailed,
    Event,
    OrderApproved,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
)
from domain.values import Side, to_cents
from handlers.executor import (
    CloseAll,
    ClosePosition,
    Command,
    DropOrder,
    EmergencyClose,
    SubmitOrder,
)

log = logging.getLogger(__name__)

DUPLICATE_CLIENT_ORDER_ID = "40010001"
INSUFFICIENT = "40310000"
NOT_FOUND = "40410000"
_ZERO = Decimal(0)
# Orders whose cancel is already in flight: asking again only earns a 422.
_CANCELING = frozenset({"pending_cancel"})
# How far back a close whose answer was lost is looked for (it executed seconds ago; the
# margin covers a broker clock that differs from ours).
_CLOSE_LOOKBACK = timedelta(hours=1)

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


def order_request(cmd: SubmitOrder) -> OrderRequest:
    return OrderRequest(
        client_order_id=cmd.client_order_id,
        symbol=cmd.symbol,
        side=cmd.side,
        qty=cmd.qty,
        type="limit" if cmd.order_type == "limit" else "market",
        limit_price=cmd.limit_price,
        stop_loss=cmd.stop_loss,
        take_profit=cmd.take_profit,
        time_in_force="gtc" if cmd.time_in_force == "gtc" else "day",
    )


def _is_duplicate(e: BrokerRejection) -> bool:
    return e.code == DUPLICATE_CLIENT_ORDER_ID or "client_order_id must be unique" in e.message


def _is_not_found(e: BrokerRejection) -> bool:
    return e.code == NOT_FOUND or e.status == 404


def _is_qty_held(e: BrokerRejection) -> bool:
    return e.code == INSUFFICIENT


@dataclass(slots=True)
class _Closing:
    symbol: str
    qty: Decimal  # the position's signed quantity when we closed it
    avg_entry_price: Decimal
    order_id: str


@dataclass(slots=True)
class _Emergency:
    cmd: EmergencyClose
    attempts: int = 0  # failed attempts so far (numbers the EmergencyStopFailed events)
    canceled: int = 0
    cancel_done: bool = False
    closes: list[_Closing] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    remaining_orders: int = 0
    remaining_positions: int = 0

    def close_order_ids(self) -> set[str]:
        return {c.order_id for c in self.closes}


class ExecutionService:
    def __init__(
        self,
        broker: BrokerPort,
        *,
        refs: OrderRefs | None = None,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        verify_polls: int = 3,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`max_attempts`: broker attempts per step before giving up for this call (an
        emergency stays pending and `check_pending` tries again). `verify_polls`: how many
        times `emergency_close` re-checks, with backoff, for close orders to fill before
        returning with the stop still pending. `clock` dates the emergency events; without
        it they carry the trigger's time (deterministic for backtests)."""
        self.broker = broker
        self.refs = refs or OrderRefs()
        self._sleep = sleep
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.verify_polls = verify_polls
        self._clock = clock
        self._emergency: _Emergency | None = None

    # --- entry points ------------------------------------------------------------------------

    async def execute(self, command: Command) -> list[Event]:
        if isinstance(command, SubmitOrder):
            return await self.submit(command)
        if isinstance(command, ClosePosition):
            return await self.close_position(command)
        if isinstance(command, CloseAll):
            return await self.close_all(command)
        if isinstance(command, EmergencyClose):
            return await self.emergency_close(command)
        if isinstance(command, DropOrder):
            return await self.drop(command)
        raise TypeError(f"unknown command {command!r}")

    def translate(self, update: TradeUpdate, correlation_id: str) -> list[Event]:
        self.refs.learn(update.order)
        return trade_update_to_events(update, correlation_id=correlation_id, refs=self.refs)

    def observe(self, event: Event) -> None:
        """Rebuild the order references from the log (call with every OrderApproved and
        OrderSubmitted)."""
        if isinstance(event, OrderSubmitted):
            self.refs.record_submitted(event)
        elif isinstance(event, OrderApproved):
            self.refs.expect(event)

    @property
    def emergency_pending(self) -> bool:
        return self._emergency is not None

    # --- orders ------------------------------------------------------------------------------

    async def submit(self, cmd: SubmitOrder) -> list[Event]:
        try:
            order = await self.broker.submit_order(order_request(cmd))
        except BrokerRejection as e:
            existing = None
            if _is_duplicate(e):
                existing = await self.broker.get_order_by_client_id(cmd.client_order_id)
            if existing is None:
                return [
                    OrderRejected.caused_by(
                        cmd.cause, 0, "execution.rejected",
                        order_id=cmd.order_id, client_order_id=cmd.client_order_id,
                        symbol=cmd.symbol, code=e.code, message=e.message,
                    )
                ]
            log.info("order %s was already at the broker; continuing", cmd.client_order_id,
                     extra=log_context(cmd.cause, "executor"))
            order = existing
        return [self.submitted(cmd, order)]

    async def drop(self, cmd: DropOrder) -> list[Event]:
        """An approval the stop overtook: not sent now. If the broker holds it already (sent
        before, the answer lost), it is recorded as what it is, submitted, and the stop's
        cancel-all takes it; only an order the broker does not know is rejected."""
        approval = cmd.cause
        existing = await self.broker.get_order_by_client_id(approval.client_order_id)
        if existing is not None:
            log.warning("order %s was already at the broker when the stop overtook it",
                        approval.client_order_id, extra=log_context(approval, "executor"))
            return [self.submitted(cmd.submit, existing)]
        log.warning("order %s not sent: %s", approval.client_order_id, cmd.reason,
                    extra=log_context(approval, "executor"))
        return [OrderRejected.caused_by(
            approval, 0, "execution.rejected", order_id=approval.order_id,
            client_order_id=approval.client_order_id, symbol=approval.symbol,
            code="emergency_stop", message=cmd.reason)]

    def submitted(self, cmd: SubmitOrder, order: BrokerOrder) -> OrderSubmitted:
        """The broker holds `order` for `cmd`: remember it, and say so. Also how the runtime
        adopts an order in flight at a crash (sent, never recorded): the same event, same id."""
        self.refs.remember(order, cmd.order_id)
        return OrderSubmitted.caused_by(
            cmd.cause, 0, "execution.submitted",
            occurred_at=order.created_at,
            order_id=cmd.order_id,
            client_order_id=cmd.client_order_id,
            broker_order_id=order.id,
            symbol=cmd.symbol,
            side=cmd.side,
            qty=cmd.qty,
            order_type=cmd.order_type,
            stop_loss=cmd.stop_loss,
            take_profit=cmd.take_profit,
            legs=tuple(leg.id for leg in order.legs),
        )

    # --- closing -----------------------------------------------------------------------------

    async def close_position(self, cmd: ClosePosition) -> list[Event]:
        pos = next((p for p in await self.broker.list_positions() if p.symbol == cmd.symbol), None)
        if pos is None:
            return []  # already flat (a bracket leg got there first)
        order = await self._close_symbol(pos)
        if order is None:
            return []
        return [self._position_closed(cmd.cause, 0, pos, order, cmd.reason)]

    async def close_all(self, cmd: CloseAll) -> list[Event]:
        await self.broker.cancel_all_orders()
        out: list[Event] = []
        for pos in sorted(await self.broker.list_positions(), key=lambda p: p.symbol):
            try:
                order = await self._close_symbol(pos)
            except BrokerRejection as e:
                # One symbol the broker refuses must not keep the others open: record it
                # (a person sees it in the log and the audit) and go on.
                log.error("close %s refused: %s", pos.symbol, e)
                out.append(OrderRejected.caused_by(
                    cmd.cause, 1000 + len(out), "execution.close_refused",
                    order_id=f"close:{pos.symbol}", client_order_id="", symbol=pos.symbol,
                    code=e.code, message=e.message))
                continue
            if order is not None:
                out.append(self._position_closed(cmd.cause, len(out), pos, order, cmd.reason))
        return out

    def _position_closed(
        self, cause: Event, index: int, pos: BrokerPosition, order: BrokerOrder, reason: str
    ) -> Event:
        return PositionClosed.caused_by(
            cause, index, "execution.position_closed",
            symbol=pos.symbol, qty=pos.qty, reason=reason, broker_order_id=order.id,
        )

    async def _close_symbol(
        self, pos: BrokerPosition, keep: frozenset[str] = frozenset()
    ) -> BrokerOrder | None:
        """Cancel the symbol's other open orders, then close it; None when already flat.

        A close already working for the whole position is reused (a re-run of the same
        command must not stack a second one). While canceled orders still hold the shares the
        broker answers 40310000; that is retried with backoff.
        """
        closing_side = Side.SELL if pos.qty > 0 else Side.BUY

        async def attempt_close() -> BrokerOrder | None:
            listed = await self.broker.list_open_orders()
            open_orders = [o for o in listed if o.symbol == pos.symbol]
            for o in open_orders:
                if (
                    o.parent_id is None and not o.legs and o.type == "market"
                    and o.side is closing_side and o.qty - o.filled_qty == abs(pos.qty)
                    and o.status not in _CANCELING
                ):
                    return o
            await self._cancel_orders(o for o in open_orders if o.id not in keep)
            try:
                return await self.broker.close_position(pos.symbol)
            except BrokerRejection as e:
                if _is_not_found(e):
                    # Flat already: a leg got there first, or our own close executed and
                    # only its answer was lost (a 5xx, then this 404 on the retry). The
                    # latter must be reported with its fill, so look for it over REST.
                    return await self._executed_close(pos)
                raise

        def qty_held(e: BaseException) -> bool:
            return isinstance(e, BrokerRejection) and _is_qty_held(e)

        async for attempt in self._policy(qty_held):
            with attempt:
                return await attempt_close()
        return None  # unreachable: the last attempt returns or raises

    async def _executed_close(self, pos: BrokerPosition) -> BrokerOrder | None:
        """The close order that flattened `pos` although its answer never reached us.

        A candidate is a plain market order (no leg, no legs) on the closing side for the
        whole quantity, newer than every order that opened the position (broker times only:
        an older close belongs to an earlier round trip); the newest one wins. None when
        nothing qualifies (a bracket leg closed it: its fill arrives as a leg fill)."""
        closing_side = Side.SELL if pos.qty > 0 else Side.BUY
        now = self._clock() if self._clock is not None else datetime.now(UTC)
        try:
            listing = await self.broker.list_orders_since(now - _CLOSE_LOOKBACK)
        except Exception as e:  # noqa: BLE001 - best effort: reported as unknown below
            log.warning("could not look for the close order of %s: %s", pos.symbol, e)
            return None
        orders = [o for entry in listing for o in (entry, *entry.legs)
                  if o.symbol == pos.symbol and o.created_at is not None]
        opened = max((o.created_at for o in orders if o.side is not closing_side
                      and o.parent_id is None and o.filled_qty > 0), default=None)
        candidates = [
            o for o in orders
            if o.parent_id is None and not o.legs and o.type == "market"
            and o.side is closing_side and o.qty == abs(pos.qty)
            and (opened is None or o.created_at >= opened)  # type: ignore[operator]
        ]
        if not candidates:
            return None
        found = max(candidates, key=lambda o: o.created_at)  # type: ignore[arg-type,return-value]
        log.warning("close of %s answered with an error but executed: order %s",
                    pos.symbol, found.id)
        return found

    async def _cancel_orders(self, orders: Iterable[BrokerOrder]) -> int:
        """Cancel legs before parents so each counts once; ignore ones already ending."""
        count = 0
        for o in sorted(orders, key=lambda o: o.parent_id is None):
            if o.status in _CANCELING:
                continue
            try:
                await self.broker.cancel_order(o.id)
                count += 1
            except BrokerRejection as e:
                log.debug("cancel %s: %s", o.id, e)
        return count

    def _policy(self, retry_on: Callable[[BaseException], bool],
                before_sleep: Callable[[RetryCallState], None] | None = None
                ) -> AsyncRetrying:
        return retrying(retry_on=retry_on, attempts=self.max_attempts,
                        initial=self.backoff_initial, maximum=self.backoff_max,
                        sleep=self._sleep, before_sleep=before_sleep)

    # --- emergency stop ----------------------------------------------------------------------

    async def emergency_close(self, cmd: EmergencyClose) -> list[Event]:
        self._emergency = _Emergency(cmd)
        return await self._drive(self.verify_polls)

    async def check_pending(self) -> list[Event]:
        """Finish a pending emergency stop: act again on what is left, verify, report."""
        if self._emergency is None:
            return []
        return await self._drive(0)

    async def _drive(self, polls: int) -> list[Event]:
        em = self._emergency
        assert em is not None
        events: list[Event] = []
        for poll in range(polls + 1):
            if await self._retrying(em, events, self._flatten_step) is None:
                return events  # broker unreachable: stays pending, retried later
            flat = await self._retrying(em, events, self._verify)
            if flat is None:
                return events
            if flat:
                events.append(await self._completed(em))
                self._emergency = None
                return events
            if poll < polls:
                await self._sleep(backoff_delay(poll + 1, self.backoff_initial,
                                                self.backoff_max))
        log.info(
            "emergency stop pending: %d orders, %d positions left (close orders working)",
            em.remaining_orders, em.remaining_positions,
        )
        return events

    async def _retrying(
        self, em: _Emergency, events: list[Event], step: Callable[[_Emergency], Awaitable[T]]
    ) -> T | None:
        """Run one step with backoff; every failed attempt becomes an EmergencyStopFailed."""

        def failed(state: RetryCallState) -> None:
            assert state.outcome is not None
            self._failed(em, events, state.outcome.exception())

        try:
            async for attempt in self._policy(lambda e: isinstance(e, Exception), failed):
                with attempt:
                    return await step(em)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then retried later
            self._failed(em, events, e)
        return None

    def _failed(self, em: _Emergency, events: list[Event], error: BaseException | None) -> None:
        em.attempts += 1
        text = f"{type(error).__name__}: {error}"
        em.failures.append(f"attempt {em.attempts}: {text}")
        log.error("emergency stop attempt %d failed: %s", em.attempts, text,
                  extra=log_context(em.cmd.cause, "executor"))
        events.append(
            EmergencyStopFailed.caused_by(
                em.cmd.cause, em.attempts, "execution.emergency_failed",
                occurred_at=self._now(em),
                session_date=em.cmd.session_date,
                attempt=em.attempts,
                error=text,
                remaining_orders=em.remaining_orders,
                remaining_positions=em.remaining_positions,
            )
        )

    async def _flatten_step(self, em: _Emergency) -> bool:
        """Idempotent: parts already done are skipped when a retry runs it again."""
        cmd = em.cmd
        if cmd.cancel_orders and not em.cancel_done:
            em.canceled += await self.broker.cancel_all_orders()
            em.cancel_done = True
        if not (cmd.cancel_orders or cmd.close_positions):
            return True
        ours = em.close_order_ids()
        open_orders = await self.broker.list_open_orders()
        if cmd.cancel_orders:  # anything that slipped in after the cancel-all
            em.canceled += await self._cancel_orders(o for o in open_orders if o.id not in ours)
        if cmd.close_positions:
            working = {o.id for o in open_orders if o.id in ours}
            latest = {c.symbol: c.order_id for c in em.closes}
            refused: list[BrokerRejection] = []
            for pos in await self.broker.list_positions():
                if latest.get(pos.symbol) in working:
                    continue  # its close order is still working
                try:
                    order = await self._close_symbol(pos, keep=frozenset(ours))
                except BrokerRejection as e:
                    refused.append(e)  # close the others first; report this one below
                    continue
                if order is not None:
                    em.closes.append(
                        _Closing(pos.symbol, pos.qty, pos.avg_entry_price, order.id)
                    )
            if refused:
                raise refused[0]
        return True

    async def _verify(self, em: _Emergency) -> bool:
        open_orders = await self.broker.list_open_orders()
        positions = await self.broker.list_positions()
        ours = em.close_order_ids()
        em.remaining_orders = sum(1 for o in open_orders if o.id not in ours)
        em.remaining_positions = len(positions)
        return (not em.cmd.cancel_orders or not open_orders) and (
            not em.cmd.close_positions or not positions
        )

    async def _completed(self, em: _Emergency) -> Event:
        realized = em.cmd.realized_pnl_before
        closed: list[ClosedPosition] = []
        failures = list(em.failures)
        for c in em.closes:
            price: Decimal | None
            try:
                order = await self.broker.get_order(c.order_id)
                filled, price = order.filled_qty, order.filled_avg_price
            except Exception as e:  # noqa: BLE001 - the stop is done; report what is unknown
                filled, price = abs(c.qty), None
                failures.append(f"{c.symbol}: fill price unknown ({type(e).__name__}: {e})")
            if filled == 0:
                continue  # that close order was replaced by a later one
            qty = filled if c.qty > 0 else -filled
            pnl = (price - c.avg_entry_price) * qty if price is not None else None
            if pnl is not None:
                realized += pnl
            # In cents, as every P&L figure we report (a broker's average entry carries many
            # digits); the total is rounded once, from the exact figures.
            closed.append(ClosedPosition(symbol=c.symbol, qty=qty, price=price,
                                         realized_pnl=None if pnl is None else to_cents(pnl)))
        return EmergencyStopCompleted.caused_by(
            em.cmd.cause, 0, "execution.emergency_completed",
            occurred_at=self._now(em),
            session_date=em.cmd.session_date,
            orders_canceled=em.canceled,
            positions_closed=tuple(closed),
            realized_pnl_after=to_cents(realized),
            failures=tuple(failures),
        )

    def _now(self, em: _Emergency) -> datetime:
        return self._clock() if self._clock is not None else em.cmd.cause.occurred_at
