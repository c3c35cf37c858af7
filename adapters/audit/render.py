"""One readable line per event, for `events tail` and `replay`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.calendar import NEW_YORK
from domain.events import BarReceived, Event

_SKIP = {"event_id", "type", "version", "occurred_at", "correlation_id", "causation_id"}
_COLOR = {
    "EmergencyStopTriggered": "bold red", "EmergencyStopCompleted": "red",
    "EmergencyStopFailed": "bold red", "DailyLossWarningIssued": "yellow",
    "OrderDenied": "magenta", "OrderRejected": "magenta", "OrderFilled": "green",
    "SignalGenerated": "cyan", "SessionStarted": "bold", "SessionEnded": "bold",
    "ConfigRejected": "red",
}


def _short(value: Any) -> str:
    if isinstance(value, dict):
        if "symbol" in value and "close" in value:  # a bar
            return (f"{value['symbol']} o={value['open']} h={value['high']} l={value['low']} "
                    f"c={value['close']} v={value['volume']}")
        return "{" + ", ".join(f"{k}={_short(v)}" for k, v in list(value.items())[:6]) + "}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)}]" if len(value) > 3 else "[" + ", ".join(map(_short, value)) + "]"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def event_fields(event: Event) -> str:
    data = event.model_dump(mode="json")
    parts = []
    for k, v in data.items():
        if k in _SKIP or v in (None, "", [], {}):
            continue
        if k == "bar":
            parts.append(_short(v))
            continue
        parts.append(f"{k}={_short(v)}")
    return " ".join(parts)


def _bar_fields(event: BarReceived) -> str:
    """event_fields of a bar, without dumping the model (bars are most of a long replay)."""
    b = event.bar
    return (f"symbol={_short(event.symbol)} {b.symbol} o={format(b.open, 'f')} "
            f"h={format(b.high, 'f')} l={format(b.low, 'f')} c={format(b.close, 'f')} "
            f"v={b.volume}")


_STAMPS: dict[datetime, str] = {}  # occurred_at -> New York text; many events share one


def _stamp(at: datetime) -> str:
    text = _STAMPS.get(at)
    if text is None:
        if len(_STAMPS) >= 4096:
            _STAMPS.clear()
        text = _STAMPS[at] = at.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S ET")
    return text


def event_line(event: Event, seq: int | None = None, markup: bool = True) -> str:
    ts = _stamp(event.occurred_at)
    name = event.type
    if markup and name in _COLOR:
        name = f"[{_COLOR[name]}]{name}[/]"
    head = f"{seq:>8} " if seq is not None else ""
    fields = _bar_fields(event) if type(event) is BarReceived else event_fields(event)
    return f"{head}{ts}  {name:<24} {fields}"
