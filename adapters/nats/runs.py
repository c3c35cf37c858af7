"""The runs under var/runs: what `catalyst runs list` shows and `runs prune` deletes.

Only simulation and backtest runs (ids `sim-...`, `backtest-...`, which start with their
UTC start time) are pruned; imported audits are the user's evidence and the live store is
not a run. A run whose embedded server still answers is running and is never deleted.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.nats.connection import RUNS_DIR, known_runs, running_url

_ID = re.compile(r"^(sim|backtest)-(\d{8}T\d{6})-(\d{6})$")


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    kind: str  # sim, backtest or other (imports, hand-named runs)
    started: datetime | None
    size: int
    running: bool
    latest: bool

    @property
    def size_text(self) -> str:
        size = float(self.size)
        for unit in ("B", "KB", "MB", "GB"):
            if size < 1024 or unit == "GB":
                return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
            size /= 1024
        return f"{size:.1f} GB"

    @property
    def prunable(self) -> bool:
        return self.kind in ("sim", "backtest") and not self.running

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": self.kind,
                "started": self.started.isoformat() if self.started else None,
                "bytes": self.size, "running": self.running, "latest": self.latest}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def list_runs() -> list[RunInfo]:
    latest_link = RUNS_DIR / "latest"
    latest = latest_link.resolve().name if latest_link.is_symlink() else None
    out = []
    for run_id in known_runs():
        m = _ID.match(run_id)
        started = (datetime.strptime(m.group(2) + m.group(3), "%Y%m%dT%H%M%S%f")
                   .replace(tzinfo=UTC) if m else None)
        out.append(RunInfo(run_id, m.group(1) if m else "other", started,
                           _size(RUNS_DIR / run_id), running_url(RUNS_DIR / run_id / "nats")
                           is not None, run_id == latest))
    return sorted(out, key=lambda r: (r.started or datetime.min.replace(tzinfo=UTC),
                                      r.run_id))


def prune_plan(keep: int | None, older_than: datetime | None) -> list[RunInfo]:
    """The runs to delete: beyond the `keep` newest prunable ones, or started before
    `older_than` (either condition)."""
    prunable = [r for r in list_runs() if r.prunable]
    doomed: dict[str, RunInfo] = {}
    if keep is not None:
        for r in prunable[:max(0, len(prunable) - keep)]:
            doomed[r.run_id] = r
    if older_than is not None:
        for r in prunable:
            if r.started is not None and r.started < older_than:
                doomed[r.run_id] = r
    return [r for r in prunable if r.run_id in doomed]


def remove_run(run: RunInfo) -> None:
    shutil.rmtree(RUNS_DIR / run.run_id)
    link = RUNS_DIR / "latest"
    if link.is_symlink() and not link.exists():  # it pointed at the run just deleted
        link.unlink()
        rest = [r for r in list_runs() if r.kind in ("sim", "backtest")]
        if rest:  # the newest simulation or backtest left becomes latest again
            from adapters.nats.connection import mark_latest_run

            mark_latest_run(rest[-1].run_id)
