"""Contract: the simulated broker and the Alpaca adapter (on the fake Alpaca server, through
the real alpaca-py) turn the same scenario into the same domain events.

Each scenario is written once against a `Harness` and runs on both brokers. The harness
drives the production path: `Executor.commands_for` builds the command, `ExecutionService`
runs it, and the broker's `trade_updates()` stream is translated into events. Markets move
differently on each side: the simulated broker fills from bars (`on_bar`), the fake from its
fill controls, at the same prices.

What is compared is a one-line rendering of each event: type, our order id, symbol, side,
quantities, prices, leg, reason/code. Broker order ids, execution ids and times differ by
nature and are left out; an order that is not ours (a close order the broker made) shows as
`<broker>`. Events pass through a log keyed by event id, as JetStream's Nats-Msg-Id
de-duplication would, so a repeated event id shows up once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from adapters.broker.alpaca import AlpacaBroker
from adapters.broker.execution import ExecutionService
from adapters.broker.port import BrokerOrder, BrokerPort, OrderRequest
from adapters.broker.sim import SimulatedBroker
from config.settings import Settings
from domain.events import (
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    Event,
    FlattenRequested,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
)
from domain.values import Bar, Side
from handlers.executor import Executor
from tests.builders import T0, make
from tests.fakes.alpaca_fixtures import broker_settings
from tests.fakes.alpaca_server import FakeAlpaca

pytestmark = pytest.mark.integration

SETTINGS = Settings()
MARKER_PREFIX = "marker-"


# --- rendering events -----------------------------------------------------------------------


def num(value: Decimal | None) -> str:
    return "-" if value is None else format(value.normalize(), "f")


def render(e: Event, ours: dict[str, str]) -> str:
    """One line per event, without what legitimately differs between brokers."""
    oid = getattr(e, "order_id", None)
    if oid is not None and ours.get(oid) != getattr(e, "client_order_id", None):
        oid = "<broker>"  # not one of ours (or ours under a wrong client_order_id)
    if isinstance(e, OrderSubmitted):
        return (f"submitted {oid} {e.symbol} {e.side.value} {num(e.qty)} {e.order_type} "
                f"sl={num(e.stop_loss)} tp={num(e.take_profit)} legs={len(e.legs)}")
    if isinstance(e, OrderRejected):
        return f"rejected {oid} {e.symbol} code={e.code} {e.message}"
    if isinstance(e, OrderFilled | OrderPartiallyFilled):
        kind = "filled" if isinstance(e, OrderFilled) else "partially_filled"
        return (f"{kind} {oid} {e.symbol} {e.side.value} {num(e.qty)}@{num(e.price)} "
                f"cum={num(e.filled_qty)} leg={e.leg or '-'} fee={num(e.fee)}")
    if isinstance(e, OrderCanceled):
        return f"canceled {oid} {e.symbol} leg={e.leg or '-'} {e.reason}"
    if isinstance(e, PositionClosed):
        return f"position_closed {e.symbol} {num(e.qty)} {e.reason}"
    if isinstance(e, EmergencyStopCompleted):
        closed = ", ".join(f"{p.symbol} {num(p.qty)}@{num(p.price)} pnl={num(p.realized_pnl)}"
                           for p in e.positions_closed)
        return (f"emergency_completed canceled={e.orders_canceled} closed=[{closed}] "
                f"realized_after={num(e.realized_pnl_after)} failures={len(e.failures)}")
    if isinstance(e, EmergencyStopFailed):
        return f"emergency_failed attempt={e.attempt}"
    return e.type


# --- commands, built the production way -----------------------------------------------------


def approval(order_id: str, symbol: str = "AAPL", qty: str = "10", *, bracket: bool = False,
             limit: str | None = None) -> OrderApproved:
    return make(
        OrderApproved, f"approved:{order_id}", T0, order_id=order_id,
        client_order_id=f"coid-{order_id}", signal_id=f"sig-{order_id}", symbol=symbol,
        side=Side.BUY, qty=Decimal(qty), entry=Decimal(limit or "100"),
        stop_loss=Decimal("95") if bracket else None,
        take_profit=Decimal("110") if bracket else None,
        order_type="limit" if limit else "market", use_bracket=bracket,
    )


def emergency_trigger() -> EmergencyStopTriggered:
    return make(EmergencyStopTriggered, "emergency", T0 + timedelta(hours=1),
                session_date=T0.date(), pnl=Decimal("-2000"), limit=Decimal("-2000"),
                reason="daily loss limit")


def flatten_request() -> FlattenRequested:
    return make(FlattenRequested, "flatten", T0 + timedelta(hours=6), session_id="s1",
                reason="market_close")


# --- the harness: one per broker ------------------------------------------------------------


class Harness:
    """Runs commands, reads the broker's update stream, records what each step emitted."""

    kind: str
    broker: BrokerPort

    def __init__(self) -> None:
        self.service: ExecutionService
        self.executor = Executor()
        self.ours: dict[str, str] = {}  # our order id -> client_order_id
        self.log: dict[UUID, Event] = {}  # by event id, like the JetStream log
        self.steps: list[list[str]] = []
        self._streamed: list[Event] = []
        self._arrived = asyncio.Condition()
        self._pump_task: asyncio.Task[None] | None = None
        self._updates: AsyncIterator[Any] | None = None
        self._markers = 0

    def _service(self) -> ExecutionService:
        # verify_polls=0: an emergency whose closes have not filled returns pending at once,
        # on both brokers alike (check_pending finishes it once the test has filled them).
        return ExecutionService(self.broker, backoff_initial=0.01, backoff_max=0.05,
                                verify_polls=0)

    async def start(self) -> None:
        self.service = self._service()
        self._updates = self.broker.trade_updates()
        self._pump_task = asyncio.create_task(self._pump())

    async def stop(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
        aclose = getattr(self._updates, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        await self.broker.close()

    async def _pump(self) -> None:
        assert self._updates is not None
        async for update in self._updates:
            events = self.service.translate(update, "contract")
            async with self._arrived:
                self._streamed.extend(events)
                self._arrived.notify_all()

    # --- steps --------------------------------------------------------------------------

    async def step(self, action: Awaitable[Any], *, ordered: bool = True) -> list[Event]:
        """Run one action, wait until the stream has delivered everything it caused, record
        the events new to the log. `ordered=False` for one action that ends several orders
        at once (the brokers may list them in different orders)."""
        result = await action
        returned: list[Event] = result if isinstance(result, list) else []
        streamed = await self._sync()
        lines = [] if isinstance(result, list) or result is None else [f"returned {result}"]
        for e in [*returned, *streamed]:
            if e.event_id not in self.log:
                self.log[e.event_id] = e
                lines.append(render(e, self.ours))
        self.steps.append(lines if ordered else sorted(lines))
        return returned

    async def _sync(self) -> list[Event]:
        """A marker order placed and canceled: once its cancel arrives, every update caused
        before it has arrived too (one stream delivers in order)."""
        self._markers += 1
        cid = f"{MARKER_PREFIX}{self._markers}"
        marker = await self.broker.submit_order(OrderRequest(
            client_order_id=cid, symbol="MARK", side=Side.BUY, qty=Decimal(1), type="limit",
            limit_price=Decimal("1.00")))
        await self.broker.cancel_order(marker.id)

        def arrived() -> bool:
            return any(isinstance(e, OrderCanceled) and e.client_order_id == cid
                       for e in self._streamed)

        assert self._pump_task is not None
        async with asyncio.timeout(10), self._arrived:
            while not arrived():
                waiter = asyncio.ensure_future(self._arrived.wait())
                await asyncio.wait({waiter, self._pump_task},
                                   return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    self._pump_task.result()  # raises why the stream died
                    raise AssertionError("trade_updates() ended")
            events, self._streamed = self._streamed, []
        return [e for e in events if not getattr(e, "client_order_id", "").startswith(
            MARKER_PREFIX)]

    # --- actions ------------------------------------------------------------------------

    async def run(self, event: Event) -> list[Event]:
        out: list[Event] = []
        for command in self.executor.commands_for(event, SETTINGS):
            out += await self.service.execute(command)
        return out

    async def submit(self, approved: OrderApproved) -> list[Event]:
        self.ours[approved.order_id] = approved.client_order_id
        return await self.run(approved)

    async def cancel_all(self) -> int:
        return await self.broker.cancel_all_orders()

    async def entries(self, symbol: str) -> list[BrokerOrder]:
        """Every entry order for `symbol` the broker holds, whatever its status."""
        orders = await self.broker.list_orders_since(datetime(2000, 1, 1, tzinfo=UTC))
        return [o for o in orders if o.symbol == symbol and o.parent_id is None]

    async def book(self) -> tuple[list[tuple[str, Decimal, Decimal]], list[str]]:
        positions = await self.broker.list_positions()
        orders = await self.broker.list_open_orders()
        return ([(p.symbol, p.qty, p.avg_entry_price) for p in positions],
                [o.symbol for o in orders])

    async def _our_order(self, order_id: str, leg: str | None) -> BrokerOrder:
        entry = await self.broker.get_order_by_client_id(self.ours[order_id])
        assert entry is not None, order_id
        if leg is None:
            return entry
        return next(x for x in entry.legs if x.leg == leg)

    # Market moves: each broker's own way.
    async def set_price(self, symbol: str, price: str) -> None:
        raise NotImplementedError

    async def fill(self, order_id: str, price: str, leg: str | None = None) -> None:
        """The market trades our order (or its `leg`) at `price`."""
        raise NotImplementedError

    async def fill_closes(self, prices: dict[str, str]) -> None:
        """The market takes the close orders working on these symbols at these prices."""
        raise NotImplementedError


class SimHarness(Harness):
    kind = "sim"

    def __init__(self) -> None:
        super().__init__()
        self.sim = SimulatedBroker()
        self.broker = self.sim
        self.sim.set_clock(T0)
        self._minute = 0

    def _bar(self, symbol: str, price: str) -> None:
        self._minute += 1
        p = Decimal(price)
        self.sim.on_bar(Bar(symbol=symbol, timestamp=T0 + timedelta(minutes=self._minute),
                            open=p, high=p, low=p, close=p, volume=1000))

    async def set_price(self, symbol: str, price: str) -> None:
        self._bar(symbol, price)

    async def fill(self, order_id: str, price: str, leg: str | None = None) -> None:
        order = await self._our_order(order_id, leg)
        self._bar(order.symbol, price)
        after = await self.sim.get_order(order.id)
        assert after.status == "filled", f"the bar at {price} did not fill {order_id} {leg}"

    async def fill_closes(self, prices: dict[str, str]) -> None:
        for symbol, price in prices.items():
            self._bar(symbol, price)


class AlpacaHarness(Harness):
    kind = "alpaca"

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeAlpaca()

    async def start(self) -> None:
        await self.fake.start()
        self.broker = AlpacaBroker(broker_settings(self.fake), backoff_initial=0.01,
                                   backoff_max=0.05, stream_reconnect_min=0.05)
        await super().start()
        # Connected, and the connect's backfill listing answered: updates now arrive live.
        await self.fake.wait_for_listen_count(1)
        await self.fake.wait_for_requests("GET", "/v2/orders", 1)

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            await self.fake.stop()

    async def set_price(self, symbol: str, price: str) -> None:
        self.fake.set_price(symbol, price)

    async def fill(self, order_id: str, price: str, leg: str | None = None) -> None:
        order = await self._our_order(order_id, leg)
        await self.fake.fill(order.id, price)

    async def fill_closes(self, prices: dict[str, str]) -> None:
        for symbol, price in prices.items():
            closes = [o for o in self.fake.open_orders()
                      if o.symbol == symbol and o.type == "market" and o.parent is None]
            assert len(closes) == 1, f"close orders on {symbol}: {closes}"
            await self.fake.fill(closes[0].id, price)


@pytest.fixture(params=["sim", "alpaca"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h: Harness = SimHarness() if request.param == "sim" else AlpacaHarness()
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


# --- the scenarios (written once) -----------------------------------------------------------

SUBMITTED_BRACKET = "submitted ord-b AAPL buy 10 market sl=95 tp=110 legs=2"
ENTRY_FILLED = "filled ord-b AAPL buy 10@100 cum=10 leg=- fee=0"


async def market_order(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    await h.step(h.submit(approval("ord-1")))
    await h.step(h.fill("ord-1", "100.5"))
    assert h.steps == [
        ["submitted ord-1 AAPL buy 10 market sl=- tp=- legs=0"],
        ["filled ord-1 AAPL buy 10@100.5 cum=10 leg=- fee=0"],
    ]
    assert await h.book() == ([("AAPL", Decimal(10), Decimal("100.5"))], [])


async def bracket_take_profit(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    await h.step(h.submit(approval("ord-b", bracket=True)))
    await h.step(h.fill("ord-b", "100"))
    await h.step(h.fill("ord-b", "110", leg="take_profit"))
    assert h.steps == [
        [SUBMITTED_BRACKET],
        [ENTRY_FILLED],
        ["filled ord-b AAPL sell 10@110 cum=10 leg=take_profit fee=0",
         "canceled ord-b AAPL leg=stop_loss canceled"],  # one-cancels-other
    ]
    assert await h.book() == ([], [])


async def bracket_stop_loss(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    await h.step(h.submit(approval("ord-b", bracket=True)))
    await h.step(h.fill("ord-b", "100"))
    await h.step(h.fill("ord-b", "95", leg="stop_loss"))
    assert h.steps == [
        [SUBMITTED_BRACKET],
        [ENTRY_FILLED],
        ["filled ord-b AAPL sell 10@95 cum=10 leg=stop_loss fee=0",
         "canceled ord-b AAPL leg=take_profit canceled"],
    ]
    assert await h.book() == ([], [])


async def duplicate_client_order_id(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    first = await h.step(h.submit(approval("ord-d")))
    again = await h.step(h.submit(approval("ord-d")))  # a redelivery, or a re-run
    assert h.steps == [["submitted ord-d AAPL buy 10 market sl=- tp=- legs=0"], []]
    assert [e.event_id for e in again] == [e.event_id for e in first]  # reported once
    assert [o.client_order_id for o in await h.entries("AAPL")] == ["coid-ord-d"]


async def cancel_all(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    await h.set_price("NVDA", "80")
    await h.step(h.submit(approval("ord-b", bracket=True)))
    await h.step(h.fill("ord-b", "100"))
    await h.step(h.submit(approval("ord-n", symbol="NVDA", limit="50")))
    await h.step(h.cancel_all(), ordered=False)
    assert h.steps == [
        [SUBMITTED_BRACKET],
        [ENTRY_FILLED],
        ["submitted ord-n NVDA buy 10 limit sl=- tp=- legs=0"],
        ["canceled ord-b AAPL leg=stop_loss canceled",
         "canceled ord-b AAPL leg=take_profit canceled",
         "canceled ord-n NVDA leg=- canceled",
         "returned 3"],
    ]
    assert await h.book() == ([("AAPL", Decimal(10), Decimal(100))], [])


async def close_all(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    await h.set_price("MSFT", "300")
    await h.step(h.submit(approval("ord-b", bracket=True)))
    await h.step(h.fill("ord-b", "100"))
    await h.step(h.submit(approval("ord-m", symbol="MSFT", qty="5")))
    await h.step(h.fill("ord-m", "300"))
    await h.step(h.run(flatten_request()), ordered=False)
    await h.step(h.fill_closes({"AAPL": "101", "MSFT": "299"}))
    assert h.steps[2:] == [
        ["submitted ord-m MSFT buy 5 market sl=- tp=- legs=0"],
        ["filled ord-m MSFT buy 5@300 cum=5 leg=- fee=0"],
        ["canceled ord-b AAPL leg=stop_loss canceled",  # the legs held the AAPL shares
         "canceled ord-b AAPL leg=take_profit canceled",
         "position_closed AAPL 10 market_close",
         "position_closed MSFT 5 market_close"],
        ["filled <broker> AAPL sell 10@101 cum=10 leg=- fee=0",
         "filled <broker> MSFT sell 5@299 cum=5 leg=- fee=0"],
    ]
    assert await h.book() == ([], [])


async def insufficient_buying_power(h: Harness) -> None:
    await h.set_price("AAPL", "100")
    await h.step(h.submit(approval("ord-big", qty="2000")))  # $200,000 on a $100,000 account
    assert h.steps == [["rejected ord-big AAPL code=40310000 insufficient buying power"]]
    assert await h.entries("AAPL") == []
    assert await h.book() == ([], [])


async def emergency_close(h: Harness) -> None:
    for symbol, price in (("AAPL", "100"), ("MSFT", "300"), ("NVDA", "80")):
        await h.set_price(symbol, price)
    await h.step(h.submit(approval("ord-b", bracket=True)))
    await h.step(h.fill("ord-b", "100"))
    await h.step(h.submit(approval("ord-m", symbol="MSFT", qty="5")))
    await h.step(h.fill("ord-m", "300"))
    await h.step(h.submit(approval("ord-n", symbol="NVDA", limit="50")))  # resting
    await h.step(h.run(emergency_trigger()), ordered=False)
    assert h.service.emergency_pending  # the close orders are working, not yet filled
    await h.step(h.fill_closes({"AAPL": "101", "MSFT": "302"}))
    await h.step(h.service.check_pending())
    assert h.steps[5:] == [
        ["canceled ord-b AAPL leg=stop_loss canceled",
         "canceled ord-b AAPL leg=take_profit canceled",
         "canceled ord-n NVDA leg=- canceled"],
        ["filled <broker> AAPL sell 10@101 cum=10 leg=- fee=0",
         "filled <broker> MSFT sell 5@302 cum=5 leg=- fee=0"],
        ["emergency_completed canceled=3 closed=[AAPL 10@101 pnl=10, MSFT 5@302 pnl=10] "
         "realized_after=20 failures=0"],
    ]
    assert not h.service.emergency_pending
    assert await h.book() == ([], [])  # verified flat at the broker


SCENARIOS: list[Callable[[Harness], Awaitable[None]]] = [
    market_order,
    bracket_take_profit,
    bracket_stop_loss,
    duplicate_client_order_id,
    cancel_all,
    close_all,
    insufficient_buying_power,
    emergency_close,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_broker_contract(
    harness: Harness, scenario: Callable[[Harness], Awaitable[None]]
) -> None:
    await scenario(harness)
