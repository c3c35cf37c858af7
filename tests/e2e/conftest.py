"""Run the installed `catalyst` console script, as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CATALYST = shutil.which("catalyst", path=os.path.dirname(sys.executable))


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    assert CATALYST, "the catalyst console script is not installed in this environment"
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("ALPACA_", "SMTP_", "ALERT_EMAIL_", "TRADING_",
                                     "CATALYST_"))}
    full_env.update({"COLUMNS": "120", "NO_COLOR": "1"})
    full_env.update(env or {})
    return subprocess.run([CATALYST, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 180):  # type: ignore[no-untyped-def]
        return run_cli(*args, cwd=tmp_path, env=env, timeout=timeout)

    return call
