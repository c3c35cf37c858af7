"""The part of a log an audit looks at (a New York session date or a time range) and where each
event falls in it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from domain.calendar import NEW_YORK
from domain.errors import CatalystError
from domain.events import (
    Event,
)

if TYPE_CHECKING:
    pass


# Stamped by wall clocks or operators, not by the data: they never move a window's phase.
OUT_OF_BAND = frozenset({"RunStarted", "ConfigChanged", "ConfigRejected",
                         "HandlerCrashLooping", "RoleClaimed"})


BEFORE, IN, AFTER = 0, 1, 2


class ReplayError(CatalystError):
    pass


@dataclass(frozen=True)
class Window:
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    label: str = "the whole log"

    @classmethod
    def for_date(cls, d: date) -> Window:
        start = datetime.combine(d, time(0), NEW_YORK)
        end = datetime.combine(d + timedelta(days=1), time(0), NEW_YORK)
        return cls(start, end, d.isoformat())

    @property
    def date(self) -> date | None:
        if self.start and self.end and self.end - self.start == timedelta(days=1):
            return self.start.astimezone(NEW_YORK).date()
        return None

    def as_dict(self) -> dict[str, Any] | None:
        if self.start is None and self.end is None:
            return None
        return {"start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None, "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Window:
        if not d:
            return cls()
        return cls(datetime.fromisoformat(d["start"]) if d.get("start") else None,
                   datetime.fromisoformat(d["end"]) if d.get("end") else None,
                   d.get("label") or "")


def parse_time(text: str, end: bool = False) -> datetime:
    """ISO date or date-time; naive means New York. A bare date as an end means its end."""
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime.combine(d + timedelta(days=1) if end else d, time(0), NEW_YORK)
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(f"{text!r} is not an ISO date or date-time "
                          "(e.g. 2025-11-28 or 2025-11-28T10:00)") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=NEW_YORK)


def make_window(day: str | None = None, start: str | None = None,
                end: str | None = None) -> Window:
    if day and (start or end):
        raise ReplayError("use --date or --from/--to, not both")
    if day:
        try:
            return Window.for_date(date.fromisoformat(day))
        except ValueError:
            raise ReplayError(f"--date {day!r} is not YYYY-MM-DD") from None
    if start or end:
        s = parse_time(start) if start else None
        e = parse_time(end, end=True) if end else None
        if s and e and e <= s:
            raise ReplayError("--to must be after --from")
        return Window(s, e, f"{start or '...'} to {end or '...'}")
    return Window()


class Phases:
    """BEFORE / IN / AFTER a window, following the log's order (sticky)."""

    __slots__ = ("start", "end", "state")

    def __init__(self, window: Window) -> None:
        self.start, self.end = window.start, window.end
        self.state = IN if self.start is None else BEFORE
        if self.start is None and self.end is None:
            self.state = IN

    def of(self, ev: Event) -> int:
        state = self.state
        if state == AFTER or ev.type in OUT_OF_BAND:
            return state
        t = ev.occurred_at
        if state == BEFORE:
            if t < self.start:  # type: ignore[operator]
                return BEFORE
            state = self.state = IN
        if self.end is not None and t >= self.end:
            state = self.state = AFTER
        return state
