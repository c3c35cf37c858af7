"""`catalyst replay`: the log in order, one readable line per event, for a window of it;
the dates a log holds; exports with their integrity digest. Verification is in verify.py."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TextIO
from uuid import UUID

from adapters.audit.divergence import Divergence, VerifyResult
from adapters.audit.window import AFTER, BEFORE, Phases, ReplayError, Window
from adapters.nats.log_source import (
    LogEntry,
    LogSource,
    NatsSource,
    bulk_gc,
)
from domain.calendar import NEW_YORK
from domain.events import (
    REGISTRY,
)

if TYPE_CHECKING:
    pass


# --- windows ---------------------------------------------------------------------------------


# --- settings and handler set ----------------------------------------------------------------


# --- verification ----------------------------------------------------------------------------


def add_integrity(result: VerifyResult, problems: list[str]) -> None:
    """An export whose lines do not match its header's count and digest is one divergence
    (reported first: nothing else in the file can be trusted as the recorded log)."""
    if not problems:
        return
    result.divergences += 1
    result.reported.insert(0, Divergence("tampered", "export", UUID(int=0),
                                         "; ".join(problems)))


# --- reading and printing --------------------------------------------------------------------


class Progress:
    """A rich progress bar on stderr for long reads (nothing when stderr is not a terminal)."""

    def __init__(self, total: int, label: str, min_total: int = 20_000,
                 enabled: bool | None = None) -> None:
        self.total = total
        show = sys.stderr.isatty() if enabled is None else enabled
        self._bar: Any = None
        if show and total >= min_total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn(f"[bold]{label}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> Progress:
        # Started by the first advance: its refresh thread must not exist yet when a
        # verification forks its helpers.
        self._started = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None and self._started:
            self._bar.stop()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            if not self._started:
                self._started = True
                self._bar.start()
            self._bar.advance(self._task, n)


async def window_entries(source: LogSource, window: Window, subject: str | None = None,
                         on_batch: Callable[[int], None] | None = None,
                         context: bool = False) -> Any:
    """Entries inside the window (and, with `context`, everything before it), in order."""
    from adapters.runtime.pipeline import subject_matches

    phases = Phases(window)
    async for batch in source.batches():
        if on_batch:
            on_batch(len(batch))
        out: list[tuple[int, LogEntry]] = []
        stop = False
        for e in batch:
            p = phases.of(e.event)
            if p == AFTER:
                stop = True
                break
            if p == BEFORE and not context:
                continue
            if subject and not subject_matches(subject, e.subject):
                continue
            out.append((p, e))
        if out:
            yield out
        if stop:
            return


async def print_entries(source: LogSource, window: Window, subject: str | None,
                        as_json: bool, out: TextIO = sys.stdout,
                        markup: bool | None = None) -> int:
    from adapters.audit.render import event_line

    console = None
    if markup is None:
        markup = out.isatty()
    if markup:
        from rich.console import Console

        console = Console(file=out, highlight=False, soft_wrap=True)
    n = 0
    if as_json and isinstance(source, NatsSource):
        # JSON lines are the stored bytes: ordering and windows need only each envelope.
        source.envelopes = frozenset(REGISTRY)
    with Progress(source.total, "replay") as bar, bulk_gc():
        # JSON lines go to the byte stream under `out` when it has one (no decode/encode).
        binary = getattr(out, "buffer", None) if as_json else None
        if binary is not None:
            out.flush()
        async for batch in window_entries(source, window, subject, bar.advance):
            if as_json:
                # What was stored, verbatim (re-serialised only for entries read from a file).
                n += len(batch)
                lines = [e.raw or e.event.to_json() for _, e in batch]
                lines.append(b"")
                if binary is not None:
                    binary.write(b"\n".join(lines))
                else:
                    out.write(b"\n".join(lines).decode())
                continue
            if console is not None:
                for _, e in batch:
                    n += 1
                    console.print(event_line(e.event, e.order or n))
                continue
            lines = []
            for _, e in batch:
                n += 1
                lines.append(event_line(e.event, e.order or n, markup=False))
            lines.append("")
            out.write("\n".join(lines))
    out.flush()
    if binary is not None:
        binary.flush()
    return n


async def log_dates(source: LogSource) -> list[date]:
    """The New York dates a log has events on (run and config records aside: they carry
    wall-clock stamps), to tell a user which dates to ask for."""
    dates: set[date] = set()
    async for batch in source.batches():
        for e in batch:
            if e.event.type not in ("RunStarted", "ConfigChanged", "ConfigRejected"):
                dates.add(e.event.occurred_at.astimezone(NEW_YORK).date())
    return sorted(dates)


def window_misses(window: Window, dates: list[date]) -> str | None:
    """Why a window read nothing, when the log has no event in it (None: it has some, and
    a filter matched nothing)."""
    if window.start is None and window.end is None:
        return None
    for d in dates:  # the day [d, d + 1) overlaps the window [start, end)
        day_start = datetime.combine(d, time(0), NEW_YORK)
        day_end = datetime.combine(d + timedelta(days=1), time(0), NEW_YORK)
        if (window.start is None or window.start < day_end) and \
                (window.end is None or day_start < window.end):
            return None
    held = ", ".join(d.isoformat() for d in dates) if dates else "none (the log is empty)"
    return f"{window.label}: the log has no events in that window; the dates it holds: {held}"


async def find_session_date(source: LogSource, session_id: str) -> date:
    """The session date of a session id (from its SessionStarted)."""
    async for batch in source.batches():
        for e in batch:
            ev = e.event
            if ev.type == "SessionStarted" and getattr(ev, "session_id", None) == session_id:
                return ev.session_date  # type: ignore[attr-defined, no-any-return]
    raise ReplayError(f"no session {session_id!r} in the log (see SessionStarted events: "
                      "catalyst replay --subject catalyst.session.started)")


async def export(source: LogSource, path: Any, window: Window, context: bool = True,
                 extra: dict[str, Any] | None = None) -> dict[str, int]:
    """Write the window (with the log before it, so it verifies alone) as a JSONL export."""
    import tempfile
    from pathlib import Path

    from adapters.nats.log_file import LineChain, export_header, export_line

    path = Path(path)
    counts = {"events": 0, "context": 0, "record": 0, "market_data": 0}
    chain = LineChain()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    body = tmp + ".body"
    try:
        with open(body, "w", encoding="utf-8") as f:
            with Progress(source.total, "export") as bar, bulk_gc():
                async for batch in window_entries(source, window, on_batch=bar.advance,
                                                  context=context):
                    for phase, e in batch:
                        line = export_line(e)
                        chain.add(line.encode())
                        f.write(line + "\n")
                        counts["context" if phase == BEFORE else "events"] += 1
                        counts[e.stream] += 1
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(export_header(window.as_dict(), counts, **(extra or {}),
                                  lines=chain.lines, digest=chain.hexdigest) + "\n")
            with open(body, encoding="utf-8") as b:
                while chunk := b.read(1 << 20):
                    f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        for p in (tmp, body):
            with _suppress():
                os.unlink(p)
        raise
    with _suppress():
        os.unlink(body)
    return counts


def _suppress() -> Any:

    return contextlib.suppress(FileNotFoundError)
