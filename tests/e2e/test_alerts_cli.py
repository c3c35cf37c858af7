"""`catalyst` and alerts, end to end: misconfiguration is one clear line, everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli_support import catalyst, write_config

pytestmark = pytest.mark.e2e


def test_a_misspelled_plugin_channel_fails_config_check_and_run_in_one_line(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path / "cfg", trading={"alerts": {"extra_channels": ["jsonll"]}})
    check = catalyst(tmp_path, "config", "check", "--config", str(cfg))
    assert check.returncode == 1
    assert "alert channel 'jsonll' is not installed" in check.stderr
    assert "alerts.extra_channels" in check.stderr
    run = catalyst(tmp_path, "run", "--config", str(cfg))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr
    assert "alert channel 'jsonll' is not installed" in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 2, run.stderr
