"""Issue 14, item 8: one session-date function. "The New York session date" was defined five
times (domain.calendar, domain.pnl, domain.aggregates, handlers.executor,
adapters.market_data.calendar); every name now is the one in domain.calendar, and no other
pure module builds the zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import adapters.market_data.calendar
import domain.aggregates
import domain.pnl
import handlers.executor
from domain.calendar import session_date

ROOT = Path(__file__).resolve().parents[2]


def test_every_session_date_name_is_the_one_function():
    assert domain.pnl.ny_session_date is session_date
    assert domain.aggregates.session_date_of is session_date
    assert handlers.executor.session_date_of is session_date
    assert adapters.market_data.calendar.session_date is session_date


def test_the_session_date_is_the_new_york_date():
    # 03:30 UTC on 5 March is 22:30 on 4 March in New York
    assert session_date(datetime(2024, 3, 5, 3, 30, tzinfo=UTC)) == date(2024, 3, 4)
    # a naive time is refused, never read in the server's local zone
    with pytest.raises(ValueError):
        session_date(datetime(2024, 3, 5, 3, 30))


def test_only_domain_calendar_names_the_new_york_zone_in_the_core():
    found = [p.relative_to(ROOT).as_posix()
             for folder in ("domain", "handlers", "projections")
             for p in sorted((ROOT / folder).rglob("*.py"))
             if 'ZoneInfo("America/New_York")' in p.read_text()]
    assert found == ["domain/calendar.py"]
