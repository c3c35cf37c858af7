"""The execution service against the simulated broker, and against a broker that fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any
from uuid import uuid4

from adapters.broker.execution import ExecutionService
from adapters.broker.port import (
    BrokerAccount,
    BrokerOrder,
    BrokerPosition,
    BrokerUnavailable,
    OrderRequest,
    TradeUpdate,
)
from adapters.broker.sim import SimulatedBroker
from domain.events import (
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    Event,
    FlattenRequested,
    OrderApproved,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    PositionCloseRequested,
)
from domain.values import Bar, Side
from handlers.executor import CloseAll, ClosePosition, EmergencyClose, SubmitOrder

T0 = datetime(2025, 1, 6, 14, 30, tzinfo=UTC)
DAY = date(2025, 1, 6)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def bar(minute: int, price: str, symbol: str = "AAPL") -> Bar:
    p = D(price)
    return Bar(symbol=symbol, timestamp=at(minute), open=p, high=p, low=p, close=p, volume=1)


def envelope(cls: type[Event], minute: int = 0, **payload: Any) -> Any:
    return cls(event_id=uuid4(), type=cls.__name__, occurred_at=at(minute),
               correlation_id="s1", **payload)


def submit_cmd(coid: str = "coid-1", symbol: str = "AAPL", qty: str = "10",
               bracket: bool = True) -> SubmitOrder:
    approval = envelope(
        OrderApproved, order_id=f"ord-{coid}", client_order_id=coid, signal_id="sig",
        symbol=symbol, side=Side.BUY, qty=D(qty), entry=D(100), stop_loss=D(95),
        take_profit=D(110),
    )
    return SubmitOrder(
        cause=approval, order_id=f"ord-{coid}", client_order_id=coid, symbol=symbol,
        side=Side.BUY, qty=D(qty), stop_loss=D(95) if bracket else None,
        take_profit=D(110) if bracket else None,
    )


def emergency_cmd(cancel: bool = True, close: bool = True, before: str = "-40") -> EmergencyClose:
    trigger = envelope(EmergencyStopTriggered, 3, session_date=DAY, pnl=D(-2000),
                       limit=D(-2000), reason="daily loss limit")
    return EmergencyClose(trigger, DAY, cancel_orders=cancel, close_positions=close,
                          realized_pnl_before=D(before))


class Sleeps:
    """Records the backoff instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def sim_with_positions() -> SimulatedBroker:
    """AAPL long 10 @ 100 with working legs; MSFT bracket entry still open (3 orders)."""
    broker = SimulatedBroker()
    broker.on_bar(bar(0, "100"))
    broker.on_bar(bar(0, "50", "MSFT"))
    await broker.submit_order(submit_request("a", "AAPL"))
    broker.on_bar(bar(1, "100"))
    await broker.submit_order(submit_request("m", "MSFT", sl="45", tp="60"))
    return broker


def submit_request(coid: str, symbol: str, sl: str = "95", tp: str = "110") -> OrderRequest:
    return OrderRequest(client_order_id=coid, symbol=symbol, side=Side.BUY, qty=D(10),
                        stop_loss=D(sl), take_profit=D(tp))


# --- submitting ----------------------------------------------------------------------------


async def test_an_accepted_order_is_reported_submitted_with_its_legs() -> None:
    broker = SimulatedBroker()
    broker.on_bar(bar(0, "100"))
    cmd = submit_cmd()
    [ev] = await ExecutionService(broker).execute(cmd)
    assert isinstance(ev, OrderSubmitted)
    order = await broker.get_order_by_client_id("coid-1")
    assert order is not None
    assert (ev.order_id, ev.client_order_id, ev.broker_order_id) == ("ord-coid-1", "coid-1",
                                                                     order.id)
    assert ev.legs == tuple(leg.id for leg in order.legs) and len(ev.legs) == 2
    assert (ev.stop_loss, ev.take_profit, ev.causation_id) == (D(95), D(110), cmd.cause.event_id)


async def test_a_resent_order_is_a_duplicate_and_reports_the_existing_order() -> None:
    broker = SimulatedBroker()
    broker.on_bar(bar(0, "100"))
    cmd = submit_cmd()
    first = await ExecutionService(broker).execute(cmd)
    # A restarted service (empty memory) runs the same command again.
    again = await ExecutionService(broker).execute(cmd)
    assert again == first  # same event id and content: the log drops the repeat
    assert len(await broker.list_open_orders()) == 3


async def test_a_broker_refusal_is_reported_rejected_with_its_code() -> None:
    broker = SimulatedBroker()
    broker.on_bar(bar(0, "100"))
    [ev] = await ExecutionService(broker).execute(submit_cmd(qty="5000"))
    assert isinstance(ev, OrderRejected)
    assert (ev.code, ev.message, ev.order_id) == ("40310000", "insufficient buying power",
                                                  "ord-coid-1")


# --- closing -------------------------------------------------------------------------------


async def test_close_position_cancels_the_legs_first_and_is_safe_to_rerun() -> None:
    broker = await sim_with_positions()
    service = ExecutionService(broker)
    req = envelope(PositionCloseRequested, 2, symbol="AAPL", reason="max_hold_time")
    [ev] = await service.execute(ClosePosition(req, "AAPL", "max_hold_time"))
    assert isinstance(ev, PositionClosed)
    assert (ev.symbol, ev.qty, ev.reason) == ("AAPL", D(10), "max_hold_time")
    aapl = [o for o in await broker.list_open_orders() if o.symbol == "AAPL"]
    assert [o.id for o in aapl] == [ev.broker_order_id]  # only the close is left

    assert await service.execute(ClosePosition(req, "AAPL", "max_hold_time")) == [ev]
    [fill] = broker.on_bar(bar(3, "101"))
    assert (fill.order.id, fill.price) == (ev.broker_order_id, D(101))
    assert await service.execute(ClosePosition(req, "AAPL", "max_hold_time")) == []


async def test_close_all_cancels_everything_and_closes_every_position() -> None:
    broker = await sim_with_positions()
    broker.on_bar(bar(2, "50", "MSFT"))  # MSFT entry fills
    flat = envelope(FlattenRequested, 3, session_id="s1", reason="market_close")
    events = await ExecutionService(broker).execute(CloseAll(flat, "market_close"))
    assert [(e.symbol, e.qty) for e in events] == [("AAPL", D(10)), ("MSFT", D(10))]  # type: ignore[attr-defined]
    assert len({e.event_id for e in events}) == 2
    assert all(o.leg is None for o in await broker.list_open_orders())
    broker.on_bar(bar(4, "99"))
    broker.on_bar(bar(4, "51", "MSFT"))
    assert await broker.list_positions() == []


# --- the emergency stop --------------------------------------------------------------------


async def test_emergency_stop_completes_only_once_the_broker_is_flat() -> None:
    broker = await sim_with_positions()
    sleeps = Sleeps()
    service = ExecutionService(broker, sleep=sleeps, verify_polls=2)
    cmd = emergency_cmd()

    # Orders canceled, close order placed -- but it fills at the next bar: not done yet.
    assert await service.execute(cmd) == []
    assert service.emergency_pending
    assert sleeps.delays == [0.5, 1.0]  # it re-checked twice, with backoff
    assert await service.check_pending() == []

    broker.on_bar(bar(4, "97"))
    [done] = await service.check_pending()
    assert isinstance(done, EmergencyStopCompleted)
    assert done.orders_canceled == 5  # AAPL's two legs + MSFT's entry and its two held legs
    [closed] = done.positions_closed
    assert (closed.symbol, closed.qty, closed.price, closed.realized_pnl) == (
        "AAPL", D(10), D(97), D(-30)
    )
    assert done.realized_pnl_after == D(-70)  # -40 before the stop, -30 on the close
    assert (done.session_date, done.causation_id, done.failures) == (
        DAY, cmd.cause.event_id, ()
    )
    assert not service.emergency_pending
    assert await broker.list_positions() == [] and await broker.list_open_orders() == []
    assert await service.check_pending() == []


async def test_emergency_stop_with_immediate_closes_completes_at_once() -> None:
    broker = await sim_with_positions()
    broker.immediate_close = True
    [done] = await ExecutionService(broker, sleep=Sleeps()).execute(emergency_cmd())
    assert isinstance(done, EmergencyStopCompleted)
    assert [(c.symbol, c.price) for c in done.positions_closed] == [("AAPL", D(100))]


async def test_emergency_stop_when_already_flat() -> None:
    [done] = await ExecutionService(SimulatedBroker()).execute(emergency_cmd(before="0"))
    assert isinstance(done, EmergencyStopCompleted)
    assert (done.orders_canceled, done.positions_closed, done.realized_pnl_after) == (0, (), 0)


async def test_emergency_close_without_cancel_still_frees_the_shares_it_must_sell() -> None:
    broker = await sim_with_positions()
    broker.immediate_close = True
    [done] = await ExecutionService(broker).execute(emergency_cmd(cancel=False))
    assert isinstance(done, EmergencyStopCompleted)
    # MSFT's pending bracket was left alone, as the stop's actions asked.
    assert {o.symbol for o in await broker.list_open_orders()} == {"MSFT"}


class FlakyBroker:
    """A broker that cannot be reached for its first `failures` calls (any method)."""

    name = "flaky"

    def __init__(self, inner: SimulatedBroker, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def _gate(self) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise BrokerUnavailable("connection refused (broker.example:443)")

    async def submit_order(self, request: OrderRequest) -> BrokerOrder:
        self._gate()
        return await self.inner.submit_order(request)

    async def get_order(self, order_id: str) -> BrokerOrder:
        self._gate()
        return await self.inner.get_order(order_id)

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        self._gate()
        return await self.inner.get_order_by_client_id(client_order_id)

    async def list_open_orders(self) -> list[BrokerOrder]:
        self._gate()
        return await self.inner.list_open_orders()

    async def list_orders_since(self, since: datetime) -> list[BrokerOrder]:
        self._gate()
        return await self.inner.list_orders_since(since)

    async def cancel_order(self, order_id: str) -> None:
        self._gate()
        await self.inner.cancel_order(order_id)

    async def cancel_all_orders(self) -> int:
        self._gate()
        return await self.inner.cancel_all_orders()

    async def list_positions(self) -> list[BrokerPosition]:
        self._gate()
        return await self.inner.list_positions()

    async def close_position(self, symbol: str) -> BrokerOrder:
        self._gate()
        return await self.inner.close_position(symbol)

    async def close_all_positions(self) -> list[BrokerOrder]:
        self._gate()
        return await self.inner.close_all_positions()

    async def get_account(self) -> BrokerAccount:
        self._gate()
        return await self.inner.get_account()

    def trade_updates(self) -> AsyncIterator[TradeUpdate]:
        return self.inner.trade_updates()

    async def close(self) -> None:
        await self.inner.close()


async def test_each_failed_attempt_is_reported_and_retried_with_backoff() -> None:
    sim = await sim_with_positions()
    sim.immediate_close = True
    sleeps = Sleeps()
    service = ExecutionService(FlakyBroker(sim, failures=2), sleep=sleeps)
    events = await service.execute(emergency_cmd())
    assert [type(e).__name__ for e in events] == [
        "EmergencyStopFailed", "EmergencyStopFailed", "EmergencyStopCompleted"
    ]
    failed = [e for e in events if isinstance(e, EmergencyStopFailed)]
    assert [f.attempt for f in failed] == [1, 2]
    assert failed[0].error == "BrokerUnavailable: connection refused (broker.example:443)"
    assert len({e.event_id for e in events}) == 3
    assert sleeps.delays == [0.5, 1.0]
    done = events[-1]
    assert isinstance(done, EmergencyStopCompleted)
    assert len(done.failures) == 2 and done.positions_closed[0].symbol == "AAPL"
    assert await sim.list_positions() == []


async def test_an_unreachable_broker_is_never_reported_flat() -> None:
    sim = await sim_with_positions()
    sim.immediate_close = True
    flaky = FlakyBroker(sim, failures=1000)
    sleeps = Sleeps()
    service = ExecutionService(flaky, sleep=sleeps, max_attempts=3, backoff_max=0.75)
    events = await service.execute(emergency_cmd())
    assert [type(e).__name__ for e in events] == ["EmergencyStopFailed"] * 3
    assert sleeps.delays == [0.5, 0.75]  # capped backoff between the three attempts
    assert service.emergency_pending
    assert len(await sim.list_positions()) == 1  # still exposed, and we said so

    # Later (the runtime calls check_pending on its next tick) the broker is back.
    flaky.failures = 0
    events = await service.check_pending()
    assert [type(e).__name__ for e in events] == ["EmergencyStopCompleted"]
    assert len(events[0].failures) == 3  # type: ignore[attr-defined]
    assert await sim.list_positions() == []

    # The attempt numbers keep counting across calls, so every failure has its own id.
    sim2 = await sim_with_positions()
    flaky2 = FlakyBroker(sim2, failures=4)
    service2 = ExecutionService(flaky2, sleep=Sleeps(), max_attempts=3)
    first = await service2.execute(emergency_cmd())
    second = await service2.check_pending()
    attempts = [e.attempt for e in first + second if isinstance(e, EmergencyStopFailed)]
    assert attempts == [1, 2, 3, 4]


async def test_translated_fills_of_a_leg_carry_the_parents_ids() -> None:
    broker = SimulatedBroker()
    broker.on_bar(bar(0, "100"))
    service = ExecutionService(broker)
    await service.execute(submit_cmd())
    broker.on_bar(bar(1, "100"))
    updates = broker.on_bar(bar(2, "94"))
    events = [e for u in updates for e in service.translate(u, "s1")]
    fill = events[0]
    assert isinstance(fill, OrderFilled)
    assert (fill.order_id, fill.client_order_id, fill.leg, fill.price) == (
        "ord-coid-1", "coid-1", "stop_loss", D(94)
    )
    assert (events[1].type, events[1].leg) == ("OrderCanceled", "take_profit")  # type: ignore[attr-defined]
