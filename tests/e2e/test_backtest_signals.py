"""The backtest report lists every signal with its outcome (issue 16): approved (with the
order and what became of it), denied (rule and figures) or skipped (why). A signal that
cannot trade no longer leaves the user with '0 fills' and nothing more."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from tests.e2e.cli_support import catalyst
from tests.e2e.test_backtest_cli import Tape

pytestmark = pytest.mark.e2e

DAY = date(2026, 3, 2)


def test_every_signal_is_reported_with_its_outcome(tmp_path: Path) -> None:
    tape = (Tape().symbol("AAA", DAY, "10.00").symbol("BBB", DAY, "20.00", last="15:00")
            .signal(DAY, "14:35", "AAA", "9.50", "11.00")      # trades
            .signal(DAY, "14:40", "CCC", "10.50", "9.00")      # stop above target, a buy
            .signal(DAY, "15:30", "BBB", "19.00", "22.00")     # no BBB bar after it
            .signal(DAY, "21:30", "AAA", "9.50", "11.00"))     # after the close
    tape.symbol("CCC", DAY, "10.00")
    bars, signals = tape.write(tmp_path)
    assert signals is not None

    r = catalyst(tmp_path, "backtest", "--bars", str(bars), "--signals", str(signals),
                 "--report", "R.json")

    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "R.json").read_text())
    assert {"fills", "days", "emergency_stops", "positions", "run_id"} <= set(report)
    by_symbol_time = {(s["symbol"], s["time"][11:16]): s for s in report["signals"]}
    assert len(report["signals"]) == 4

    traded = by_symbol_time[("AAA", "14:35")]
    assert traded["outcome"] == "approved" and traded["order"]["status"] == "filled"
    assert traded["order"]["qty"] == traded["order"]["filled_qty"]

    inverted = by_symbol_time[("CCC", "14:40")]
    assert (inverted["outcome"], inverted["rule"]) == ("denied", "invalid_signal")
    assert inverted["figures"]["stop_loss"] == "10.50" and "order" not in inverted

    stale = by_symbol_time[("BBB", "15:30")]
    assert stale["outcome"] == "approved" and stale["order"]["status"] == "canceled"
    assert stale["order"]["filled_qty"] == "0" and "none came" in stale["order"]["why"]

    late = by_symbol_time[("AAA", "21:30")]
    assert late["outcome"] == "skipped" and "outside the session" in late["why"]

    assert "4 signals: 2 approved (1 filled), 1 denied, 1 skipped" in r.stdout
    assert "denied by invalid_signal" in r.stdout and "outside the session" in r.stdout
