"""Config values that used to be accepted and should not be (issue 16): duplicate keys,
booleans where numbers are meant and the reverse, empty files, a NATS URL that is not one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config.loader import DEFAULT_DIR, ConfigError, load_settings


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    for f in ("risk_parameters.yaml", "trading_config.yaml"):
        shutil.copy(DEFAULT_DIR / f, tmp_path / f)
    return tmp_path


def test_a_duplicate_key_is_an_error_naming_both_lines(cfg: Path) -> None:
    path = cfg / "risk_parameters.yaml"
    text = path.read_text()
    first = next(i for i, line in enumerate(text.splitlines(), 1) if "max_positions:" in line)
    lines = text.splitlines()
    lines.insert(first, "  max_positions: 7")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    msg = str(e.value)
    assert f"risk_parameters.yaml:{first + 1}" in msg and "duplicate key 'max_positions'" in msg
    assert f"line {first}" in msg


@pytest.mark.parametrize(("old", "new", "field"), [
    ("max_positions: 5", "max_positions: true", "risk_limits.max_positions"),
    ("max_positions: 5", "max_positions: 5.0", "risk_limits.max_positions"),
    ("max_positions: 5", "max_positions: '5'", "risk_limits.max_positions"),
    ("close_all_positions: true", "close_all_positions: 1", "close_all_positions"),
    ("close_all_positions: true", "close_all_positions: 'yes'", "close_all_positions"),
    ("warning_threshold_pct: 0.75", "warning_threshold_pct: true", "warning_threshold_pct"),
])
def test_a_bool_is_not_a_number_and_a_number_is_not_a_bool(cfg: Path, old: str, new: str,
                                                           field: str) -> None:
    path = cfg / "risk_parameters.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    assert "risk_parameters.yaml:" in str(e.value) and field in str(e.value)


def test_smtp_port_from_the_environment_is_still_a_number(cfg: Path) -> None:
    s = load_settings(cfg, env={"SMTP_PORT": "2525"}).settings
    assert s.trading.alerts.smtp.port == 2525
    with pytest.raises(ConfigError, match="SMTP_PORT"):
        load_settings(cfg, env={"SMTP_PORT": "twenty"})


def test_an_empty_config_file_is_an_error_that_says_so(cfg: Path) -> None:
    (cfg / "trading_config.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"trading_config.yaml: .*empty"):
        load_settings(cfg, env={})
    (cfg / "trading_config.yaml").write_text("{}\n")  # every default, said explicitly
    assert load_settings(cfg, env={}).settings.trading.nats.url is None


@pytest.mark.parametrize("url", ["not a url", "localhost:4222", "http://127.0.0.1:4222",
                                 "nats://", "nats://:4222"])
def test_a_nats_url_that_is_not_one_is_refused(cfg: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="CATALYST_NATS_URL.*nats.url"):
        load_settings(cfg, env={"CATALYST_NATS_URL": url})


@pytest.mark.parametrize("url", ["nats://127.0.0.1:4222", "tls://nats.example.com:4222",
                                 "nats://a:4222,nats://b:4222", "ws://127.0.0.1:8080"])
def test_nats_urls_that_are_urls_pass(cfg: Path, url: str) -> None:
    assert load_settings(cfg, env={"CATALYST_NATS_URL": url}).settings.trading.nats.url == url


def test_a_binary_config_file_is_named(cfg: Path) -> None:
    (cfg / "risk_parameters.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"risk_parameters.yaml: not a text file"):
        load_settings(cfg, env={})
