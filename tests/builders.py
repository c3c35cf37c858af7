"""Builders for test data: events with readable defaults, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain.events import BarReceived, Event, SessionStartRequested
from domain.values import Bar

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 New York on a Monday


def eid(label: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"test:{label}")


def make(cls: type[Event], label: str, at: datetime = T0, **payload: Any) -> Any:
    return cls(event_id=eid(label), type=cls.__name__, occurred_at=at,
               correlation_id=payload.pop("correlation_id", "test"), **payload)


def start_requested(label: str = "start", at: datetime = T0) -> SessionStartRequested:
    return make(SessionStartRequested, label, at, requested_by="test")


def bar(symbol: str, minute: int, o: str, h: str, low: str, c: str, v: int = 10_000,
        base: datetime = T0) -> Bar:
    return Bar(symbol=symbol, timestamp=base + timedelta(minutes=minute), open=Decimal(o),
               high=Decimal(h), low=Decimal(low), close=Decimal(c), volume=v)


def bar_event(symbol: str, minute: int, o: str, h: str, low: str, c: str, v: int = 10_000,
              base: datetime = T0) -> BarReceived:
    b = bar(symbol, minute, o, h, low, c, v, base)
    # A 1-minute bar is known when it closes, one minute after its start.
    return make(BarReceived, f"bar:{symbol}:{minute}:{base.isoformat()}",
                b.timestamp + timedelta(minutes=1), symbol=symbol, bar=b)
