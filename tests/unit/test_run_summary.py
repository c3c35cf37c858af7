"""The run summary (issue 16): a day with no trades says why; paths and commands are one
line each, labelled."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from rich.console import Console

from adapters.runtime.app import RunSummary, print_summary

DAY = date(2025, 11, 25)


def text(s: RunSummary, width: int = 50) -> str:
    console = Console(width=width, record=True)
    print_summary(s, console)
    return console.export_text()


def test_a_day_without_trades_says_why() -> None:
    quiet = RunSummary("sim-a", Path("var/runs/sim-a/nats"), "sim", [DAY], sessions_started=1)
    assert "no trades: no signal led to an order" in text(quiet, 200)
    rejected = RunSummary("sim-b", None, "sim", [DAY], rejections=["mode is supervised"])
    assert "no trades: the session did not start" in text(rejected, 200)
    halted = RunSummary("sim-c", None, "sim", [DAY], sessions_started=1, emergency_stops=1)
    assert "no trades: trading was halted by the emergency stop" in text(halted, 200)
    traded = RunSummary("sim-d", None, "sim", [DAY], sessions_started=1, trades=2, wins=1)
    assert "no trades" not in text(traded, 200)


def test_paths_and_commands_stay_on_one_line_on_a_narrow_terminal() -> None:
    run_id = "sim-20251125T120000-000000"
    s = RunSummary(run_id, Path(f"var/runs/{run_id}/nats"), "sim", [DAY], trades=1,
                   sessions_started=1, mailbox=Path("var/mail"))
    lines = text(s, 40).splitlines()
    assert f"event log (NATS store): var/runs/{run_id}/nats" in lines
    assert f"replay: catalyst replay --run {run_id}" in lines
