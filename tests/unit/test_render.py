"""Readable event lines (`replay`, `events tail`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from adapters.audit.render import _bar_fields, event_fields, event_line
from domain.events import BarReceived
from domain.values import Bar


def bar_event(low: str = "101.1") -> BarReceived:
    bar = Bar(symbol="AAPL", timestamp=datetime(2025, 6, 2, 14, 30, tzinfo=UTC),
              open=Decimal("101.23"), high=Decimal("101.5"), low=Decimal(low),
              close=Decimal("101.40"), volume=12345)
    return BarReceived(event_id=UUID(int=1), type="BarReceived",
                       occurred_at=datetime(2025, 6, 2, 14, 31, tzinfo=UTC),
                       correlation_id="run", symbol="AAPL", bar=bar)


def test_a_bar_line_reads_in_new_york_time_with_every_price() -> None:
    assert event_line(bar_event(), 7, markup=False) == (
        "       7 2025-06-02 10:31:00 ET  BarReceived              "
        "symbol=AAPL AAPL o=101.23 h=101.5 l=101.1 c=101.40 v=12345")


def test_the_bar_shortcut_prints_what_the_generic_path_prints() -> None:
    for low in ("101.1", "1E+2", "0.0001"):
        ev = bar_event(low)
        assert _bar_fields(ev) == event_fields(ev)
