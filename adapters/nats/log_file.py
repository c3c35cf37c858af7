"""The event log as a JSONL export: writing its lines, checking a file against its header,
reading it back as a `LogSource` (adapters/nats/log_source.py), importing it into a store.

Export format (one JSON object per line, UTF-8):

    {"catalyst_export": 1, "window": {...}, "counts": {...}, ...}           header, first line
    {"stream": "record", "seq": 12, "order": 40, "subject": "...", "event": {...}}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.nats.event_log import MSG_ID_HEADER, ORDER_HEADER, TYPE_HEADER, EventLog
from adapters.nats.log_source import (
    BATCH,
    ROLE_MD,
    ROLE_RECORD,
    LogEntry,
    LogReadError,
    LogSource,
)
from domain.errors import EventDecodeError
from domain.events import Event, decode_event

EXPORT_VERSION = 1


def export_header(window: dict[str, Any] | None, counts: dict[str, int],
                  **extra: Any) -> str:
    head = {"catalyst_export": EXPORT_VERSION, "window": window, "counts": counts, **extra}
    return json.dumps(head, sort_keys=True)


class LineChain:
    """A digest chained over an export's lines (each line's bytes, without its newline):
    with the line count in the header, a removed tail, a removed line or an edited line
    no longer matches. sha256(previous digest + line), starting from a fixed seed."""

    SEED = b"catalyst-export-v1"

    def __init__(self) -> None:
        self.lines = 0
        self._h = hashlib.sha256(self.SEED).digest()

    def add(self, line: bytes) -> None:
        self.lines += 1
        self._h = hashlib.sha256(self._h + line).digest()

    @property
    def hexdigest(self) -> str:
        return self._h.hex()


def export_integrity(path: Path, header: dict[str, Any]) -> list[str]:
    """What does not match the header's line count and chained digest (empty: intact, or
    an export written before digests existed: the caller notes that it is unchecked)."""
    if "digest" not in header or "lines" not in header:
        return []
    chain = LineChain()
    with path.open("rb") as f:
        f.readline()  # the header
        for raw in f:
            chain.add(raw.rstrip(b"\r\n"))
    problems = []
    if chain.lines != header["lines"]:
        problems.append(f"{path}: {chain.lines} event lines, the header says "
                        f"{header['lines']} (lines removed or added)")
    if chain.hexdigest != header["digest"]:
        problems.append(f"{path}: the chained digest of the lines does not match the "
                        "header's (a line was edited, removed, added or reordered)")
    return problems


def export_line(e: LogEntry) -> str:
    # The event's own JSON, verbatim: what was recorded is what the file holds.
    ev = (e.raw or e.event.to_json()).decode()
    return (f'{{"stream":"{e.stream}","seq":{e.seq},"order":'
            f'{"null" if e.order is None else e.order},"subject":{json.dumps(e.subject)},'
            f'"event":{ev}}}')


def _numbered(f: Any, path: Path) -> Iterable[tuple[int, str]]:
    n = 0
    try:
        for n, line in enumerate(f, 1):  # noqa: B007 - n is read after the loop
            yield n, line
    except UnicodeDecodeError:
        raise LogReadError(f"{path}:{n + 1}: not UTF-8 text") from None


@dataclass
class FileSource:
    path: Path
    header: dict[str, Any] = field(default_factory=dict)
    total: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.description = str(self.path)
        try:
            with self.path.open("rb") as f:
                first = f.readline()
                lines = 1 + sum(1 for _ in f)
        except OSError as e:
            raise LogReadError(f"{self.path}: cannot read: {e.strerror}") from None
        if b"\0" in first:
            raise LogReadError(f"{self.path}: not a Catalyst export (binary data, not JSON "
                               "lines)")
        try:
            obj = json.loads(first) if first.strip() else {}
        except ValueError:
            obj = {}
        if isinstance(obj, dict) and "catalyst_export" in obj:
            self.header = obj
            lines -= 1
        self.total = lines

    def _parse(self, line: str, n: int) -> LogEntry | None:
        line = line.strip()
        if not line:
            return None
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise LogReadError(f"{self.path}:{n}: not JSON: {e}") from None
        if not isinstance(obj, dict) or "catalyst_export" in obj:
            return None
        if "event" not in obj:  # a bare event per line (e.g. `replay --json` output)
            obj = {"event": obj}
        try:
            ev = decode_event(obj["event"])
        except EventDecodeError as e:
            raise LogReadError(f"{self.path}:{n}: {e}") from None
        subject = obj.get("subject") or ev.subject
        stream = obj.get("stream") or (ROLE_MD if subject.startswith("catalyst.md.")
                                       else ROLE_RECORD)
        order = obj.get("order")
        return LogEntry(stream, int(obj.get("seq") or n), subject, ev,
                        int(order) if order is not None else None)

    def require_export(self) -> None:
        """Commands that take an export (`--file`, `audit import`) refuse anything else in
        one line, before reading further."""
        if not self.header:
            raise LogReadError(f"{self.path}: not a Catalyst export (its first line is not "
                               "an export header; write one with `catalyst audit export`)")

    def integrity(self) -> list[str]:
        return export_integrity(self.path, self.header) if self.header else []

    async def batches(self) -> AsyncIterator[list[LogEntry]]:
        batch: list[LogEntry] = []
        with self.path.open(encoding="utf-8", errors="strict") as f:
            for n, line in _numbered(f, self.path):
                entry = self._parse(line, n)
                if entry is not None:
                    batch.append(entry)
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
                    await asyncio.sleep(0)
        if batch:
            yield batch

    def scan_types(self, types: Iterable[str]) -> dict[str, Event]:
        """First event of each of these types in the file (a cheap text scan first)."""
        wanted = set(types)
        found: dict[str, Event] = {}
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if '"type"' not in line or not any(t in line for t in wanted - set(found)):
                    continue
                entry = self._parse(line, n)
                if entry is not None and entry.event.type in wanted - set(found):
                    found[entry.event.type] = entry.event
                if len(found) == len(wanted):
                    break
        return found


async def import_entries(log: EventLog, source: LogSource, chunk: int = 1000) -> int:
    """Publish an export into a log: same event ids (Nats-Msg-Id), same dispatch positions,
    each event into the stream its subject belongs to, in file order."""
    done = 0
    async for batch in source.batches():
        for i in range(0, len(batch), chunk):
            part = batch[i:i + chunk]
            futures = []
            for e in part:
                headers = {MSG_ID_HEADER: str(e.event.event_id), TYPE_HEADER: e.event.type}
                if e.order is not None:
                    headers[ORDER_HEADER] = str(e.order)
                futures.append(await log.js.publish_async(log.subject_prefix + e.subject,
                                                          e.event.to_json(),
                                                          headers=headers))
            await asyncio.gather(*futures)
            done += len(part)
    return done
