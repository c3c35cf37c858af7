"""Issue 14: restarts of the runtime (`Services`) on the Alpaca adapter and the fake Alpaca.

What happened at the broker while nothing ran must be recorded once, at the broker's
price: fills in the reverse of their submission order, the rest of a partial fill, a
bracket's stop filling; an order in flight at a hard stop is ours, not a stranger's."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.nats.event_log import EventLog
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from domain.events import (
    Event,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    ReconciliationDiscrepancyFound,
)
from domain.values import Side, derive_id
from projections.positions import PositionsProjection
from tests.builders import make
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_alpaca_runtime import (
    alpaca,
    bracket_approval,
    fresh_log,
    of,
    settings_for,
    start_services,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FILLS = (OrderFilled, OrderPartiallyFilled)


def approval(label: str, symbol: str, qty: int = 10) -> OrderApproved:
    return make(OrderApproved, f"approved:{label}", datetime.now(UTC), order_id=f"ord-{label}",
                client_order_id=f"coid-{label}", signal_id=f"sig-{label}", symbol=symbol,
                side=Side.BUY, qty=Decimal(qty), entry=Decimal(100), order_type="market",
                use_bracket=False)


def fills(events: list[Event]) -> list[tuple[str, str | None, Decimal, Decimal]]:
    return [(e.symbol, e.leg, e.qty, e.price) for e in events  # type: ignore[attr-defined]
            if isinstance(e, FILLS)]


def positions(events: list[Event]) -> dict[str, Decimal]:
    book = PositionsProjection()
    book.rebuild(events)
    return {p.symbol: p.qty for p in book.snapshot()}


async def submitted(log: EventLog, count: int) -> list[Event]:
    return await wait_for(log, lambda evs: len(of(evs, OrderSubmitted)) >= count)


async def test_two_orders_filling_in_reverse_order_while_down_are_both_recorded(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    async with fresh_log(nats_url) as log:
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            first, second = approval("rev-a", "AAPL"), approval("rev-b", "MSFT")
            await log.publish(first)
            await submitted(log, 1)
            await log.publish(second)
            await submitted(log, 2)
        finally:
            await services.stop()
        await fake_alpaca.fill(fake_alpaca.order(second.client_order_id).id, "51")
        await fake_alpaca.fill(fake_alpaca.order(first.client_order_id).id, "50")

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            events = await wait_for(log, lambda evs: len(of(evs, OrderFilled)) >= 2, timeout=10)
            await asyncio.sleep(0.3)  # reconciliation has run (start() awaited it)
            events = [s.event async for s in log.read()]
        finally:
            await services.stop()

    assert sorted(fills(events)) == [("AAPL", None, Decimal(10), Decimal(50)),
                                     ("MSFT", None, Decimal(10), Decimal(51))]
    assert of(events, ReconciliationDiscrepancyFound) == []


async def test_a_partial_fill_before_a_restart_and_the_rest_during_it_count_once(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    async with fresh_log(nats_url) as log:
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            order = approval("partial", "AAPL")
            await log.publish(order)
            await submitted(log, 1)
            broker_id = fake_alpaca.order(order.client_order_id).id
            await fake_alpaca.fill(broker_id, "100", qty="4")
            await wait_for(log, lambda evs: bool(of(evs, OrderPartiallyFilled)))
        finally:
            await services.stop()
        await fake_alpaca.fill(broker_id, "101")  # the other 6, while down

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            await wait_for(log, lambda evs: bool(of(evs, OrderFilled)), timeout=10)
            events = [s.event async for s in log.read()]
        finally:
            await services.stop()

    assert fills(events) == [("AAPL", None, Decimal(4), Decimal(100)),
                             ("AAPL", None, Decimal(6), Decimal(101))]
    assert positions(events) == {"AAPL": Decimal(10)}
    assert of(events, ReconciliationDiscrepancyFound) == []


async def test_a_stop_loss_filled_while_down_is_recorded_at_its_price(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    async with fresh_log(nats_url) as log:
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            order = bracket_approval("stop-down")
            await log.publish(order)
            await submitted(log, 1)
            entry = fake_alpaca.order(order.client_order_id)
            await fake_alpaca.fill(entry.id, "100")
            await wait_for(log, lambda evs: bool(of(evs, OrderFilled)))
        finally:
            await services.stop()
        stop = next(leg for leg in entry.legs if leg.type == "stop")
        await fake_alpaca.fill(stop.id, "94")  # a $60 loss, while down

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            await wait_for(log, lambda evs: len(of(evs, OrderFilled)) >= 2, timeout=10)
            events = [s.event async for s in log.read()]
        finally:
            await services.stop()

    assert fills(events) == [("AAPL", None, Decimal(10), Decimal(100)),
                             ("AAPL", "stop_loss", Decimal(10), Decimal(94))]
    assert positions(events) == {}
    assert of(events, ReconciliationDiscrepancyFound) == []


async def test_reconciliation_books_a_missing_fill_at_the_brokers_fill_price(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    """The safety net behind the backfill: if a fill is still missing at reconciliation,
    it is recorded from the broker's order (its real price), not at the log's average."""
    settings = settings_for(tmp_path)
    async with fresh_log(nats_url) as log:
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            order = bracket_approval("recon")
            await log.publish(order)
            await submitted(log, 1)
            entry = fake_alpaca.order(order.client_order_id)
            await fake_alpaca.fill(entry.id, "100")
            await wait_for(log, lambda evs: bool(of(evs, OrderFilled)))
        finally:
            await services.stop()
        stop = next(leg for leg in entry.legs if leg.type == "stop")
        await fake_alpaca.fill(stop.id, "94")

        # Reconciliation alone (no update stream ran to backfill the stop's fill).
        alone = Services(SettingsHolder(settings), log, alpaca(fake_alpaca),
                         build_handlers(settings, "paper"), schedule=False)
        try:
            out = await alone.reconciliation(adopt=True)
        finally:
            await alone.broker.close()

    booked = [(e.symbol, e.side, e.qty, e.price) for e in out  # type: ignore[attr-defined]
              if isinstance(e, OrderFilled)]
    assert booked == [("AAPL", Side.SELL, Decimal(10), Decimal(94))]


async def test_an_order_in_flight_at_a_hard_stop_is_adopted_not_alarmed(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    async with fresh_log(nats_url) as log:
        order = bracket_approval("in-flight")
        # The broker takes the order but answers slowly; the process dies (its consumers
        # and broker stop, as a kill would leave them) before it records the submission.
        fake_alpaca.delay_next(5.0, method="POST", path="/v2/orders")
        first = await start_services(log, settings, alpaca(fake_alpaca), reconcile=False)
        try:
            await log.publish(order)
            async with asyncio.timeout(10):
                while order.client_order_id not in fake_alpaca.by_client_id:
                    await asyncio.sleep(0.02)
        finally:
            await first.stop()
        assert of([s.event async for s in log.read()], OrderSubmitted) == []

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            events = [s.event async for s in log.read()]
        finally:
            await services.stop()

    entry = fake_alpaca.order(order.client_order_id)
    assert of(events, ReconciliationDiscrepancyFound) == []
    adopted = of(events, OrderSubmitted)
    assert len(adopted) == 1
    assert adopted[0].event_id == derive_id(order.event_id, "execution.submitted:0")
    assert (adopted[0].order_id, adopted[0].broker_order_id) == (  # type: ignore[attr-defined]
        order.order_id, entry.id)


async def test_an_order_in_flight_at_a_kill_9_is_adopted_not_alarmed(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    """The same with a real SIGKILL of the process between the broker taking the order and
    the runtime recording it."""
    settings = settings_for(tmp_path)
    async with fresh_log(nats_url) as log:
        order = bracket_approval("kill-9")
        fake_alpaca.delay_next(30.0, method="POST", path="/v2/orders")  # the answer is late
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.hard_stop_runner", nats_url,
            log.names.record, log.names.market_data, fake_alpaca.url, fake_alpaca.api_key,
            fake_alpaca.secret_key, str(tmp_path / "mail"),
            cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"started"
            await log.publish(order)
            async with asyncio.timeout(20):
                while order.client_order_id not in fake_alpaca.by_client_id:
                    await asyncio.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        assert of([s.event async for s in log.read()], OrderSubmitted) == []

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            events = [s.event async for s in log.read()]
        finally:
            await services.stop()

    entry = fake_alpaca.order(order.client_order_id)
    assert of(events, ReconciliationDiscrepancyFound) == []
    adopted = of(events, OrderSubmitted)
    assert [(e.event_id, e.order_id, e.broker_order_id) for e in adopted] == [  # type: ignore[attr-defined]
        (derive_id(order.event_id, "execution.submitted:0"), order.order_id, entry.id)]


@pytest.mark.parametrize("clean", [True, False], ids=["clean-close", "tcp-abort"])
async def test_a_stop_loss_filling_while_the_stream_is_down_is_recorded_by_the_runtime(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path, clean: bool
) -> None:
    async with fresh_log(nats_url) as log:
        services = await start_services(log, settings_for(tmp_path), alpaca(fake_alpaca),
                                        reconcile=True)
        try:
            await fake_alpaca.wait_for_listen_count(1)
            order = bracket_approval(f"leg-outage-{clean}")
            await log.publish(order)
            await submitted(log, 1)
            entry = fake_alpaca.order(order.client_order_id)
            await fake_alpaca.fill(entry.id, "100")
            await wait_for(log, lambda evs: bool(of(evs, OrderFilled)))
            stop = next(leg for leg in entry.legs if leg.type == "stop")

            listens = fake_alpaca.listen_count
            async with fake_alpaca.stream_outage(clean=clean):
                await fake_alpaca.fill(stop.id, "94")
            await fake_alpaca.wait_for_listen_count(listens + 1)
            events = await wait_for(log, lambda evs: len(of(evs, OrderFilled)) >= 2
                                    and bool(of(evs, OrderCanceled)))
        finally:
            await services.stop()

    assert fills(events) == [("AAPL", None, Decimal(10), Decimal(100)),
                             ("AAPL", "stop_loss", Decimal(10), Decimal(94))]
    assert [(c.leg, c.reason) for c in of(events, OrderCanceled)] == [  # type: ignore[attr-defined]
        ("take_profit", "canceled")]
    assert positions(events) == {}


async def test_a_rejection_reported_by_the_stream_is_recorded_once_across_restarts(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    # A short duplicate window: the server would not hide an event recorded twice.
    async with fresh_log(nats_url, duplicate_window=0.2) as log:
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            await fake_alpaca.wait_for_listen_count(1)
            order = approval("venue-no", "AAPL")
            await log.publish(order)
            await submitted(log, 1)
            await fake_alpaca.reject(fake_alpaca.order(order.client_order_id).id,
                                     "venue rejected: price band")
            await wait_for(log, lambda evs: bool(of(evs, OrderRejected)))
        finally:
            await services.stop()
        await asyncio.sleep(0.3)  # past the duplicate window

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            await fake_alpaca.wait_for_listen_count(2)
            await asyncio.sleep(0.5)  # the backfill (which lists the rejected order) is in
            events = [s.event async for s in log.read()]
        finally:
            await services.stop()

    rejected = of(events, OrderRejected)
    assert len(rejected) == 1
    assert "venue rejected: price band" in rejected[0].message  # type: ignore[attr-defined]
