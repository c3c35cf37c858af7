"""nats.url / nats.servers / nats.replicas / nats.retry_timeout_seconds: a cluster's settings,
and one clear error naming the field (or the variable) when they are wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config.loader import DEFAULT_DIR, ConfigError, load_settings

CLUSTER = "nats://10.0.0.1:4222,nats://10.0.0.2:4222,tls://10.0.0.3:4222"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    for f in ("risk_parameters.yaml", "trading_config.yaml"):
        shutil.copy(DEFAULT_DIR / f, tmp_path / f)
    return tmp_path


def set_nats(cfg: Path, lines: str) -> None:
    """The shipped nats section with its url/servers/replicas/retry lines replaced."""
    path = cfg / "trading_config.yaml"
    keys = ("  url:", "  servers:", "  replicas:", "  retry_timeout_seconds:")
    kept = [line for line in path.read_text().splitlines() if not line.startswith(keys)]
    at = kept.index("nats:") + 1
    path.write_text("\n".join(kept[:at] + lines.splitlines() + kept[at:]) + "\n")


def test_the_default_is_the_embedded_single_server() -> None:
    n = load_settings(env={}).settings.trading.nats
    assert n.server_urls == () and n.replicas == 1 and n.retry_timeout_seconds == 120


def test_a_comma_separated_variable_is_a_list_of_servers() -> None:
    n = load_settings(env={"CATALYST_NATS_URL": CLUSTER.replace(",", " , ")}).settings.trading.nats
    assert n.server_urls == tuple(CLUSTER.split(","))


def test_a_single_url_is_a_one_element_list() -> None:
    n = load_settings(env={"CATALYST_NATS_URL": "nats://10.0.0.1:4222"}).settings.trading.nats
    assert n.server_urls == ("nats://10.0.0.1:4222",)


def test_servers_and_replicas_from_the_file(cfg: Path) -> None:
    set_nats(cfg, "  servers: [nats://n1:4222, nats://n2:4222, nats://n3:4222]\n"
                  "  replicas: 3\n  retry_timeout_seconds: 30")
    n = load_settings(cfg, env={}).settings.trading.nats
    assert n.server_urls == ("nats://n1:4222", "nats://n2:4222", "nats://n3:4222")
    assert n.replicas == 3 and n.retry_timeout_seconds == 30


def test_the_variable_replaces_the_files_servers(cfg: Path) -> None:
    set_nats(cfg, "  servers: [nats://n1:4222]")
    n = load_settings(cfg, env={"CATALYST_NATS_URL": "nats://other:4222"}).settings.trading.nats
    assert n.server_urls == ("nats://other:4222",)


def test_a_variable_that_is_not_a_nats_url_names_the_variable_without_the_password() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={"CATALYST_NATS_URL": "nats://a:4222,http://bot:hunter2@b:4222"})
    msg = str(e.value)
    assert msg.startswith("environment variable CATALYST_NATS_URL: field 'nats.url': ")
    assert "'http://b:4222' is not a NATS server URL" in msg
    assert "hunter2" not in msg


@pytest.mark.parametrize("lines, field", [
    ("  servers: [nats://n1:4222, n2:4222]", "nats.servers"),
    ("  servers: [nats://n1:99999]", "nats.servers"),
    ("  replicas: 0", "nats.replicas"),
    ("  replicas: 7", "nats.replicas"),
    ("  retry_timeout_seconds: 0", "nats.retry_timeout_seconds"),
    ("  url: nats://n1:4222\n  servers: [nats://n2:4222]", "nats.servers"),
])
def test_bad_values_name_file_line_and_field(cfg: Path, lines: str, field: str) -> None:
    set_nats(cfg, lines)
    with pytest.raises(ConfigError, match=rf"trading_config\.yaml:\d+: field '{field}': "):
        load_settings(cfg, env={})


def test_replicas_from_the_environment_and_a_bad_one_names_the_variable() -> None:
    env = {"CATALYST_NATS_URL": CLUSTER, "CATALYST_NATS_REPLICAS": "3"}
    assert load_settings(env=env).settings.trading.nats.replicas == 3
    with pytest.raises(ConfigError, match="environment variable CATALYST_NATS_REPLICAS: "
                       "field 'nats.replicas'"):
        load_settings(env={"CATALYST_NATS_REPLICAS": "6"})
