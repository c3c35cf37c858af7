"""The NYSE calendar adapter: half-days, holidays, daylight saving, regular-hours checks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from adapters.market_data import calendar

NY = ZoneInfo("America/New_York")


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)


def test_the_day_after_thanksgiving_closes_at_1300_new_york() -> None:
    day = date(2025, 11, 28)
    session = calendar.session_for(day)

    assert session is not None and session.early_close
    assert calendar.is_early_close(day)
    assert calendar.open_time(day) == ny(2025, 11, 28, 9, 30)
    assert calendar.close_time(day) == ny(2025, 11, 28, 13, 0)
    assert calendar.close_time(day).tzinfo == UTC
    assert session.minutes == 210


def test_a_full_day_closes_at_1600_new_york() -> None:
    day = date(2025, 11, 26)
    assert not calendar.is_early_close(day)
    assert calendar.close_time(day) == ny(2025, 11, 26, 16, 0)
    assert calendar.session_for(day).minutes == 390  # type: ignore[union-attr]


@pytest.mark.parametrize("holiday", [date(2025, 11, 27), date(2025, 12, 25), date(2026, 7, 3)])
def test_holidays_are_not_trading_days(holiday: date) -> None:
    assert not calendar.is_trading_day(holiday)
    assert calendar.session_for(holiday) is None
    assert not calendar.is_early_close(holiday)
    with pytest.raises(ValueError, match="not an NYSE trading day"):
        calendar.open_time(holiday)


def test_weekends_are_not_trading_days() -> None:
    assert not calendar.is_trading_day(date(2025, 11, 29))
    assert not calendar.within_regular_hours(ny(2025, 11, 29, 11, 0))


@pytest.mark.parametrize(
    ("day", "open_utc_hour"),
    [
        (date(2026, 3, 6), 14),  # EST, the Friday before clocks go forward
        (date(2026, 3, 9), 13),  # EDT, the Monday after
        (date(2025, 10, 31), 13),  # EDT, before clocks go back on Nov 2
        (date(2025, 11, 3), 14),  # EST
    ],
)
def test_the_open_is_0930_new_york_across_daylight_saving(day: date, open_utc_hour: int) -> None:
    assert calendar.open_time(day) == datetime(
        day.year, day.month, day.day, open_utc_hour, 30, tzinfo=UTC
    )
    assert calendar.open_time(day).astimezone(NY).hour == 9


def test_regular_hours_include_the_open_and_exclude_the_close() -> None:
    assert not calendar.within_regular_hours(ny(2025, 11, 26, 9, 29, 59))
    assert calendar.within_regular_hours(ny(2025, 11, 26, 9, 30))
    assert calendar.within_regular_hours(ny(2025, 11, 26, 15, 59))
    assert not calendar.within_regular_hours(ny(2025, 11, 26, 16, 0))
    # Half-day: the 12:59 bar is the last one.
    assert calendar.within_regular_hours(ny(2025, 11, 28, 12, 59))
    assert not calendar.within_regular_hours(ny(2025, 11, 28, 13, 0))
    assert not calendar.within_regular_hours(ny(2025, 11, 27, 11, 0))  # Thanksgiving


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        calendar.within_regular_hours(datetime(2025, 11, 26, 15, 0))


def test_session_date_is_the_new_york_date() -> None:
    # 03:00 UTC on the 26th is still the evening of the 25th in New York.
    assert calendar.session_date(datetime(2025, 11, 26, 3, 0, tzinfo=UTC)) == date(2025, 11, 25)
    assert calendar.ny_midnight(date(2025, 11, 25)) == datetime(2025, 11, 25, 5, tzinfo=UTC)


def test_session_navigation_skips_thanksgiving() -> None:
    assert calendar.next_session(date(2025, 11, 26)) == date(2025, 11, 28)
    assert calendar.next_session(date(2025, 11, 27)) == date(2025, 11, 28)
    assert calendar.previous_sessions(date(2025, 11, 28), 2) == [
        date(2025, 11, 25), date(2025, 11, 26)
    ]
    assert calendar.sessions_between(date(2025, 11, 24), date(2025, 11, 30)) == [
        date(2025, 11, 24), date(2025, 11, 25), date(2025, 11, 26), date(2025, 11, 28)
    ]


def test_dates_beyond_the_calendar_are_a_clear_error() -> None:
    with pytest.raises(calendar.CalendarRangeError, match="outside the XNYS calendar"):
        calendar.is_trading_day(date(2099, 1, 2))


def test_the_exchange_calendar_is_built_once() -> None:
    assert calendar._calendar() is calendar._calendar()
