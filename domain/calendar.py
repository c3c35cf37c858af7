"""The market calendar as the pure core sees it: a port answered by an adapter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from domain.values import ensure_utc

# The one definition of the trading day's zone and of the session date (issue 14): every
# other module imports these rather than building its own.
NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class MarketSession:
    session_date: date
    open: datetime  # UTC
    close: datetime  # UTC (13:00 New York on half-days)
    early_close: bool = False


class MarketCalendar(Protocol):
    def session(self, day: date) -> MarketSession | None:
        """The regular session on a New York date, or None when the market is closed."""
        ...


def session_date(at: datetime) -> date:
    """The trading day of an instant is its New York calendar date, never the server's
    (a naive time is refused: it would be read in the server's zone)."""
    return ensure_utc(at).astimezone(NEW_YORK).date()
