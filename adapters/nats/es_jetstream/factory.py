"""The eventsourcing InfrastructureFactory: reads the environment, owns one NATS
connection (closed by `close()`, i.e. by `Application.close()`), builds the recorders."""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from adapters.nats.es_jetstream.codec import Subjects
from adapters.nats.es_jetstream.nats_io import NatsThread, StreamLog
from adapters.nats.es_jetstream.recorders import (
    JetStreamAggregateRecorder,
    JetStreamApplicationRecorder,
    JetStreamProcessRecorder,
    JetStreamRecorder,
    JetStreamTrackingRecorder,
)
from domain.events import RECORD_SUBJECT_ROOTS

DEFAULT_STREAM = "CATALYST"
DEFAULT_PREFIX = "catalyst"


def record_stream_subjects(prefix: str) -> list[str]:
    """The subjects of the system-of-record stream (the same list the event log uses)."""
    return [f"{prefix}.{root}.>" for root in RECORD_SUBJECT_ROOTS]


class JetStreamFactory(InfrastructureFactory[JetStreamTrackingRecorder]):
    # Environment variables (eventsourcing also looks each up as <APP_NAME>_<VAR> first).
    CATALYST_NATS_URL = "CATALYST_NATS_URL"
    NATS_URL = "NATS_URL"
    NATS_USER = "CATALYST_NATS_USER"
    NATS_PASSWORD = "CATALYST_NATS_PASSWORD"  # noqa: S105 - a variable name
    NATS_TOKEN = "CATALYST_NATS_TOKEN"  # noqa: S105 - a variable name
    NATS_CREDS = "CATALYST_NATS_CREDS"
    STREAM = "CATALYST_ES_STREAM"
    SUBJECT_PREFIX = "CATALYST_ES_SUBJECT_PREFIX"
    ATOMIC = "CATALYST_ES_ATOMIC"
    TIMEOUT = "CATALYST_ES_TIMEOUT"
    CREATE_TABLE = "CREATE_TABLE"  # eventsourcing's name for "create the storage if missing"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        url = self.env.get(self.CATALYST_NATS_URL) or self.env.get(self.NATS_URL)
        if not url:
            msg = (
                f"set {self.CATALYST_NATS_URL} (or {self.NATS_URL}) to the NATS server "
                "the eventsourcing recorders should use"
            )
            raise OSError(msg)
        self.stream = self.env.get(self.STREAM) or DEFAULT_STREAM
        self.subject_prefix = self.env.get(self.SUBJECT_PREFIX) or DEFAULT_PREFIX
        self.atomic = strtobool(self.env.get(self.ATOMIC) or "true")
        timeout = float(self.env.get(self.TIMEOUT) or "5")
        self.connection = NatsThread(
            url,
            name=f"catalyst-es-{self.env.name or 'default'}",
            timeout=timeout,
            connect_options=self._auth_options(),
        )
        self.log = StreamLog(self.connection, self.stream)
        self._stream_ready = False

    def _auth_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if user := self.env.get(self.NATS_USER):
            opts.update(user=user, password=self.env.get(self.NATS_PASSWORD) or "")
        if token := self.env.get(self.NATS_TOKEN):
            opts["token"] = token
        if creds := self.env.get(self.NATS_CREDS):
            opts["user_credentials"] = creds
        return opts

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix, self.env.name or "default")

    def _manage_stream(self) -> bool:
        return strtobool(self.env.get(self.CREATE_TABLE) or "yes")

    def _prepare(self) -> dict[str, Any]:
        manage = self._manage_stream()
        if manage and not self._stream_ready:
            self.connection.run(self.log.ensure_stream(
                record_stream_subjects(self.subject_prefix),
                must_cover=f"{self.subjects.base}.x",
                create=True,
                atomic=self.atomic,
            ))
            self._stream_ready = True
        return dict(atomic=self.atomic, manage_stream=manage)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return JetStreamAggregateRecorder(self.log, self.subjects, purpose, **self._prepare())

    def application_recorder(self) -> ApplicationRecorder:
        return self._build(JetStreamApplicationRecorder, "APPLICATION_RECORDER_TOPIC")

    def tracking_recorder(
        self, tracking_recorder_class: type[JetStreamTrackingRecorder] | None = None
    ) -> JetStreamTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else JetStreamTrackingRecorder
        assert tracking_recorder_class is not None
        if not issubclass(tracking_recorder_class, JetStreamTrackingRecorder):
            raise TypeError(f"{tracking_recorder_class} is not a JetStreamTrackingRecorder")
        return tracking_recorder_class(self.log, self.subjects, **self._prepare())

    def process_recorder(self) -> ProcessRecorder:
        return self._build(JetStreamProcessRecorder, "PROCESS_RECORDER_TOPIC")

    def _build(self, default: type[Any], topic_var: str) -> Any:
        topic = self.env.get(topic_var)
        cls: type[JetStreamRecorder] = resolve_topic(topic) if topic else default
        if not issubclass(cls, default):
            raise TypeError(f"{cls} is not a {default.__name__}")
        return cls(self.log, self.subjects, **self._prepare())

    def close(self) -> None:
        self.connection.close()
