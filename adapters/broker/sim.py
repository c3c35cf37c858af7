"""The simulated broker: Alpaca's order semantics over recorded bars, with no clock.

Two layers:

* `SimEngine`, a plain synchronous fill engine. Backtests drive it directly: every bar goes
  through `on_bar(bar)`, which only looks at the working orders of that bar's symbol.
* `SimulatedBroker`, the async `BrokerPort` facade the executor talks to; it delegates to the
  engine and fans every trade update out to `trade_updates()` subscribers.

Fill rules (all prices Decimal; a bar's `timestamp` is its start, Alpaca's convention):

* Time. An order's submit time is the `now` its caller passes, else the last bar seen (any
  symbol), never the wall clock. A market (or limit) entry only trades on a bar whose
  timestamp is strictly after its submit time, so a decision taken on bar t never trades
  inside bar t (no look-ahead).
* Market order: fills at that bar's open (plus slippage).
* Limit order (entry or take-profit leg): buy fills when low <= limit, sell when high >= limit,
  at the limit, or at the open when the bar opens through it. No slippage: a limit never fills
  worse than its limit.
* Stop leg: a sell stop triggers when low <= stop, a buy stop when high >= stop; it fills at
  the stop, or at the open when the bar opens through it, plus slippage (it becomes a market
  order).
* Brackets: the legs are "held" until the entry fills, then both work, in the same bar the
  entry filled in (the entry traded at the open, the bar's first print, so the rest of the bar
  came after it). The legs are one-cancels-other. When one bar crosses both legs, the stop
  fills first (we cannot know the intrabar order, so assume the worse one) -- unless the bar
  *opens* through the target, in which case the open is the first trade and the target fills
  there.
* Closing a position is a market order for the whole quantity, filled at the next bar's open.
  `immediate_price=True` (per call, or `immediate_close=True` for the broker) fills it at once
  at the last known price instead: for flattening at the end of a backtest, when no next bar
  will come. Like Alpaca, a close is refused while open orders (e.g. bracket legs) already
  hold the shares: cancel them first.
* Account: cash moves with every fill and commission; equity = cash + positions marked at
  the last bar close; buying power = equity * multiplier - gross exposure - notional reserved
  by open entry orders. With the default multiplier 1 and long positions only, that is cash
  minus open buy orders, like a cash account.

Errors mirror Alpaca's API: duplicate client_order_id -> 40010001 (422); insufficient buying
power or shares held by other orders -> 40310000 (403); unknown order/position -> 40410000
(404); invalid request or an order that is no longer cancelable -> 42210000 (422).

Ids are deterministic (uuid5 of a counter or of the client_order_id), so a backtest run twice
produces the same order ids, execution ids and therefore the same domain event ids.

Past ~400 lines: `SimEngine` is one matching engine (orders, bracket legs, positions, cash and
the order in which a bar fills them); its rules hold only together, and the backtest's byte
for byte determinism rests on them running in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, uuid5

from adapters.broker.port import (
    BrokerAccount,
    BrokerOrder,
    BrokerPosition,
    BrokerRejection,
    OrderRequest,
    TradeUpdate,
)
from domain.pnl import Position, apply_fill
from domain.values import Bar, Side

if TYPE_CHECKING:
    from config.settings import SimBroker

__all__ = ["SimEngine", "SimulatedBroker"]

_NS = uuid5(NAMESPACE_URL, "catalyst:sim-broker")
_ZERO = Decimal(0)
_BPS = Decimal(10_000)
_PRICE_STEP = Decimal("0.0001")
# Updates emitted before any bar or `now` was seen need some timestamp; a fixed one keeps
# runs deterministic.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DUPLICATE_CLIENT_ORDER_ID = "40010001"
INSUFFICIENT = "40310000"
NOT_FOUND = "40410000"
UNPROCESSABLE = "42210000"


@dataclass(slots=True, eq=False)
class _Order:
    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    type: str  # market / limit / stop
    submitted_at: datetime | None
    time_in_force: str = "day"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: str = "new"
    filled_qty: Decimal = _ZERO
    filled_avg_price: Decimal | None = None
    updated_at: datetime | None = None
    order_class: str = "simple"
    legs: list[_Order] = field(default_factory=list)
    parent: _Order | None = None
    leg: str | None = None  # "stop_loss" / "take_profit"
    reserved: Decimal = _ZERO  # buying power held while the entry is open

    @property
    def working(self) -> bool:
        return self.status in ("new", "accepted")


@dataclass(slots=True)
class _Position:
    """A symbol's position, kept with the shared P&L maths (domain.pnl, average cost) so the
    broker's average price and realized P&L are the ones the rest of the system computes."""

    book: Position

    @property
    def qty(self) -> Decimal:  # signed: negative is short
        return self.book.qty

    @property
    def avg_entry_price(self) -> Decimal:
        avg = self.book.avg_price
        assert avg is not None  # flat positions are removed
        return avg


class SimEngine:
    """Synchronous order book + fill engine. Every mutation reports its trade updates to
    `listener` (if set); `on_bar` also returns the updates that bar caused."""

    def __init__(
        self,
        *,
        starting_cash: Decimal = Decimal("100000"),
        commission_per_share: Decimal = _ZERO,
        slippage_bps: Decimal = _ZERO,
        buying_power_multiplier: Decimal = Decimal(1),
        immediate_close: bool = False,
    ) -> None:
        self.cash = Decimal(starting_cash)
        self.commission_per_share = Decimal(commission_per_share)
        self.slippage_bps = Decimal(slippage_bps)
        self.buying_power_multiplier = Decimal(buying_power_multiplier)
        self.immediate_close = immediate_close
        self.realized_pnl = _ZERO  # net of commissions
        self.fees = _ZERO
        self.clock: datetime | None = None
        self.listener: Callable[[TradeUpdate], None] | None = None
        self._orders: dict[str, _Order] = {}
        self._by_client_id: dict[str, _Order] = {}
        # Working orders per symbol (entries and active legs; held legs are not here).
        self._open: dict[str, dict[str, _Order]] = {}
        self._positions: dict[str, _Position] = {}
        self._last_price: dict[str, Decimal] = {}
        self._seq = 0
        self._exec_seq = 0
        self._reserved = _ZERO

    # --- clock and prices --------------------------------------------------------------------

    def set_clock(self, now: datetime) -> None:
        """Advance the broker's notion of "now" (never backwards)."""
        if self.clock is None or now > self.clock:
            self.clock = now

    def last_price(self, symbol: str) -> Decimal | None:
        return self._last_price.get(symbol)

    # --- orders ------------------------------------------------------------------------------

    def submit(self, request: OrderRequest, now: datetime | None = None) -> BrokerOrder:
        if request.client_order_id in self._by_client_id:
            raise BrokerRejection(
                DUPLICATE_CLIENT_ORDER_ID, "client_order_id must be unique", status=422
            )
        self._validate(request)
        if now is not None:
            self.set_clock(now)
        at = now or self.clock
        opening = self._opening_qty(request.symbol, request.side, request.qty)
        ref_price = request.limit_price or self._last_price.get(request.symbol)
        reserve = opening * ref_price if ref_price is not None else _ZERO
        if reserve > _ZERO and reserve > self.buying_power():
            raise BrokerRejection(INSUFFICIENT, "insufficient buying power", status=403)

        order = _Order(
            id=self._order_id(f"client:{request.client_order_id}"),
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
            type=request.type,
            submitted_at=at,
            updated_at=at,
            time_in_force=request.time_in_force,
            limit_price=request.limit_price,
            reserved=reserve,
        )
        if request.is_bracket:
            order.order_class = "bracket"
            exit_side = request.side.opposite
            for leg, type_, price in (
                ("stop_loss", "stop", request.stop_loss),
                ("take_profit", "limit", request.take_profit),
            ):
                child = _Order(
                    id=self._order_id(f"client:{request.client_order_id}:{leg}"),
                    client_order_id=str(uuid5(_NS, f"{request.client_order_id}:{leg}")),
                    symbol=request.symbol,
                    side=exit_side,
                    qty=request.qty,
                    type=type_,
                    submitted_at=at,
                    updated_at=at,
                    time_in_force=request.time_in_force,
                    limit_price=price if type_ == "limit" else None,
                    stop_price=price if type_ == "stop" else None,
                    status="held",
                    order_class="bracket",
                    parent=order,
                    leg=leg,
                )
                order.legs.append(child)
                self._register(child)
        self._register(order)
        self._open.setdefault(order.symbol, {})[order.id] = order
        self._reserved += reserve
        self._emit(TradeUpdate(event="new", order=self._snapshot(order), timestamp=at or _EPOCH))
        return self._snapshot(order)

    def get(self, order_id: str) -> BrokerOrder:
        order = self._orders.get(order_id)
        if order is None:
            raise BrokerRejection(NOT_FOUND, "order not found", status=404)
        return self._snapshot(order)

    def get_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        order = self._by_client_id.get(client_order_id)
        return self._snapshot(order) if order else None

    def open_orders(self) -> list[BrokerOrder]:
        """Every open order, legs included as separate orders (held ones too)."""
        return [self._snapshot(o) for o in self._orders.values() if o.status in _OPEN]

    def orders_since(self, since: datetime) -> list[BrokerOrder]:
        return [
            self._snapshot(o) for o in self._orders.values()
            if o.submitted_at is not None and o.submitted_at >= since
        ]

    def cancel(self, order_id: str, now: datetime | None = None) -> int:
        """Cancel one order (a parent takes its held legs along); returns how many ended."""
        order = self._orders.get(order_id)
        if order is None:
            raise BrokerRejection(NOT_FOUND, "order not found", status=404)
        if order.status not in _OPEN:
            raise BrokerRejection(UNPROCESSABLE, f"order is {order.status}", status=422)
        at = now or self.clock or _EPOCH
        self._cancel(order, at)
        count = 1
        for child in order.legs:
            if child.status in _OPEN:
                self._cancel(child, at)
                count += 1
        return count

    def cancel_all(self, now: datetime | None = None) -> int:
        count = 0
        for order in list(self._orders.values()):
            if order.status in _OPEN:
                count += self.cancel(order.id, now)
        return count

    # --- positions and account ---------------------------------------------------------------

    def positions(self) -> list[BrokerPosition]:
        out = []
        for symbol, pos in self._positions.items():
            price = self._last_price.get(symbol)
            out.append(
                BrokerPosition(
                    symbol=symbol,
                    qty=pos.qty,
                    avg_entry_price=pos.avg_entry_price,
                    current_price=price,
                    unrealized_pl=(
                        (price - pos.avg_entry_price) * pos.qty if price is not None else None
                    ),
                )
            )
        return out

    def close_position(
        self, symbol: str, now: datetime | None = None, immediate_price: bool | None = None
    ) -> BrokerOrder:
        pos = self._positions.get(symbol)
        if pos is None:
            raise BrokerRejection(NOT_FOUND, "position does not exist", status=404)
        side = Side.SELL if pos.qty > 0 else Side.BUY
        wanted = abs(pos.qty)
        available = wanted - self._held_qty(symbol, side)
        if available < wanted:
            raise BrokerRejection(
                INSUFFICIENT,
                f"insufficient qty available for order (requested: {wanted}, "
                f"available: {max(available, _ZERO)})",
                status=403,
            )
        if now is not None:
            self.set_clock(now)
        self._seq += 1
        coid = str(uuid5(_NS, f"close:{self._seq}"))
        request = OrderRequest(client_order_id=coid, symbol=symbol, side=side, qty=wanted)
        self.submit(request, now)
        order = self._by_client_id[coid]
        immediate = self.immediate_close if immediate_price is None else immediate_price
        if immediate:
            price = self._last_price.get(symbol)
            if price is None:
                raise BrokerRejection(UNPROCESSABLE, f"no known price for {symbol}", 422)
            self._fill(order, price, now or self.clock or _EPOCH, slip=True)
        return self._snapshot(order)

    def close_all(
        self, now: datetime | None = None, immediate_price: bool | None = None
    ) -> list[BrokerOrder]:
        """Like Alpaca's DELETE /positions?cancel_orders=true: cancels open orders first."""
        self.cancel_all(now)
        return [self.close_position(s, now, immediate_price) for s in list(self._positions)]

    def account(self) -> BrokerAccount:
        return BrokerAccount(
            cash=self.cash, equity=self.equity(), buying_power=self.buying_power()
        )

    def equity(self) -> Decimal:
        value = self.cash
        for symbol, pos in self._positions.items():
            value += pos.qty * self._last_price.get(symbol, pos.avg_entry_price)
        return value

    def buying_power(self) -> Decimal:
        gross = _ZERO
        equity = self.cash
        for symbol, pos in self._positions.items():
            price = self._last_price.get(symbol, pos.avg_entry_price)
            equity += pos.qty * price
            gross += abs(pos.qty) * price
        return max(_ZERO, equity * self.buying_power_multiplier - gross - self._reserved)

    # --- the fill engine ---------------------------------------------------------------------

    def on_bar(self, bar: Bar) -> list[TradeUpdate]:
        """Trade the bar's symbol's working orders against it; O(those orders)."""
        ts = bar.timestamp
        if self.clock is None or ts > self.clock:
            self.clock = ts
        book = self._open.get(bar.symbol)
        updates: list[TradeUpdate] = []
        if book:
            done_brackets: set[str] = set()
            for order in list(book.values()):
                if not order.working:
                    continue  # ended earlier in this bar (an OCO sibling)
                if order.parent is None:
                    if order.submitted_at is not None and ts <= order.submitted_at:
                        continue
                    price = self._entry_price(order, bar)
                    if price is None:
                        continue
                    updates.append(self._fill(order, price, ts, slip=order.type == "market"))
                    if order.legs:
                        done_brackets.add(order.id)
                        self._trade_legs(order, bar, updates)
                elif order.parent.id not in done_brackets:
                    done_brackets.add(order.parent.id)
                    self._trade_legs(order.parent, bar, updates)
        self._last_price[bar.symbol] = bar.close
        return updates

    def _trade_legs(self, parent: _Order, bar: Bar, updates: list[TradeUpdate]) -> None:
        stop = tp = None
        for child in parent.legs:
            if child.working:
                if child.leg == "stop_loss":
                    stop = child
                else:
                    tp = child
        stop_px = _stop_price(stop, bar) if stop else None
        tp_px = _limit_price(tp, bar) if tp else None
        first: _Order | None = None
        if stop_px is not None and tp_px is not None:
            # Both crossed: the stop first, unless the open itself went through the target.
            first = tp if tp_px == bar.open and stop_px != bar.open else stop
        elif stop_px is not None:
            first = stop
        elif tp_px is not None:
            first = tp
        if first is None:
            return
        px = stop_px if first is stop else tp_px
        assert px is not None
        updates.append(self._fill(first, px, bar.timestamp, slip=first is stop))
        other = tp if first is stop else stop
        if other is not None and other.working:
            updates.append(self._cancel(other, bar.timestamp))

    def _entry_price(self, order: _Order, bar: Bar) -> Decimal | None:
        if order.type == "market":
            return bar.open
        return _limit_price(order, bar)

    def _fill(self, order: _Order, price: Decimal, at: datetime, slip: bool) -> TradeUpdate:
        if slip and self.slippage_bps:
            adj = price * self.slippage_bps / _BPS
            price = (price + adj if order.side is Side.BUY else price - adj).quantize(
                _PRICE_STEP
            )
        qty = order.qty
        fee = self.commission_per_share * qty
        self._apply_fill(order.symbol, order.side, qty, price, fee)
        order.status = "filled"
        order.filled_qty = qty
        order.filled_avg_price = price
        order.updated_at = at
        self._release(order)
        for child in order.legs:  # a bracket's legs start working with its entry fill
            if child.status == "held":
                child.status = "new"
                child.updated_at = at
                self._open.setdefault(child.symbol, {})[child.id] = child
        self._exec_seq += 1
        pos = self._positions.get(order.symbol)
        update = TradeUpdate(
            event="fill",
            order=self._snapshot(order),
            timestamp=at,
            execution_id=str(uuid5(_NS, f"exec:{self._exec_seq}")),
            price=price,
            qty=qty,
            position_qty=pos.qty if pos else _ZERO,
            fee=fee,
        )
        self._emit(update)
        return update

    def _apply_fill(
        self, symbol: str, side: Side, qty: Decimal, price: Decimal, fee: Decimal
    ) -> None:
        signed = qty if side is Side.BUY else -qty
        self.cash -= signed * price + fee
        self.fees += fee
        pos = self._positions.get(symbol)
        # Average cost, partial closes and flips through flat: domain.pnl.apply_fill.
        result = apply_fill(pos.book if pos else Position(), side, qty, price, fee)
        self.realized_pnl += result.realized - fee
        if result.position.is_flat:
            self._positions.pop(symbol, None)
        else:
            self._positions[symbol] = _Position(result.position)

    def _cancel(self, order: _Order, at: datetime) -> TradeUpdate:
        order.status = "canceled"
        order.updated_at = at
        self._release(order)
        update = TradeUpdate(event="canceled", order=self._snapshot(order), timestamp=at)
        self._emit(update)
        return update

    def _release(self, order: _Order) -> None:
        book = self._open.get(order.symbol)
        if book is not None:
            book.pop(order.id, None)
            if not book:
                del self._open[order.symbol]
        if order.reserved:
            self._reserved -= order.reserved
            order.reserved = _ZERO

    # --- helpers -----------------------------------------------------------------------------

    def _validate(self, request: OrderRequest) -> None:
        def bad(msg: str) -> BrokerRejection:
            return BrokerRejection(UNPROCESSABLE, msg, status=422)

        if request.qty <= 0:
            raise bad("qty must be > 0")
        if request.type == "limit" and (request.limit_price is None or request.limit_price <= 0):
            raise bad("limit_price is required for limit orders")
        if (request.stop_loss is None) != (request.take_profit is None):
            raise bad("bracket orders need both stop_loss and take_profit")
        if request.is_bracket:
            assert request.stop_loss is not None and request.take_profit is not None
            ok = (
                request.stop_loss < request.take_profit
                if request.side is Side.BUY
                else request.stop_loss > request.take_profit
            )
            if not ok:
                raise bad("take_profit.limit_price must be on the profit side of stop_price")

    def _opening_qty(self, symbol: str, side: Side, qty: Decimal) -> Decimal:
        """The part of an order that adds exposure (and so needs buying power)."""
        pos = self._positions.get(symbol)
        if pos is None or (pos.qty > 0) == (side is Side.BUY):
            return qty
        return max(_ZERO, qty - abs(pos.qty))

    def _held_qty(self, symbol: str, side: Side) -> Decimal:
        """Shares already promised to open orders on that side (OCO legs count once)."""
        held = _ZERO
        seen_parents: set[str] = set()
        for order in self._open.get(symbol, {}).values():
            if order.side is not side:
                continue
            if order.parent is not None:
                if order.parent.id in seen_parents:
                    continue
                seen_parents.add(order.parent.id)
            held += order.qty - order.filled_qty
        return held

    def _order_id(self, key: str) -> str:
        return str(uuid5(_NS, f"order:{key}"))

    def _register(self, order: _Order) -> None:
        self._orders[order.id] = order
        self._by_client_id[order.client_order_id] = order

    def _emit(self, update: TradeUpdate) -> None:
        if self.listener is not None:
            self.listener(update)

    def _snapshot(self, order: _Order) -> BrokerOrder:
        return BrokerOrder(
            id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            type=order.type,
            status=order.status,
            filled_qty=order.filled_qty,
            filled_avg_price=order.filled_avg_price,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            order_class=order.order_class,
            legs=tuple(self._snapshot(c) for c in order.legs),
            parent_id=order.parent.id if order.parent else None,
            leg=order.leg,  # type: ignore[arg-type]
            created_at=order.submitted_at,
            updated_at=order.updated_at,
        )


_OPEN = frozenset({"new", "accepted", "held"})


def _limit_price(order: _Order, bar: Bar) -> Decimal | None:
    limit = order.limit_price
    assert limit is not None
    if order.side is Side.BUY:
        if bar.open <= limit:
            return bar.open
        return limit if bar.low <= limit else None
    if bar.open >= limit:
        return bar.open
    return limit if bar.high >= limit else None


def _stop_price(order: _Order, bar: Bar) -> Decimal | None:
    stop = order.stop_price
    assert stop is not None
    if order.side is Side.SELL:
        if bar.open <= stop:
            return bar.open
        return stop if bar.low <= stop else None
    if bar.open >= stop:
        return bar.open
    return stop if bar.high >= stop else None


class _UpdateStream:
    """One subscriber's view of the trade updates; registered when created, so nothing
    emitted between `trade_updates()` and the first `anext` is lost."""

    def __init__(self, broker: SimulatedBroker) -> None:
        self._broker = broker
        self.queue: asyncio.Queue[TradeUpdate | None] = asyncio.Queue()
        broker._subscribers.append(self.queue)

    def __aiter__(self) -> _UpdateStream:
        return self

    async def __anext__(self) -> TradeUpdate:
        item = await self.queue.get()
        if item is None:
            self._broker._unsubscribe(self.queue)
            raise StopAsyncIteration
        return item


class SimulatedBroker:
    """`BrokerPort` over a `SimEngine`. The runtime feeds every bar to `on_bar`."""

    name = "sim"

    def __init__(
        self,
        *,
        starting_cash: Decimal = Decimal("100000"),
        commission_per_share: Decimal = _ZERO,
        slippage_bps: Decimal = _ZERO,
        buying_power_multiplier: Decimal = Decimal(1),
        immediate_close: bool = False,
    ) -> None:
        self.engine = SimEngine(
            starting_cash=starting_cash,
            commission_per_share=commission_per_share,
            slippage_bps=slippage_bps,
            buying_power_multiplier=buying_power_multiplier,
            immediate_close=immediate_close,
        )
        self._subscribers: list[asyncio.Queue[TradeUpdate | None]] = []
        self.engine.listener = self._publish

    @classmethod
    def from_settings(cls, sim: SimBroker, **kwargs: object) -> SimulatedBroker:
        return cls(
            starting_cash=sim.starting_cash,
            commission_per_share=sim.commission_per_share,
            slippage_bps=sim.slippage_bps,
            **kwargs,  # type: ignore[arg-type]
        )

    # Driving the simulation (not part of the port).

    def on_bar(self, bar: Bar) -> list[TradeUpdate]:
        return self.engine.on_bar(bar)

    def set_clock(self, now: datetime) -> None:
        self.engine.set_clock(now)

    @property
    def immediate_close(self) -> bool:
        return self.engine.immediate_close

    @immediate_close.setter
    def immediate_close(self, value: bool) -> None:
        self.engine.immediate_close = value

    # BrokerPort.

    async def submit_order(
        self, request: OrderRequest, now: datetime | None = None
    ) -> BrokerOrder:
        return self.engine.submit(request, now)

    async def get_order(self, order_id: str) -> BrokerOrder:
        return self.engine.get(order_id)

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        return self.engine.get_by_client_id(client_order_id)

    async def list_open_orders(self) -> list[BrokerOrder]:
        return self.engine.open_orders()

    async def list_orders_since(self, since: datetime) -> list[BrokerOrder]:
        return self.engine.orders_since(since)

    async def cancel_order(self, order_id: str) -> None:
        self.engine.cancel(order_id)

    async def cancel_all_orders(self) -> int:
        return self.engine.cancel_all()

    async def list_positions(self) -> list[BrokerPosition]:
        return self.engine.positions()

    async def close_position(
        self, symbol: str, now: datetime | None = None, immediate_price: bool | None = None
    ) -> BrokerOrder:
        return self.engine.close_position(symbol, now, immediate_price)

    async def close_all_positions(
        self, now: datetime | None = None, immediate_price: bool | None = None
    ) -> list[BrokerOrder]:
        return self.engine.close_all(now, immediate_price)

    async def get_account(self) -> BrokerAccount:
        return self.engine.account()

    def trade_updates(self) -> AsyncIterator[TradeUpdate]:
        return _UpdateStream(self)

    async def close(self) -> None:
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    def _publish(self, update: TradeUpdate) -> None:
        for queue in self._subscribers:
            queue.put_nowait(update)

    def _unsubscribe(self, queue: asyncio.Queue[TradeUpdate | None]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)
