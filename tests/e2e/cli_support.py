"""Running the real `catalyst` console script in a scratch directory, with a clean environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from config.loader import DEFAULT_DIR, ENV_MAP

CATALYST = shutil.which("catalyst", path=os.path.dirname(sys.executable))


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any Catalyst / Alpaca / SMTP setting, so a
    developer's .env (or a real server on 4222) never leaks into a test run."""
    env = {k: v for k, v in os.environ.items()
           if k not in ENV_MAP and not (k.endswith("_FILE") and k[:-5] in ENV_MAP)}
    env.update(extra)
    return env


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path


def catalyst(cwd: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 90) -> Run:
    assert CATALYST, "the `catalyst` console script is not installed next to this python"
    p = subprocess.run([CATALYST, *args], cwd=cwd, env=env or clean_env(), capture_output=True,
                       text=True, timeout=timeout, check=False)
    return Run(p.returncode, p.stdout, p.stderr, cwd)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> None:
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def write_config(directory: Path, risk: dict[str, Any] | None = None,
                 trading: dict[str, Any] | None = None) -> Path:
    """A --config DIR: the shipped YAML files with some keys changed."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, changes in (("risk_parameters.yaml", risk), ("trading_config.yaml", trading)):
        data = yaml.safe_load((DEFAULT_DIR / name).read_text())
        _merge(data, changes or {})
        (directory / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory
