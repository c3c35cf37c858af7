"""The event model: envelope, registry, decoding errors that name the field, schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from domain.errors import EventDecodeError
from domain.events import (
    REGISTRY,
    BarReceived,
    Event,
    OrderFilled,
    ScanRequested,
    SessionStartRequested,
    decode_event,
    json_schemas,
)
from tests.builders import T0, bar_event, make

DESIGN_EVENTS = {
    "SessionStartRequested", "SessionStarted", "SessionStartRejected", "SessionEnded",
    "ScanCompleted", "SignalGenerated", "OrderApproved", "OrderDenied",
    "DailyLossWarningIssued", "EmergencyStopTriggered", "EmergencyStopCompleted",
    "OrderSubmitted", "OrderRejected", "OrderFilled", "OrderPartiallyFilled", "OrderCanceled",
    "PositionClosed", "ReconciliationDiscrepancyFound", "DailyPnLChanged", "AlertSent",
    "AlertSuppressed", "AlertFailed", "ConfigChanged", "ConfigRejected", "TradingResumed",
    "BarReceived", "NewsReceived",
}


def test_every_design_event_is_registered_with_the_envelope() -> None:
    assert DESIGN_EVENTS <= set(REGISTRY)
    for name, cls in REGISTRY.items():
        fields = cls.model_fields
        for f in ("event_id", "type", "version", "occurred_at", "correlation_id",
                  "causation_id"):
            assert f in fields, f"{name} lacks {f}"
        assert cls.subject_template.startswith("catalyst."), name
        assert cls.model_config.get("frozen"), f"{name} must be frozen"


def test_subjects_name_the_thing_then_what_happened() -> None:
    assert make(SessionStartRequested, "s", requested_by="x").subject == \
        "catalyst.session.start_requested"
    assert bar_event("AAPL", 0, "1", "1", "1", "1").subject == "catalyst.md.bar.AAPL"


def test_round_trip_is_exact_and_money_is_a_string() -> None:
    fill = make(OrderFilled, "f", order_id="o", client_order_id="c", broker_order_id="b",
                fill_id="1", symbol="AAPL", side="buy", qty=Decimal("1E+2"),
                price=Decimal("187.10"), filled_qty=Decimal("100"))
    data = json.loads(fill.to_json())
    assert data["price"] == "187.10" and data["qty"] == "100"
    assert decode_event(fill.to_json()) == fill


def test_time_is_utc_inside() -> None:
    ny = timezone(timedelta(hours=-5))
    ev = make(ScanRequested, "t", datetime(2026, 3, 2, 9, 30, tzinfo=ny), session_id="s",
              scan_number=1)
    assert ev.occurred_at == T0 and ev.occurred_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone"):
        make(ScanRequested, "naive", datetime(2026, 3, 2, 9, 30), session_id="s", scan_number=1)


def test_events_are_immutable() -> None:
    ev = make(ScanRequested, "i", session_id="s", scan_number=1)
    with pytest.raises(ValueError):
        ev.scan_number = 2  # type: ignore[misc]


def test_caused_by_derives_the_id_from_the_cause() -> None:
    cause = make(SessionStartRequested, "c", requested_by="x")
    a = ScanRequested.caused_by(cause, 0, "session", session_id="s", scan_number=1)
    b = ScanRequested.caused_by(cause, 0, "session", session_id="s", scan_number=1)
    c = ScanRequested.caused_by(cause, 1, "session", session_id="s", scan_number=1)
    assert a.event_id == b.event_id != c.event_id
    assert a.causation_id == cause.event_id and a.correlation_id == cause.correlation_id


@pytest.mark.parametrize("payload,message", [
    (b"{nope", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"event_id": "x"}', "field 'type': missing"),
    (b'{"type": "Nope"}', "field 'type': unknown event type 'Nope'"),
    (b'{"type": "BarReceived", "event_id": "9b5afb89-7e81-4efa-ae7a-81c5c58fa588", '
     b'"occurred_at": "2026-03-02T14:30:00Z", "correlation_id": "c", "symbol": "A", '
     b'"bar": {"symbol": "A", "timestamp": "2026-03-02T14:30:00Z", "open": "x", "high": "1", '
     b'"low": "1", "close": "1", "volume": 1}}', "field 'bar.open'"),
])
def test_malformed_input_names_the_field(payload: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message.replace("(", r"\(")):
        decode_event(payload)


def test_json_schema_of_every_event() -> None:
    schemas = json_schemas()
    assert set(schemas) == set(REGISTRY)
    bar = schemas["BarReceived"]
    assert bar["properties"]["type"]["const"] == "BarReceived"
    assert set(bar["required"]) >= {"event_id", "occurred_at", "correlation_id", "symbol", "bar"}
    assert issubclass(BarReceived, Event)


def test_a_zone_at_offset_zero_that_is_not_utc_is_still_converted_to_utc() -> None:
    """London in winter is at +0 but not UTC: six months later it is not."""
    from zoneinfo import ZoneInfo

    from domain.values import Bar

    ts = datetime(2025, 1, 6, 14, 30, tzinfo=ZoneInfo("Europe/London"))
    bar = Bar(symbol="A", timestamp=ts, open=1, high=1, low=1, close=1, volume=1)
    assert bar.timestamp.tzinfo is UTC
    assert bar.timestamp + timedelta(days=180) == datetime(2025, 7, 5, 14, 30, tzinfo=UTC)
