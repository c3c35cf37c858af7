"""The runtime (`Services`: handlers and the broker effect as durable JetStream consumers) on
the Alpaca adapter and the fake Alpaca server: a restart in the middle of a submission, a
stream outage during a fill, and reconciliation at start."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.broker.alpaca import AlpacaBroker
from adapters.broker.port import OrderRequest
from adapters.nats.event_log import EventLog, StreamNames
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.settings import Settings
from domain.calendar import session_date
from domain.events import (
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    ReconciliationDiscrepancyFound,
)
from domain.values import Side, derive_id
from tests.builders import make
from tests.fakes.alpaca_fixtures import broker_settings
from tests.fakes.alpaca_server import FakeAlpaca, FakePosition

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def fresh_log(nats_url: str, duplicate_window: float = 120.0) -> AsyncIterator[EventLog]:
    """Fresh stream names per test (their subjects overlap, so they are deleted after)."""
    names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
    log = await EventLog.connect(nats_url, names=names, duplicate_window=duplicate_window)
    try:
        yield log
    finally:
        for stream in (names.record, names.market_data):
            with contextlib.suppress(Exception):
                await log.js.delete_stream(stream)
        await log.close()


@pytest.fixture
async def event_log(nats_url: str) -> AsyncIterator[EventLog]:
    async with fresh_log(nats_url) as log:
        yield log


def settings_for(tmp_path: Path) -> Settings:
    return Settings.model_validate({"trading": {"alerts": {"mailbox_dir": str(tmp_path / "mail")}}})


def alpaca(fake: FakeAlpaca, **settings: object) -> AlpacaBroker:
    return AlpacaBroker(broker_settings(fake, **settings), backoff_initial=0.01,
                        backoff_max=0.05, stream_reconnect_min=0.05)


async def start_services(log: EventLog, settings: Settings, broker: AlpacaBroker, *,
                         reconcile: bool) -> Services:
    services = Services(SettingsHolder(settings), log, broker,
                        build_handlers(settings, broker.name), schedule=False,
                        reconcile=reconcile)
    await services.start()
    return services


async def serving(log: EventLog, fake: FakeAlpaca, tmp_path: Path, *, reconcile: bool,
                  **broker: object) -> Services:
    """The runtime on the fake Alpaca, once its trade_updates stream listens."""
    listens = fake.listen_count
    services = await start_services(log, settings_for(tmp_path), alpaca(fake, **broker),
                                    reconcile=reconcile)
    try:
        await fake.wait_for_listen_count(listens + 1)
    except BaseException:
        await services.stop()
        raise
    return services


async def wait_for(log: EventLog, done: Callable[[list[Event]], bool],
                   timeout: float = 20.0) -> list[Event]:
    async with asyncio.timeout(timeout):
        while True:
            events = [s.event async for s in log.read()]
            if done(events):
                return events
            await asyncio.sleep(0.05)


def of(events: list[Event], cls: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, cls)]


def bracket_approval(label: str) -> OrderApproved:
    return make(OrderApproved, f"approved:{label}", datetime.now(UTC), order_id=f"ord-{label}",
                client_order_id=f"coid-{label}", signal_id=f"sig-{label}", symbol="AAPL",
                side=Side.BUY, qty=Decimal(10), entry=Decimal(100), stop_loss=Decimal(95),
                take_profit=Decimal(110))


@pytest.mark.timeout(60)
async def test_a_restart_mid_submission_leaves_one_order_and_one_submitted_event(
    event_log: EventLog, fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    approval = bracket_approval("restart")
    # Alpaca takes the order, but its answer is slow: the executor dies waiting for it, so
    # it never publishes OrderSubmitted and never acks the approval.
    fake_alpaca.delay_next(5.0, method="POST", path="/v2/orders")
    first_log = await EventLog.connect(nats_url, names=event_log.names)
    first = await start_services(first_log, settings, alpaca(fake_alpaca), reconcile=False)
    try:
        await event_log.publish(approval)
        async with asyncio.timeout(10):
            while approval.client_order_id not in fake_alpaca.by_client_id:
                await asyncio.sleep(0.02)
    finally:
        await first.stop()  # the "death": consumers stopped before the ack
        await first_log.close()
    assert of([s.event async for s in event_log.read()], OrderSubmitted) == []

    second = await start_services(event_log, settings, alpaca(fake_alpaca), reconcile=False)
    try:
        # JetStream redelivers the unacked approval (after its ack wait) to the new process.
        events = await wait_for(event_log, lambda evs: bool(of(evs, OrderSubmitted)))
    finally:
        await second.stop()

    entries = [o for o in fake_alpaca.orders.values()
               if o.client_order_id == approval.client_order_id]
    assert len(entries) == 1  # the re-run met "client_order_id must be unique"
    # (The redelivery comes after the 2 s ack wait, before the first, 5 s slow, POST is
    # answered: wait for both answers.)
    await fake_alpaca.wait_for_requests("POST", "/v2/orders", 2)
    assert fake_alpaca.count_requests("POST", "/v2/orders") == 2
    submitted = of(events, OrderSubmitted)
    assert len(submitted) == 1
    only = submitted[0]
    assert isinstance(only, OrderSubmitted)
    assert only.event_id == derive_id(approval.event_id, "execution.submitted:0")
    assert (only.order_id, only.broker_order_id) == (approval.order_id, entries[0].id)
    assert set(only.legs) == {leg.id for leg in entries[0].legs}


@pytest.mark.timeout(60)
async def test_a_fill_during_a_stream_outage_becomes_exactly_one_order_filled(
    event_log: EventLog, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    fake_alpaca.set_price("AAPL", "100")
    services = await serving(event_log, fake_alpaca, tmp_path, reconcile=True)
    try:
        approval = bracket_approval("outage")
        await event_log.publish(approval)
        await wait_for(event_log, lambda evs: bool(of(evs, OrderSubmitted)))
        entry = fake_alpaca.order(approval.client_order_id)

        listens = fake_alpaca.listen_count
        async with fake_alpaca.stream_outage():  # the socket drops; the entry fills meanwhile
            await fake_alpaca.fill(entry.id, "100.10")
        await fake_alpaca.wait_for_listen_count(listens + 1)  # alpaca-py reconnected
        await wait_for(event_log, lambda evs: bool(of(evs, OrderFilled)))

        # Live again: the target fills. Its updates come after the reconnect's backfill, so
        # once they are in the log, so is everything the backfill produced.
        target = next(leg for leg in entry.legs if leg.type == "limit")
        await fake_alpaca.fill(target.id, "110")
        events = await wait_for(event_log, lambda evs: bool(of(evs, OrderCanceled)))
    finally:
        await services.stop()

    fills = of(events, OrderFilled)
    assert [(f.order_id, f.leg, f.side, f.qty, f.price) for f in fills] == [  # type: ignore[attr-defined]
        ("ord-outage", None, Side.BUY, Decimal(10), Decimal("100.10")),
        ("ord-outage", "take_profit", Side.SELL, Decimal(10), Decimal(110)),
    ]
    assert [(c.order_id, c.leg) for c in of(events, OrderCanceled)] == [  # type: ignore[attr-defined]
        ("ord-outage", "stop_loss")
    ]
    assert of(events, ReconciliationDiscrepancyFound) == []  # nothing was off at start


@pytest.mark.timeout(60)
async def test_a_position_the_log_does_not_know_is_reported_once_at_start(
    event_log: EventLog, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    # The log knows AAPL 10 (and the broker agrees); TSLA was opened outside the system.
    await event_log.publish(make(
        OrderFilled, "fill:aapl", datetime.now(UTC), order_id="ord-a", client_order_id="coid-a",
        broker_order_id="b-a", fill_id="x-a", symbol="AAPL", side=Side.BUY, qty=Decimal(10),
        price=Decimal(100), filled_qty=Decimal(10)))
    fake_alpaca.positions["AAPL"] = FakePosition("AAPL", Decimal(10), Decimal(100))
    fake_alpaca.positions["TSLA"] = FakePosition("TSLA", Decimal(-7), Decimal(200))

    for _ in range(2):  # a second start the same day reports nothing new
        services = await start_services(event_log, settings, alpaca(fake_alpaca),
                                        reconcile=True)
        await services.stop()

    events = [s.event async for s in event_log.read()]
    found = of(events, ReconciliationDiscrepancyFound)
    assert [(d.kind, d.symbol, d.broker, d.recorded) for d in found] == [  # type: ignore[attr-defined]
        ("position", "TSLA", "-7", "0")
    ]
    assert Counter(e.type for e in events)["ReconciliationDiscrepancyFound"] == 1
    # Resolved: the log adopts the broker's position (after the update stream caught up),
    # so a second start finds nothing and the risk guard sees the short.
    adopted = [e for e in of(events, OrderFilled) if e.order_id.startswith("reconcile-")]
    assert [(e.symbol, e.side, e.qty, e.price) for e in adopted] == [  # type: ignore[attr-defined]
        ("TSLA", Side.SELL, Decimal(7), Decimal(200))
    ]
    assert adopted[0].causation_id == found[0].event_id


async def test_open_orders_unknown_to_the_log_and_orders_the_log_thinks_open_are_reported(
    event_log: EventLog, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    outside = alpaca(fake_alpaca)  # someone places an order by hand, outside the system
    await outside.submit_order(OrderRequest(client_order_id="by-hand-1", symbol="MSFT",
                                            side=Side.BUY, qty=Decimal(5), type="limit",
                                            limit_price=Decimal("90")))
    await outside.close()
    # The log sent an order the broker no longer has open (filled while we were down).
    await event_log.publish(make(
        OrderSubmitted, "sub:nvda", datetime.now(UTC), order_id="ord-n",
        client_order_id="coid-n", broker_order_id="b-n", symbol="NVDA", side=Side.BUY,
        qty=Decimal(3), order_type="market"))
    services = await start_services(event_log, settings, alpaca(fake_alpaca), reconcile=True)
    await services.stop()

    found = of([s.event async for s in event_log.read()], ReconciliationDiscrepancyFound)
    assert sorted((d.kind, d.symbol, d.recorded) for d in found) == [  # type: ignore[attr-defined]
        ("order", "MSFT", "unknown"), ("order", "NVDA", "open (coid-n)"),
    ]


@pytest.mark.timeout(60)
async def test_a_fill_while_the_runtime_is_down_is_recorded_once_after_restarts(
    fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    # A short duplicate window: the server would not hide a fill recorded twice.
    async with fresh_log(nats_url, duplicate_window=0.2) as log:
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            approval = bracket_approval("down")
            await log.publish(approval)
            await wait_for(log, lambda evs: bool(of(evs, OrderSubmitted)))
        finally:
            await services.stop()
        entry = fake_alpaca.order(approval.client_order_id)
        await fake_alpaca.fill(entry.id, "100.20")  # while nothing runs

        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            await wait_for(log, lambda evs: bool(of(evs, OrderFilled)), timeout=5)
        finally:
            await services.stop()

        await asyncio.sleep(0.3)  # past the duplicate window
        # Restarted again: the backfill from the last recorded update lists the filled entry
        # again; its fill is already in the log and must not be recorded twice.
        services = await start_services(log, settings, alpaca(fake_alpaca), reconcile=True)
        try:
            await fake_alpaca.wait_for_listen_count(3)
            target = next(leg for leg in entry.legs if leg.type == "limit")
            await fake_alpaca.fill(target.id, "110")  # live, after the backfill
            events = await wait_for(log, lambda evs: bool(of(evs, OrderCanceled)), timeout=5)
        finally:
            await services.stop()

    assert [(f.order_id, f.leg, f.qty, f.price) for f in of(events, OrderFilled)] == [  # type: ignore[attr-defined]
        ("ord-down", None, Decimal(10), Decimal("100.20")),
        ("ord-down", "take_profit", Decimal(10), Decimal(110)),
    ]


@pytest.mark.timeout(60)
async def test_a_fill_streamed_before_the_submit_is_answered_carries_our_order_id(
    event_log: EventLog, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    """A marketable entry can fill, and its update arrive over the stream, before the REST
    answer to the submit: the fill still belongs to our order (its alerts and audit join on
    the order id), not to a stand-in id."""
    fake_alpaca.auto_fill_market = True
    fake_alpaca.delay_next(3.0, method="POST", path="/v2/orders")  # the answer comes late
    services = await serving(event_log, fake_alpaca, tmp_path, reconcile=False,
                             timeout_seconds=10.0)  # late, not lost: no retry
    try:
        approval = bracket_approval("early-fill")
        await event_log.publish(approval)
        events = await wait_for(event_log, lambda evs: bool(of(evs, OrderFilled))
                                and bool(of(evs, OrderSubmitted)))
    finally:
        await services.stop()

    [fill] = of(events, OrderFilled)
    [submitted] = of(events, OrderSubmitted)
    assert events.index(fill) < events.index(submitted)  # the case: fill first
    assert (fill.order_id, fill.client_order_id) == (  # type: ignore[attr-defined]
        approval.order_id, approval.client_order_id)


@pytest.mark.timeout(60)
async def test_an_approval_an_emergency_stop_overtook_is_never_sent(
    event_log: EventLog, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    """Two approvals wait behind a slow broker when the stop is recorded: the one already on
    its way is canceled by the stop, the other is never sent (an OrderRejected says why)."""
    # The first answer comes 4 s late (and is waited for: no timeout and retry), time
    # enough, under load too, for the stop to be recorded and reach the executor.
    fake_alpaca.delay_next(4.0, method="POST", path="/v2/orders")
    services = await serving(event_log, fake_alpaca, tmp_path, reconcile=False,
                             timeout_seconds=10.0)
    first, second = bracket_approval("before-stop-1"), bracket_approval("before-stop-2")
    try:
        await event_log.publish(first)
        async with asyncio.timeout(10):  # the first is at the broker, its answer pending
            while first.client_order_id not in fake_alpaca.by_client_id:
                await asyncio.sleep(0.02)
        await event_log.publish(second)
        await event_log.publish(make(
            EmergencyStopTriggered, "stop:overtaken", datetime.now(UTC),
            session_date=session_date(datetime.now(UTC)), pnl=Decimal("-2000"),
            limit=Decimal("-2000"), reason="daily loss limit"))
        events = await wait_for(event_log, lambda evs: bool(of(evs, EmergencyStopCompleted)
                                                            or of(evs, EmergencyStopFailed)))
    finally:
        await services.stop()

    assert second.client_order_id not in fake_alpaca.by_client_id
    assert fake_alpaca.open_orders() == []
    [rejected] = of(events, OrderRejected)
    assert (rejected.client_order_id, rejected.code) == (  # type: ignore[attr-defined]
        second.client_order_id, "emergency_stop")
    assert [e.client_order_id for e in of(events, OrderSubmitted)] == [  # type: ignore[attr-defined]
        first.client_order_id]


@pytest.mark.timeout(60)
async def test_an_overtaken_approval_the_broker_already_holds_is_recorded_as_submitted(
    event_log: EventLog, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    """The broker took the order but every answer was lost (the service retries later): a
    stop recorded meanwhile must not make the log say "never sent" about a live order."""
    fake_alpaca.fail_next(10, 503, method="POST", path="/v2/orders", after=True)
    services = await serving(event_log, fake_alpaca, tmp_path, reconcile=False)
    approval = bracket_approval("held-at-broker")
    try:
        await event_log.publish(approval)
        async with asyncio.timeout(10):
            while approval.client_order_id not in fake_alpaca.by_client_id:
                await asyncio.sleep(0.02)
        await event_log.publish(make(
            EmergencyStopTriggered, "stop:held", datetime.now(UTC),
            session_date=session_date(datetime.now(UTC)), pnl=Decimal("-2000"),
            limit=Decimal("-2000"), reason="daily loss limit"))
        events = await wait_for(event_log, lambda evs: bool(of(evs, OrderSubmitted))
                                and bool(of(evs, EmergencyStopCompleted)))
    finally:
        await services.stop()

    assert of(events, OrderRejected) == []
    [submitted] = of(events, OrderSubmitted)
    assert submitted.broker_order_id == fake_alpaca.by_client_id[  # type: ignore[attr-defined]
        approval.client_order_id].id
    assert fake_alpaca.open_orders() == []  # the stop canceled it
