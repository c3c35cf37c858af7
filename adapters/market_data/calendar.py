"""The NYSE trading calendar (exchange-calendars `XNYS`), half-days and holidays included.

Session dates are America/New_York dates; open and close times come back as UTC datetimes.
The calendar object is slow to build (it precomputes 20 years of sessions), so one instance
is built lazily and shared.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

from domain.calendar import NEW_YORK, session_date
from domain.errors import CatalystError
from domain.values import ensure_utc

EXCHANGE = "XNYS"


class CalendarRangeError(CatalystError, ValueError):
    """A date outside the span the exchange calendar knows (about 20 years back, 1 ahead)."""


@dataclass(frozen=True)
class Session:
    """One NYSE regular-hours session."""

    date: date  # the New York session date
    open: datetime  # UTC
    close: datetime  # UTC
    early_close: bool

    @property
    def minutes(self) -> int:
        return int((self.close - self.open) / timedelta(minutes=1))

    def contains(self, ts: datetime) -> bool:
        """Regular hours are [open, close): a 1-minute bar stamped 15:59 is the last one."""
        return self.open <= ensure_utc(ts) < self.close


@lru_cache(maxsize=1)
def _calendar() -> xcals.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange-calendars 4.x reads tz-aware Series.values, which pandas 3 deprecates;
        # harmless for us, and not ours to fix.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        return xcals.get_calendar(EXCHANGE)


def _label(d: date) -> pd.Timestamp:
    return pd.Timestamp(d.year, d.month, d.day)


def _utc(ts: pd.Timestamp) -> datetime:
    return ts.to_pydatetime().astimezone(UTC)


def _check_bounds(d: date) -> None:
    cal = _calendar()
    first, last = cal.first_session.date(), cal.last_session.date()
    if not first <= d <= last:
        raise CalendarRangeError(
            f"{d.isoformat()} is outside the {EXCHANGE} calendar ({first} to {last})"
        )


__all__ = ["NEW_YORK", "session_date"]  # re-exported: the one definition is in domain


def ny_midnight(d: date) -> datetime:
    """Midnight New York at the start of date `d`, as UTC (where daily bars are stamped)."""
    return datetime.combine(d, time(0, 0), tzinfo=NEW_YORK).astimezone(UTC)


def is_trading_day(d: date) -> bool:
    _check_bounds(d)
    return bool(_calendar().is_session(_label(d)))


@lru_cache(maxsize=4096)
def session_for(d: date) -> Session | None:
    """The session on New York date `d`, or None on weekends and holidays."""
    if not is_trading_day(d):
        return None
    cal = _calendar()
    label = _label(d)
    open_, close = _utc(cal.session_open(label)), _utc(cal.session_close(label))
    return Session(date=d, open=open_, close=close, early_close=label in cal.early_closes)


def _require(d: date) -> Session:
    session = session_for(d)
    if session is None:
        raise ValueError(f"{d.isoformat()} is not an NYSE trading day")
    return session


def open_time(d: date) -> datetime:
    """Regular-hours open (UTC) of trading day `d`; ValueError on a non-trading day."""
    return _require(d).open


def close_time(d: date) -> datetime:
    """Regular-hours close (UTC): 16:00 New York, 13:00 on half-days."""
    return _require(d).close


def is_early_close(d: date) -> bool:
    session = session_for(d)
    return session is not None and session.early_close


def within_regular_hours(ts: datetime) -> bool:
    """True when `ts` falls in [open, close) of the session on its New York date."""
    session = session_for(session_date(ts))
    return session is not None and session.contains(ts)


def sessions_between(start: date, end: date) -> list[date]:
    """Trading days in [start, end], both inclusive."""
    if end < start:
        return []
    _check_bounds(max(start, _calendar().first_session.date()))
    _check_bounds(min(end, _calendar().last_session.date()))
    labels = _calendar().sessions_in_range(_label(start), _label(end))
    return [ts.date() for ts in labels]


def previous_sessions(d: date, count: int) -> list[date]:
    """The `count` trading days strictly before `d`, oldest first."""
    if count <= 0:
        return []
    _check_bounds(d)
    cal = _calendar()
    label = _label(d)
    # date_to_session with "previous" maps a holiday onto the session before it.
    last = cal.date_to_session(label, direction="previous")
    if last == label:
        last = cal.previous_session(label)
    sessions = cal.sessions_window(last, -count)
    return [ts.date() for ts in sessions]


def next_session(d: date) -> date:
    """The first trading day strictly after `d`."""
    _check_bounds(d)
    cal = _calendar()
    label = _label(d)
    nxt = cal.date_to_session(label, direction="next")
    if nxt == label:
        nxt = cal.next_session(label)
    return nxt.date()
