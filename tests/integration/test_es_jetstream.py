"""The JetStream persistence module against eventsourcing's own recorder test suites, on a
real nats-server; then the JetStream-specific promises (server-side conflicts, atomic
batches, subjects), and an Application of our aggregates whose events are NATS messages.

Each recorder gets a fresh stream and subject prefix, so notification ids start at 1.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from unittest import TestCase
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import nats
import nats.js.errors
import pytest
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.persistence import (
    DataError,
    InfrastructureFactory,
    IntegrityError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.projection import EventSourcedProjection, EventSourcedProjectionRunner
from eventsourcing.tests import application as library_app_tests  # not collected itself
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment, get_topic

from adapters.nats.embedded import EmbeddedNats
from adapters.nats.es_jetstream import (
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamFactory,
    JetStreamProcessRecorder,
    JetStreamTrackingRecorder,
    codec,
)
from adapters.nats.es_jetstream.codec import Subjects
from adapters.nats.es_jetstream.factory import record_stream_subjects
from adapters.nats.es_jetstream.nats_io import NatsThread, StreamLog
from domain.aggregates import Order, OrderStatus, TradingDay, TradingStatus

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 3, 14, 31, tzinfo=UTC)


@pytest.fixture(scope="class")
def es_connection(request: pytest.FixtureRequest, nats_server: EmbeddedNats) -> Iterator[None]:
    """One NATS connection per test class, shared by the recorders it creates."""
    conn = NatsThread(nats_server.url, name="test-es")
    request.cls.connection = conn
    request.cls.nats_url = nats_server.url
    yield
    conn.close()


class FreshStream:
    """Mixin: each recorder on a new stream with its own subject prefix."""

    connection: NatsThread
    nats_url: str

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.streams: list[str] = []

    def tearDown(self) -> None:
        for name in self.streams:
            js = self.connection.nc.jetstream()
            self.connection.run(js.delete_stream(name))
        super().tearDown()  # type: ignore[misc]

    def new_log(self, app: str = "app") -> tuple[StreamLog, Subjects]:
        suffix = uuid4().hex[:12]
        name, prefix = f"ES_{suffix}", f"t{suffix}"
        log = StreamLog(self.connection, name)
        subjects = Subjects(prefix, app)
        self.connection.run(log.ensure_stream(record_stream_subjects(prefix),
                                              must_cover=f"{subjects.base}.x",
                                              create=True, atomic=True))
        self.streams.append(name)
        return log, subjects


# --- eventsourcing's own suites ----------------------------------------------------------


@pytest.mark.usefixtures("es_connection")
class TestAggregateRecorder(FreshStream, AggregateRecorderTestCase):
    def create_recorder(self) -> JetStreamAggregateRecorder:
        return JetStreamAggregateRecorder(*self.new_log())


@pytest.mark.usefixtures("es_connection")
class TestSnapshotRecorder(FreshStream, AggregateRecorderTestCase):
    """The recorder an Application uses for snapshots (`purpose="snapshots"`)."""

    def create_recorder(self) -> JetStreamAggregateRecorder:
        return JetStreamAggregateRecorder(*self.new_log(), purpose="snapshots")


@pytest.mark.usefixtures("es_connection")
class TestApplicationRecorder(FreshStream,
                              ApplicationRecorderTestCase[JetStreamApplicationRecorder]):
    # Ids are stream sequences: contiguous here only because the stream is fresh.
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = True

    def create_recorder(self) -> JetStreamApplicationRecorder:
        return JetStreamApplicationRecorder(*self.new_log())

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


@pytest.mark.usefixtures("es_connection")
class TestNonInterleavingNotificationIDs(FreshStream, NonInterleavingNotificationIDsBaseCase):
    """Two racing inserts of 1000 events each: each one's ids are contiguous."""

    def create_recorder(self) -> JetStreamApplicationRecorder:
        return JetStreamApplicationRecorder(*self.new_log())


@pytest.mark.usefixtures("es_connection")
class TestTrackingRecorder(FreshStream, TrackingRecorderTestCase):
    def create_recorder(self) -> JetStreamTrackingRecorder:
        return JetStreamTrackingRecorder(*self.new_log())


@pytest.mark.usefixtures("es_connection")
class TestProcessRecorder(FreshStream, ProcessRecorderTestCase):
    def create_recorder(self) -> JetStreamProcessRecorder:
        return JetStreamProcessRecorder(*self.new_log())


class _TrackingRecorderSubclass(JetStreamTrackingRecorder):
    pass


@pytest.mark.usefixtures("es_connection")
class TestInfrastructureFactory(InfrastructureFactoryTestCase[JetStreamFactory]):
    nats_url: str

    def setUp(self) -> None:
        suffix = uuid4().hex[:12]
        self.stream = f"ES_{suffix}"
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "adapters.nats.es_jetstream"
        self.env[JetStreamFactory.CATALYST_NATS_URL] = self.nats_url
        self.env[JetStreamFactory.STREAM] = self.stream
        self.env[JetStreamFactory.SUBJECT_PREFIX] = f"t{suffix}"
        super().setUp()

    def tearDown(self) -> None:
        js = self.factory.connection.nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):  # not every test makes one
            self.factory.connection.run(js.delete_stream(self.stream))
        super().tearDown()

    def expected_factory_class(self) -> type[JetStreamFactory]:
        return JetStreamFactory

    def expected_aggregate_recorder_class(self) -> type[JetStreamAggregateRecorder]:
        return JetStreamAggregateRecorder

    def expected_application_recorder_class(self) -> type[JetStreamApplicationRecorder]:
        return JetStreamApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[JetStreamTrackingRecorder]:
        return JetStreamTrackingRecorder

    def tracking_recorder_subclass(self) -> type[JetStreamTrackingRecorder]:
        return _TrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[JetStreamProcessRecorder]:
        return JetStreamProcessRecorder


class FreshStreamEnv:
    """Mixin: the environment an Application reads, pointing at a fresh stream."""

    nats_url: str

    def fresh_env(self) -> dict[str, str]:
        suffix = uuid4().hex[:12]
        self.stream = f"ES_{suffix}"
        return {
            "PERSISTENCE_MODULE": "adapters.nats.es_jetstream",
            JetStreamFactory.CATALYST_NATS_URL: self.nats_url,
            JetStreamFactory.STREAM: self.stream,
            JetStreamFactory.SUBJECT_PREFIX: f"t{suffix}",
        }


@pytest.mark.usefixtures("es_connection")
class TestExampleApplication(FreshStreamEnv, library_app_tests.ExampleApplicationTestCase):
    """The library's bank-account application: notification log sections, snapshots."""

    expected_factory_topic = "adapters.nats.es_jetstream.factory:JetStreamFactory"

    def setUp(self) -> None:
        super().setUp()
        self.saved_environ = dict(os.environ)
        os.environ.update(self.fresh_env())  # BankAccounts reads os.environ

    def tearDown(self) -> None:
        os.environ.clear()
        os.environ.update(self.saved_environ)
        super().tearDown()


# --- what JetStream adds ------------------------------------------------------------------


def _event(oid: Any, version: int, topic: str = "t") -> StoredEvent:
    return StoredEvent(originator_id=oid, originator_version=version, topic=topic,
                       state=f'{{"v":{version}}}'.encode())


@pytest.mark.usefixtures("es_connection")
class TestJetStreamSemantics(FreshStream, TestCase):
    """Unittest-style, like the suites above, to share their class-scoped connection."""

    def test_server_refuses_a_write_based_on_a_stale_read(self) -> None:
        log, subjects = self.new_log()
        alice = JetStreamApplicationRecorder(log, subjects)
        bob = JetStreamApplicationRecorder(log, subjects)  # its own cache of subject heads
        oid = uuid4()
        alice.insert_events([_event(oid, 1)])
        assert len(bob.select_events(oid)) == 1  # bob now believes version 1 is the last
        alice.insert_events([_event(oid, 2)])
        # Bob's cached head is stale, so the client lets it through; the server's
        # expected-last-subject-sequence check refuses it, and bob re-reads: a conflict.
        with pytest.raises(IntegrityError):
            bob.insert_events([_event(oid, 2, topic="bob")])
        assert [e.topic for e in alice.select_events(oid)] == ["t", "t"]
        # A stale head whose write does not collide is retried, not refused.
        alice.insert_events([_event(oid, 3)])
        bob.insert_events([_event(oid, 4)])
        assert [e.originator_version for e in bob.select_events(oid)] == [1, 2, 3, 4]

    def test_a_refused_batch_stores_nothing_for_any_aggregate(self) -> None:
        log, subjects = self.new_log()
        alice = JetStreamApplicationRecorder(log, subjects)
        bob = JetStreamApplicationRecorder(log, subjects)
        a, b = uuid4(), uuid4()
        bob.select_events(b)  # bob caches "b has no events"
        alice.insert_events([_event(b, 1)])
        # a is new and fine; b collides only at the server. The batch is atomic.
        with pytest.raises(IntegrityError):
            bob.insert_events([_event(a, 1), _event(a, 2), _event(b, 1)])
        assert bob.select_events(a) == []
        assert bob.max_notification_id() == 1

    def test_more_than_one_batch_worth_is_refused_before_anything_is_sent(self) -> None:
        recorder = JetStreamApplicationRecorder(*self.new_log())
        oid = uuid4()
        with pytest.raises(ProgrammingError, match="atomic batch limit"):
            recorder.insert_events([_event(oid, v) for v in range(1001)])
        assert recorder.max_notification_id() is None

    def test_an_event_too_big_for_a_nats_message_is_a_data_error(self) -> None:
        recorder = JetStreamAggregateRecorder(*self.new_log())
        big = StoredEvent(originator_id=uuid4(), originator_version=1, topic="t",
                          state=b"x" * (2 * 1024 * 1024))  # the server's default is 1 MB
        with pytest.raises(DataError, match="max_payload"):
            recorder.insert_events([big])

    def test_out_of_order_versions_are_refused(self) -> None:
        recorder = JetStreamAggregateRecorder(*self.new_log())
        oid = uuid4()
        recorder.insert_events([_event(oid, 1), _event(oid, 3)])
        with pytest.raises(IntegrityError, match="not after the recorded version 3"):
            recorder.insert_events([_event(oid, 2)])

    def test_string_ids_of_any_shape_round_trip(self) -> None:
        recorder = JetStreamApplicationRecorder(*self.new_log())
        ids = ["order-42", "a.b.*.>", "with space", "émoji 🚀", "~x", "%41"]
        for oid in ids:
            recorder.insert_events([_event(oid, 1, topic="module:Class.Event")])
        for oid in ids:
            (stored,) = recorder.select_events(oid)
            assert stored.originator_id == oid
            assert stored.topic == "module:Class.Event"
        assert [n.originator_id for n in recorder.select_notifications(None, 10)] == ids

    def test_notifications_skip_other_subjects_in_the_stream(self) -> None:
        log, subjects = self.new_log()
        events = JetStreamApplicationRecorder(log, subjects)
        snapshots = JetStreamAggregateRecorder(log, subjects, purpose="snapshots")
        other_app = JetStreamApplicationRecorder(log, Subjects(subjects.prefix, "other"))
        oid = uuid4()
        events.insert_events([_event(oid, 1)])
        snapshots.insert_events([_event(oid, 1)])
        other_app.insert_events([_event(oid, 1)])
        (last,) = events.insert_events([_event(oid, 2)])
        # Gaps: the stream held a snapshot and another application's event in between.
        assert last == 4
        assert [n.id for n in events.select_notifications(None, 10)] == [1, 4]
        assert events.max_notification_id() == 4
        assert [n.id for n in other_app.select_notifications(None, 10)] == [3]


# --- an Application of our aggregates on JetStream ---------------------------------------


class Trading(Application):
    """Just enough application to save and load the two aggregates."""


async def test_aggregate_events_are_nats_messages(nats_url: str) -> None:
    app = Trading(env={
        "PERSISTENCE_MODULE": "adapters.nats.es_jetstream",
        "CATALYST_NATS_URL": nats_url,
    })
    try:
        order = Order.approve(order_id="ord-1", client_order_id="cid-1", symbol="AAPL",
                              side="buy", qty=Decimal("10"), at=T0)
        order.submit(broker_order_id="brk-9", at=T0)
        order.fill(fill_id="fill-1", qty=Decimal("4"), price=Decimal("190.10"), at=T0)
        day = TradingDay.open(session_date=date(2025, 3, 3), at=T0)
        day.warn(pnl=Decimal("-1500"), limit=Decimal("-2000"), at=T0)
        app.save(order, day)  # one atomic batch: both aggregates or neither

        again = app.repository.get(Order.id_for("ord-1"))
        assert again.status is OrderStatus.PARTIALLY_FILLED
        assert again.broker_order_id == "brk-9"
        assert app.repository.get(TradingDay.id_for(date(2025, 3, 3))).status is \
            TradingStatus.WARNED

        # A second copy of the order, one version behind, loses the race.
        stale = app.repository.get(Order.id_for("ord-1"))
        again.fill(fill_id="fill-2", qty=Decimal("6"), price=Decimal("190.20"), at=T0)
        app.save(again)
        stale.cancel(reason="too slow", at=T0)
        with pytest.raises(IntegrityError):
            app.save(stale)
    finally:
        app.close()

    # Read the log with a plain NATS client: the default stream and subjects.
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("CATALYST")
        assert "catalyst.es.>" in info.config.subjects
        order_subject = f"catalyst.es.Trading.{Order.id_for('ord-1')}"
        raw = [await js.get_msg("CATALYST", seq=s) for s in range(1, info.state.last_seq + 1)]
        on_order = [m for m in raw if m.subject == order_subject]
        assert [m.headers[codec.TOPIC] for m in on_order] == [
            "domain.aggregates:Order.Approved",
            "domain.aggregates:Order.Submitted",
            "domain.aggregates:Order.Filled",
            "domain.aggregates:Order.Filled",
        ]
        assert [int(m.headers[codec.VERSION]) for m in on_order] == [1, 2, 3, 4]
        approved = json.loads(on_order[0].data)
        assert approved["client_order_id"] == "cid-1"
        assert approved["qty"] == {"_type_": "decimal_str", "_data_": "10"}
        day_subject = f"catalyst.es.Trading.{TradingDay.id_for(date(2025, 3, 3))}"
        assert {m.subject for m in raw} == {order_subject, day_subject}
        # The save of two aggregates went as one batch: contiguous, with one batch id.
        first_save = [m for m in raw if m.seq <= 5]
        assert len({m.headers["Nats-Batch-Id"] for m in first_save}) == 1
    finally:
        await nc.close()


# --- a projection: subscription, process recorder, tracking -------------------------------


class TopicCount(Aggregate):
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.count = 0

    @staticmethod
    def create_id(topic: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/topic-counts/{topic}")

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


class EventCounts(EventSourcedProjection[UUID]):
    """Counts the Trading application's events by topic, as aggregates of its own."""

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID],
               processing_event: ProcessingEvent[UUID]) -> None:
        topic = get_topic(type(domain_event))
        try:
            counter: TopicCount = self.repository.get(TopicCount.create_id(topic))
        except AggregateNotFoundError:
            counter = TopicCount(topic)
        counter.increment()
        processing_event.collect_events(counter)

    def count(self, event_class: type[Any]) -> int:
        try:
            return self.repository.get(TopicCount.create_id(get_topic(event_class))).count
        except AggregateNotFoundError:
            return 0


@pytest.mark.usefixtures("es_connection")
class TestProjection(FreshStreamEnv, TestCase):
    def test_a_projection_follows_the_app_and_resumes_where_it_stopped(self) -> None:
        env = self.fresh_env()
        with EventSourcedProjectionRunner(application_class=Trading,
                                          projection_class=EventCounts, env=env) as runner:
            order = Order.approve(order_id="o-1", client_order_id="c-1", symbol="MSFT",
                                  side="sell", qty=Decimal(5), at=T0)
            runner.app.save(order)
            order.submit(broker_order_id="b-1", at=T0)
            recordings = runner.app.save(order)
            runner.wait(recordings[-1].notification.id)
            assert runner.projection.count(Order.Approved) == 1
            assert runner.projection.count(Order.Submitted) == 1

        # Restarted, it picks up from its tracking record: nothing is counted twice.
        with EventSourcedProjectionRunner(application_class=Trading,
                                          projection_class=EventCounts, env=env) as runner:
            order = runner.app.repository.get(Order.id_for("o-1"))
            order.cancel(reason="r", at=T0)
            recordings = runner.app.save(order)
            runner.wait(recordings[-1].notification.id)
            assert runner.projection.count(Order.Approved) == 1
            assert runner.projection.count(Order.Canceled) == 1
            assert runner.projection.recorder.max_tracking_id("Trading") == \
                recordings[-1].notification.id


def test_recorders_ride_out_a_server_restart(tmp_path: Any) -> None:
    """Own server: restarting the shared one would disturb the other tests' connections."""
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        app = Trading(env={"PERSISTENCE_MODULE": "adapters.nats.es_jetstream",
                           "CATALYST_NATS_URL": server.url})
        try:
            day = TradingDay.open(session_date=date(2025, 3, 3), at=T0)
            app.save(day)
            server.restart()  # same port and store: the client reconnects by itself
            day.halt(reason="daily loss limit", pnl=Decimal("-2000"),
                     limit=Decimal("-2000"), at=T0)
            app.save(day)
            again = app.repository.get(TradingDay.id_for(date(2025, 3, 3)))
            assert again.status is TradingStatus.HALTED and again.version == 2
        finally:
            app.close()
