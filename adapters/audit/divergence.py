"""What a verification reports: each divergence with its causation chain, and the result."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO
from uuid import UUID

from adapters.nats.log_source import (
    LogEntry,
)
from domain.calendar import NEW_YORK
from domain.events import (
    Event,
)

if TYPE_CHECKING:
    pass


@dataclass
class Divergence:
    kind: str
    event_type: str
    event_id: UUID
    detail: str
    handler: str | None = None
    expected: Event | None = None
    recorded: LogEntry | None = None
    chain: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        where = ""
        if self.recorded is not None:
            r = self.recorded
            where = f" ({r.stream} seq {r.seq}" + (f", position {r.order}" if r.order else "")
            where += ")"
        out = [f"{self.kind}: {self.event_type} {self.event_id}{where}: {self.detail}"]
        if self.handler:
            out.append(f"  handler:  {self.handler}")
        if self.expected is not None:
            out.append(f"  expected: {_fields(self.expected)}")
        if self.recorded is not None:
            out.append(f"  replayed: {_fields(self.recorded.event)}")
        if self.expected is not None and self.recorded is not None:
            for k, a, b in field_diffs(self.expected, self.recorded.event):
                out.append(f"  - {k}: expected {a!r}, recorded {b!r}")
        if self.chain:
            out.append("  causation: " + " <- ".join(self.chain))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "type": self.event_type, "event_id": str(self.event_id),
            "detail": self.detail, "handler": self.handler,
            "expected": self.expected.model_dump(mode="json") if self.expected else None,
            "recorded": self.recorded.event.model_dump(mode="json") if self.recorded else None,
            "position": ({"stream": self.recorded.stream, "seq": self.recorded.seq,
                          "order": self.recorded.order} if self.recorded else None),
            "chain": list(self.chain),
        }


def _fields(ev: Event) -> str:
    from adapters.audit.render import event_fields

    return event_fields(ev)


def field_diffs(a: Event, b: Event) -> list[tuple[str, Any, Any]]:
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    return [(k, da.get(k), db.get(k)) for k in sorted(set(da) | set(db))
            if da.get(k) != db.get(k)]


@dataclass
class VerifyResult:
    events: int = 0  # verified (inside the window)
    context: int = 0  # replayed into state before the window
    derived: int = 0  # derived events checked
    divergences: int = 0
    reported: list[Divergence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    helper_peak_rss_mb: float | None = None  # the helper process's, when there was one
    helper_cpu_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.divergences == 0

    def summary(self) -> str:
        return (f"{self.events} events, {self.divergences} divergence"
                f"{'' if self.divergences == 1 else 's'}")


def _link(type_: str, at: datetime, eid: UUID) -> str:
    return f"{type_} {at.astimezone(NEW_YORK).strftime('%H:%M:%S')} [{str(eid)[:8]}]"


def print_result(r: VerifyResult, out: TextIO = sys.stdout) -> None:
    for n in r.notes:
        out.write(f"note: {n}\n")
    for i, d in enumerate(r.reported, 1):
        lines = d.lines()
        out.write(f"DIVERGENCE {i}: {lines[0]}\n")
        for line in lines[1:]:
            out.write(line + "\n")
    if r.divergences > len(r.reported):
        out.write(f"... and {r.divergences - len(r.reported)} more\n")
    out.write(r.summary() + (f" ({r.derived} decisions checked, {r.context} earlier events "
                             "replayed into state)" if r.context else
                             f" ({r.derived} decisions checked)") + "\n")
