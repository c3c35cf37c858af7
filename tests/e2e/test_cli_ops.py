"""The operations commands end to end, through the installed `catalyst` script: a demo run
(the bundled day with the emergency stop) and a backtest, then replay, verify, status,
audit report, export, import and replay of the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CATALYST = str(Path(sys.executable).parent / "catalyst")
BUNDLED = Path(__file__).resolve().parents[2] / "adapters" / "data" / "bundled"


def catalyst(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALYST_", "ALPACA_"))}
    env["COLUMNS"] = "200"
    return subprocess.run([CATALYST, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@dataclass
class Demo:
    cwd: Path
    day: str
    events: int


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    cwd = tmp_path_factory.mktemp("demo")
    run = catalyst(cwd, "run")
    assert run.returncode == 0, run.stderr
    status = catalyst(cwd, "status", "--json", "--run", "latest")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    return Demo(cwd, st["session"]["session_date"], st["events_read"])


@pytest.fixture(scope="module")
def exported(demo: Demo) -> Path:
    out = demo.cwd / "day.jsonl"
    e = catalyst(demo.cwd, "audit", "export", "--date", demo.day, "--out", str(out),
                 "--run", "latest")
    assert e.returncode == 0, e.stderr
    return out


def test_a_demo_run_replays_with_zero_divergences(demo: Demo) -> None:
    r = catalyst(demo.cwd, "replay", "--run", "latest", "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    n, rest = r.stdout.splitlines()[-1].split(" events, ", 1)
    assert rest.startswith("0 divergences") and int(n) > demo.events > 100, r.stdout
    # However many processes check it, the same report.
    for jobs in ("1", "3"):
        j = catalyst(demo.cwd, "replay", "--run", "latest", "--verify", "--jobs", jobs)
        assert (j.returncode, j.stdout) == (0, r.stdout), j.stdout + j.stderr


def test_replay_prints_readable_lines_and_json(demo: Demo) -> None:
    r = catalyst(demo.cwd, "replay", "--run", "latest", "--subject", "catalyst.risk.>")
    assert r.returncode == 0, r.stderr
    assert "EmergencyStopTriggered" in r.stdout and "BarReceived" not in r.stdout
    j = catalyst(demo.cwd, "replay", "--run", "latest", "--date", demo.day, "--from",
                 "2025-01-01")
    assert j.returncode == 1 and "not both" in j.stderr
    j = catalyst(demo.cwd, "replay", "--run", "latest", "--from", f"{demo.day}T14:00",
                 "--to", f"{demo.day}T14:05", "--json")
    rows = [json.loads(line) for line in j.stdout.splitlines()]
    assert rows and all(f"{demo.day}T19:0" in row["occurred_at"] for row in rows)


def test_status_shows_the_halt_and_the_day(demo: Demo) -> None:
    r = catalyst(demo.cwd, "status", "--json", "--run", "latest")
    st = json.loads(r.stdout)
    assert st["nats"]["connected"] and st["broker"]["kind"] == "sim"
    assert st["session"]["state"] == "ended"
    assert st["trading"]["state"] == "halted" and st["trading"]["since"]
    assert "daily loss limit" in st["trading"]["reason"]
    assert st["pnl"]["session_date"] == demo.day and st["positions"] == []
    text = catalyst(demo.cwd, "status", "--run", "latest")
    assert "HALTED" in text.stdout and "Consumers" in text.stdout


def test_export_replays_verifies_and_reports_the_same_without_nats(demo: Demo, exported: Path,
                                                                   tmp_path: Path) -> None:
    out = exported
    v = catalyst(demo.cwd, "replay", "--file", str(out), "--verify")
    assert v.returncode == 0 and " 0 divergences" in v.stdout, v.stdout + v.stderr
    from_nats = catalyst(demo.cwd, "audit", "report", "--run", "latest", "--date", demo.day,
                         "--format", "json")
    from_file = catalyst(demo.cwd, "audit", "report", "--file", str(out), "--format", "json")
    assert from_nats.returncode == 0 and from_file.stdout == from_nats.stdout
    report = json.loads(from_nats.stdout)
    assert report["summary"]["emergency_stops"] == 1 and report["signals"]

    html = tmp_path / "day.html"
    h = catalyst(demo.cwd, "audit", "report", "--run", "latest", "--date", demo.day,
                 "--out", str(html))
    assert h.returncode == 0 and "data:image/png;base64," in html.read_text()

    # One edited decision: --verify fails and says what and where (and that the file no
    # longer matches its digest).
    lines = out.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"type":"OrderDenied"' in line)
    lines[i] = lines[i].replace('"rule":"', '"rule":"x', 1)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    t = catalyst(demo.cwd, "replay", "--file", str(tampered), "--verify")
    assert t.returncode == 1
    assert "DIVERGENCE 1: tampered: export" in t.stdout
    assert "DIVERGENCE 2: differs: OrderDenied" in t.stdout and "causation:" in t.stdout
    assert " 2 divergences" in t.stdout.splitlines()[-1]


def test_export_imported_on_a_fresh_store_gives_the_same_report(demo: Demo, exported: Path,
                                                                 tmp_path: Path) -> None:
    out = exported
    fresh = tmp_path / "other-machine"
    fresh.mkdir()
    i = catalyst(fresh, "audit", "import", str(out), "--run", "imported")
    assert i.returncode == 0, i.stderr
    a = catalyst(demo.cwd, "audit", "report", "--run", "latest", "--date", demo.day,
                 "--format", "csv")
    b = catalyst(fresh, "audit", "report", "--run", "imported", "--date", demo.day,
                 "--format", "csv")
    assert b.returncode == 0 and a.stdout == b.stdout and "emergency_stop" in a.stdout


def test_a_backtest_on_input_signals_verifies(tmp_path: Path) -> None:
    """Signals from SIGNALS.csv are inputs (no scanner, no strategy): the log still
    verifies; the demo run above covers the scanner's own signals."""
    lines = (BUNDLED / "bars_1min.csv").read_text().splitlines()
    days = sorted({line[:10] for line in lines[1:]})[:2]
    keep = [line for line in lines[1:] if line[:10] in days
            and line.split(",")[1] in ("AAPL", "MSFT", "NVDA")]
    bars = tmp_path / "bars.csv"
    bars.write_text("\n".join([lines[0], *keep]) + "\n")
    signals = tmp_path / "signals.csv"
    price = float(keep[60].split(",")[5])
    symbol = keep[60].split(",")[1]
    signals.write_text("timestamp,symbol,side,stop_loss,take_profit\n"
                       f"{days[0]}T15:00:30+00:00,{symbol},buy,{price * 0.9:.2f},"
                       f"{price * 1.2:.2f}\n")
    b = catalyst(tmp_path, "backtest", "--bars", str(bars), "--report",
                 str(tmp_path / "r.json"), "--signals", str(signals))
    assert b.returncode == 0, b.stderr
    v = catalyst(tmp_path, "replay", "--run", "latest", "--verify")
    assert v.returncode == 0 and " 0 divergences" in v.stdout, v.stdout
    assert "scanner off" in v.stdout or "RunStarted" in v.stdout
