"""The CLI fits shell habits: --help everywhere, one-line errors, exit codes, JSON output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from config.loader import DEFAULT_DIR

COMMANDS = [
    [], ["run"], ["backtest"], ["resume"], ["config"], ["config", "check"], ["events"],
    ["events", "schema"], ["events", "tail"], ["session"], ["session", "start"], ["alerts"],
    ["alerts", "test"], ["data"], ["data", "fetch"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "catalyst")
def test_every_command_explains_itself(cli, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: catalyst" in result.stdout


def test_config_check_prints_effective_config_with_secrets_redacted(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("config", "check", "--json",
                 env={"ALPACA_API_KEY": "AKSECRETKEY000000001", "ALPACA_SECRET_KEY": "topsecret"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["risk"]["risk_limits"]["max_daily_loss_usd"] == "2000"
    assert data["trading"]["broker"]["secret_key"] == "********"
    assert "topsecret" not in result.stdout + result.stderr
    assert "AKSECRETKEY" not in result.stdout + result.stderr


def test_config_check_fails_with_file_line_and_field(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for f in ("risk_parameters.yaml", "trading_config.yaml"):
        shutil.copy(DEFAULT_DIR / f, cfg / f)
    risk = cfg / "risk_parameters.yaml"
    risk.write_text(risk.read_text().replace("max_positions: 5", "max_positions: -3"))
    result = cli("config", "check", "--config", str(cfg))
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert f"{risk}:4: field 'risk_limits.max_positions'" in err


def test_config_check_missing_directory(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("config", "check", "--config", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert "config directory not found" in result.stderr


def test_events_schema_is_json_for_every_event(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("events", "schema")
    assert result.returncode == 0, result.stderr
    schemas = json.loads(result.stdout)
    assert schemas["EmergencyStopTriggered"]["x-subject"] == \
        "catalyst.risk.emergency_stop_triggered"
    assert len(schemas) >= 30
    one = cli("events", "schema", "OrderFilled")
    assert list(json.loads(one.stdout)) == ["OrderFilled"]
    bad = cli("events", "schema", "Nope")
    assert bad.returncode == 1 and "unknown event type" in bad.stderr


def test_resume_needs_a_reason(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("resume")
    assert result.returncode != 0
    assert "--reason" in result.stderr
