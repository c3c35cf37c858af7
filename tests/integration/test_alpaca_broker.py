"""AlpacaBroker against the fake Alpaca server, through the real alpaca-py clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import uuid4

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetCalendarRequest, GetOrdersRequest

from adapters.broker.alpaca import AlpacaBroker
from adapters.broker.execution import ExecutionService
from adapters.broker.port import (
    BrokerRejection,
    BrokerUnavailable,
    OrderRequest,
    TradeUpdate,
)
from domain.events import EmergencyStopCompleted, EmergencyStopFailed, EmergencyStopTriggered
from domain.values import Side
from handlers.executor import EmergencyClose
from tests.builders import T0, make
from tests.fakes.alpaca_fixtures import broker_settings
from tests.fakes.alpaca_server import FakeAlpaca

pytestmark = pytest.mark.integration

SESSION = T0.date()


class Feed:
    """Reads `broker.trade_updates()` in the background so a test can wait for updates."""

    def __init__(self, updates: AsyncIterator[TradeUpdate]) -> None:
        self._updates = updates
        self.queue: asyncio.Queue[TradeUpdate] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for update in self._updates:
            self.queue.put_nowait(update)

    async def until(self, match: Callable[[TradeUpdate], bool]) -> list[TradeUpdate]:
        """Every update up to and including the first that matches."""
        seen: list[TradeUpdate] = []
        async with asyncio.timeout(10):
            while True:
                getter = asyncio.ensure_future(self.queue.get())
                await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    self._task.result()  # the iterator died: raise why
                    raise AssertionError("trade_updates() ended")
                seen.append(getter.result())
                if match(seen[-1]):
                    return seen

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        aclose = getattr(self._updates, "aclose", None)
        if aclose is not None:
            await aclose()


@contextlib.asynccontextmanager
async def feed_of(broker: AlpacaBroker, fake: FakeAlpaca, **kwargs: object
                  ) -> AsyncIterator[Feed]:
    listens, listings = fake.listen_count, fake.count_requests("GET", "/v2/orders")
    feed = Feed(broker.trade_updates(**kwargs))
    try:
        # Connected, and the connect's backfill listing answered: from here on, every
        # update arrives live (a test that asserts on `new` events needs that).
        await fake.wait_for_listen_count(listens + 1)
        await fake.wait_for_requests("GET", "/v2/orders", listings + 1)
        yield feed
    finally:
        await feed.close()


def is_(event: str, order_id: str) -> Callable[[TradeUpdate], bool]:
    return lambda u: u.event == event and u.order.id == order_id


def buy(cid: str, qty: int = 10, **kwargs: object) -> OrderRequest:
    return OrderRequest.model_validate(
        {"client_order_id": cid, "symbol": "AAPL", "side": Side.BUY, "qty": Decimal(qty),
         **kwargs}
    )


async def a_marker(broker: AlpacaBroker) -> Callable[[TradeUpdate], bool]:
    """Place and cancel an order; its `canceled` update marks everything before it as
    delivered (updates of one connection arrive in order)."""
    marker = await broker.submit_order(buy("marker", type="limit", limit_price=Decimal("1.00"))
                                       .model_copy(update={"client_order_id": str(uuid4())}))
    await broker.cancel_order(marker.id)
    return is_("canceled", marker.id)


def entries_named(fake: FakeAlpaca, cid: str) -> list[str]:
    return [o.id for o in fake.orders.values() if o.client_order_id == cid]


# --- orders and the stream ------------------------------------------------------------------


async def test_bracket_entry_fill_and_exit_arrive_on_the_stream(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.set_price("AAPL", "100")
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        entry = await alpaca_broker.submit_order(
            buy("bracket-1", stop_loss=Decimal("95"), take_profit=Decimal("110"))
        )
        assert entry.order_class == "bracket"
        legs = {leg.leg: leg for leg in entry.legs}
        assert {leg.status for leg in entry.legs} == {"held"}  # held until the entry fills
        assert legs["take_profit"].limit_price == Decimal("110")
        assert legs["stop_loss"].stop_price == Decimal("95")
        with pytest.raises(ValueError, match="cannot fill now"):
            await fake_alpaca.fill(legs["take_profit"].id, "110")

        await fake_alpaca.fill(entry.id, "100.25")
        seen = await feed.until(is_("fill", entry.id))
        assert [u.event for u in seen] == ["new", "fill"]
        assert (seen[-1].qty, seen[-1].price) == (Decimal(10), Decimal("100.25"))
        assert seen[-1].order.filled_avg_price == Decimal("100.25")

        await fake_alpaca.fill(legs["take_profit"].id, "110")
        exit_fill = (await feed.until(is_("fill", legs["take_profit"].id)))[-1]
        assert exit_fill.order.parent_id == entry.id
        assert exit_fill.order.leg == "take_profit"
        canceled = (await feed.until(is_("canceled", legs["stop_loss"].id)))[-1]
        assert canceled.order.leg == "stop_loss"  # the OCO sibling

    assert await alpaca_broker.list_positions() == []
    assert await alpaca_broker.list_open_orders() == []


async def test_after_a_restart_a_legs_update_still_names_its_entry(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    entry = await alpaca_broker.submit_order(
        buy("restart-1", stop_loss=Decimal("95"), take_profit=Decimal("110"))
    )
    await fake_alpaca.fill(entry.id, "100")
    stop_leg = next(leg for leg in entry.legs if leg.leg == "stop_loss")
    # A new process: it has never seen the bracket, and a leg's payload names no parent.
    restarted = AlpacaBroker(broker_settings(fake_alpaca), backoff_initial=0.01)
    try:
        async with feed_of(restarted, fake_alpaca) as feed:
            await fake_alpaca.fill(stop_leg.id, "94.9")
            fill = (await feed.until(is_("fill", stop_leg.id)))[-1]
    finally:
        await restarted.close()
    assert (fill.order.parent_id, fill.order.leg) == (entry.id, "stop_loss")


async def test_a_repeated_client_order_id_returns_the_order_already_there(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    first = await alpaca_broker.submit_order(buy("dup-1"))
    again = await alpaca_broker.submit_order(buy("dup-1"))
    assert again.id == first.id
    assert entries_named(fake_alpaca, "dup-1") == [first.id]


async def test_a_repeated_bracket_comes_back_with_its_legs_from_a_lookup_without_them(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    """The lookup by client_order_id takes no `nested`; a server may answer it without the
    legs. The order adopted after a duplicate must still carry them, or reconciliation
    would take the bracket's own legs for orders this system did not send."""
    fake_alpaca.legs_by_client_id = False
    bracket = buy("dup-bracket", stop_loss=Decimal("94"), take_profit=Decimal("110"))
    first = await alpaca_broker.submit_order(bracket)
    again = await alpaca_broker.submit_order(bracket)
    assert again.id == first.id
    assert sorted(leg.id for leg in again.legs) == sorted(leg.id for leg in first.legs)
    assert len(again.legs) == 2


async def test_a_lost_response_is_retried_without_a_second_order(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    # Alpaca takes the order, the response is lost (502): the retry meets the duplicate.
    fake_alpaca.fail_next(1, 502, method="POST", path="/v2/orders", after=True)
    order = await alpaca_broker.submit_order(buy("lost-1"))
    assert entries_named(fake_alpaca, "lost-1") == [order.id]
    assert await alpaca_broker.get_order_by_client_id("lost-1") == order
    assert await alpaca_broker.get_order_by_client_id("never-sent") is None


async def test_5xx_and_429_are_retried_then_succeed(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.fail_next(2, 503, path="/v2/account")
    fake_alpaca.fail_next(1, 429, path="/v2/account")
    account = await alpaca_broker.get_account()
    assert account.cash == Decimal("100000")
    statuses = [s for m, p, s in fake_alpaca.requests if p == "/v2/account"]
    assert statuses == [503, 503, 429, 200]


async def test_retries_give_up_as_broker_unavailable(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.fail_next(10, 500, path="/v2/positions")
    with pytest.raises(BrokerUnavailable, match="HTTP 500 after 4 attempt"):
        await alpaca_broker.list_positions()


async def test_other_4xx_is_a_rejection_with_alpacas_code(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    with pytest.raises(BrokerRejection) as sub_penny:
        await alpaca_broker.submit_order(buy("bad-1", type="limit", limit_price=Decimal("10.123")))
    assert (sub_penny.value.status, sub_penny.value.code) == (422, "42210000")
    assert "sub-penny" in sub_penny.value.message

    with pytest.raises(BrokerRejection) as missing:
        await alpaca_broker.cancel_order("00000000-0000-4000-8000-000000000000")
    assert (missing.value.status, missing.value.code) == (404, "40410000")
    # Rejections are answers, not outages: each was asked once.
    assert sum(p == "/v2/orders" for _, p, _ in fake_alpaca.requests) == 1


async def test_insufficient_buying_power_is_a_403_rejection(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.set_price("AAPL", "100")
    with pytest.raises(BrokerRejection) as rejected:
        await alpaca_broker.submit_order(buy("big-1", qty=2000))
    assert (rejected.value.status, rejected.value.code) == (403, "40310000")
    assert rejected.value.message == "insufficient buying power"
    assert entries_named(fake_alpaca, "big-1") == []


async def test_keys_never_appear_in_error_messages(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    echo = {"code": 40010000, "message": f"bad request from {fake_alpaca.secret_key}"}
    fake_alpaca.fail_next(1, 400, path="/v2/account", body=echo)
    with pytest.raises(BrokerRejection) as rejected:
        await alpaca_broker.get_account()
    assert fake_alpaca.secret_key not in str(rejected.value)
    assert "***" in rejected.value.message
    assert fake_alpaca.api_key not in repr(alpaca_broker)


async def test_a_timed_out_submit_is_retried_and_placed_once(fake_alpaca: FakeAlpaca) -> None:
    broker = AlpacaBroker(broker_settings(fake_alpaca, timeout_seconds=0.3, max_retries=2),
                          backoff_initial=0.01, backoff_max=0.05)
    try:
        # The order is taken, but the answer comes after the client's timeout.
        fake_alpaca.delay_next(1.0, method="POST", path="/v2/orders")
        order = await broker.submit_order(buy("slow-1"))
        assert entries_named(fake_alpaca, "slow-1") == [order.id]

        fake_alpaca.delay_next(1.0, n=3, path="/v2/account")  # stuck on every attempt
        with pytest.raises(BrokerUnavailable, match="Timeout"):
            await broker.get_account()
    finally:
        await broker.close()


# --- the stream: outages and backfill -------------------------------------------------------


async def test_a_fill_during_a_stream_outage_is_yielded_exactly_once(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        a = await alpaca_broker.submit_order(buy("out-a"))
        b = await alpaca_broker.submit_order(buy("out-b", type="limit", limit_price=Decimal("51")))
        await fake_alpaca.fill(a.id, "50")
        await feed.until(is_("fill", a.id))  # seen live, before the outage

        listens = fake_alpaca.listen_count
        async with fake_alpaca.stream_outage():
            await fake_alpaca.fill(b.id, "50", qty="4")
            await fake_alpaca.fill(b.id, "51")
        await fake_alpaca.wait_for_listen_count(listens + 1)  # alpaca-py reconnected
        seen = await feed.until(is_("fill", b.id))
        seen += await feed.until(await a_marker(alpaca_broker))

    fills = [u for u in seen if u.event in ("fill", "partial_fill")]
    assert [(u.order.id, u.event, u.qty, u.price) for u in fills] == [
        (b.id, "fill", Decimal(10), Decimal("50.6")),  # 4 @ 50 + 6 @ 51, synthesized once
    ]
    assert fills[0].execution_id is None  # synthesized: there was no live message


async def test_a_fill_both_backfilled_and_streamed_is_yielded_once(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    async with feed_of(alpaca_broker, fake_alpaca) as feed:
        order = await alpaca_broker.submit_order(buy("both-1"))
        await feed.until(is_("new", order.id))
        listens = fake_alpaca.listen_count
        async with fake_alpaca.stream_outage():
            # The reconnect's backfill listing will be answered late ...
            fake_alpaca.delay_next(0.5, method="GET", path="/v2/orders", after=False)
        await fake_alpaca.wait_for_listen_count(listens + 1)
        # ... so this fill goes out live on the new connection *and* is in the listing.
        await fake_alpaca.fill(order.id, "50")
        seen = await feed.until(is_("fill", order.id))  # the backfill's, then the live copy
        seen += await feed.until(await a_marker(alpaca_broker))

    fills = [u for u in seen if u.event in ("fill", "partial_fill")]
    assert [(u.order.id, u.qty, u.price) for u in fills] == [(order.id, Decimal(10), Decimal(50))]


async def test_trade_updates_since_backfills_what_filled_before_it_started(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    start = datetime.now(UTC)
    order = await alpaca_broker.submit_order(buy("early-1"))
    await fake_alpaca.fill(order.id, "42")
    async with feed_of(alpaca_broker, fake_alpaca, since=start) as feed:
        seen = await feed.until(is_("fill", order.id))
    assert (seen[-1].qty, seen[-1].price) == (Decimal(10), Decimal("42"))


# --- emergency close: ExecutionService (the production path) on AlpacaBroker ----------------


def emergency_command(label: str = "stop") -> EmergencyClose:
    trigger = make(EmergencyStopTriggered, f"emergency:{label}", T0, session_date=SESSION,
                   pnl=Decimal("-2000"), limit=Decimal("-2000"), reason="daily loss limit")
    return EmergencyClose(trigger, SESSION, cancel_orders=True, close_positions=True)


def execution(broker: AlpacaBroker, **kwargs: object) -> ExecutionService:
    options: dict[str, object] = {"backoff_initial": 0.01, "backoff_max": 0.05}
    options.update(kwargs)
    return ExecutionService(broker, **options)  # type: ignore[arg-type]


async def test_emergency_close_leaves_no_orders_and_no_positions(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.set_price("MSFT", "300")
    fake_alpaca.set_price("NVDA", "80")
    bracket = await alpaca_broker.submit_order(
        buy("em-1", stop_loss=Decimal("90"), take_profit=Decimal("120"))
    )
    await fake_alpaca.fill(bracket.id, "100")  # its legs now hold the AAPL shares
    long_msft = await alpaca_broker.submit_order(buy("em-2").model_copy(update={"symbol": "MSFT"}))
    await fake_alpaca.fill(long_msft.id, "300")
    short_nvda = await alpaca_broker.submit_order(
        buy("em-3").model_copy(update={"symbol": "NVDA", "side": Side.SELL})
    )
    await fake_alpaca.fill(short_nvda.id, "80")
    await alpaca_broker.submit_order(buy("em-4", type="limit", limit_price=Decimal("5.00")))

    # The reason for the order of operations: held shares cannot be closed.
    with pytest.raises(BrokerRejection, match="insufficient qty available") as held:
        await alpaca_broker.close_position("AAPL")
    assert held.value.status == 403

    fake_alpaca.auto_fill_market = True  # the market takes the close orders
    events = await execution(alpaca_broker).execute(emergency_command())

    assert [e.type for e in events] == ["EmergencyStopCompleted"]
    done = events[0]
    assert isinstance(done, EmergencyStopCompleted)
    assert done.orders_canceled == 3  # two legs and the resting limit
    assert [(p.symbol, p.qty, p.price) for p in done.positions_closed] == [
        ("AAPL", Decimal(10), Decimal(100)),
        ("MSFT", Decimal(10), Decimal(300)),
        ("NVDA", Decimal(-10), Decimal(80)),
    ]
    assert done.failures == ()
    assert fake_alpaca.positions == {}
    assert fake_alpaca.open_orders() == []


async def test_emergency_close_is_not_reported_done_until_the_closes_fill(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    order = await alpaca_broker.submit_order(buy("stuck-1"))
    await fake_alpaca.fill(order.id, "100")
    service = execution(alpaca_broker, verify_polls=2)
    # Close orders are accepted but do not fill (say the market is closed).
    assert await service.execute(emergency_command()) == []
    assert service.emergency_pending
    assert await service.check_pending() == []  # driven again: still not flat ...
    closes = [o for o in fake_alpaca.orders.values() if o.client_order_id != "stuck-1"]
    assert [(o.symbol, o.side, o.qty, o.status) for o in closes] == [
        ("AAPL", "sell", Decimal(10), "new")  # ... and no second close order stacked
    ]

    await fake_alpaca.fill(closes[0].id, "99.5")
    events = await service.check_pending()
    assert [e.type for e in events] == ["EmergencyStopCompleted"]
    assert isinstance(events[0], EmergencyStopCompleted)
    assert [(p.symbol, p.qty, p.price, p.realized_pnl) for p in events[0].positions_closed] == [
        ("AAPL", Decimal(10), Decimal("99.5"), Decimal(-5))
    ]
    assert not service.emergency_pending


async def test_emergency_close_reports_each_failed_attempt_and_goes_on(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    order = await alpaca_broker.submit_order(buy("outage-1"))
    await fake_alpaca.fill(order.id, "100")
    fake_alpaca.auto_fill_market = True
    # The cancel-all fails on every HTTP retry of the first attempt (max_retries=3: 4 tries).
    fake_alpaca.fail_next(4, 503, method="DELETE", path="/v2/orders")
    events = await execution(alpaca_broker).execute(emergency_command())

    assert [e.type for e in events] == ["EmergencyStopFailed", "EmergencyStopCompleted"]
    failed, done = events
    assert isinstance(failed, EmergencyStopFailed) and failed.attempt == 1
    assert "BrokerUnavailable" in failed.error and "HTTP 503" in failed.error
    assert isinstance(done, EmergencyStopCompleted)
    assert [p.symbol for p in done.positions_closed] == ["AAPL"]
    assert len(done.failures) == 1
    assert fake_alpaca.positions == {}


# --- the fake speaks Alpaca: alpaca-py's own models parse every answer ------------------------


async def test_alpaca_py_models_parse_the_fake(fake_alpaca: FakeAlpaca,
                                               alpaca_broker: AlpacaBroker) -> None:
    order = await alpaca_broker.submit_order(
        buy("model-1", stop_loss=Decimal("95"), take_profit=Decimal("110"))
    )
    await fake_alpaca.fill(order.id, "100")
    client = TradingClient(fake_alpaca.api_key, fake_alpaca.secret_key,
                           url_override=fake_alpaca.url)

    def exercise() -> None:
        nested = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
        assert [len(o.legs or []) for o in nested] == [2]
        assert client.get_order_by_client_id("model-1").filled_qty == "10"
        assert client.get_account().cash == "99000"
        assert client.get_clock().is_open
        days = client.get_calendar(GetCalendarRequest(start=date(2024, 7, 8),
                                                      end=date(2024, 7, 14)))
        assert len(days) == 5
        assert client.get_all_positions()[0].qty == "10"
        assert {r.status for r in client.cancel_orders()} == {200}
        assert [r.status for r in client.close_all_positions()] == [200]

    await asyncio.to_thread(exercise)
