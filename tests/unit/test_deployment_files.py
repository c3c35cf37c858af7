"""docker-compose.yml and the Dockerfile say what issue 18 asks of them, and stay in step with
the code: every role has a service, every service parses as a `catalyst` command.

No Docker engine runs on the machines this is built on, so compose itself is never started
here; these checks read the files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from adapters.cli.main import app
from adapters.runtime.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def nats_nodes(compose: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in compose["services"].items()
            if str(s.get("image", "")).startswith("nats:")}


def test_three_nats_nodes_with_jetstream_fsync_and_health_checks(
        compose: dict[str, Any]) -> None:
    nodes = nats_nodes(compose)
    assert len(nodes) == 3
    conf = compose["configs"]["nats_conf"]["content"]
    assert re.search(r"jetstream\s*{[^}]*sync_interval:\s*always", conf)
    routes = re.findall(r"nats-route://(\w+):6222", conf)
    assert sorted(routes) == sorted(nodes)
    for name, node in nodes.items():
        assert "/healthz" in " ".join(node["healthcheck"]["test"]), name
        assert node["restart"] in ("always", "unless-stopped", "on-failure"), name
        assert node["environment"]["NATS_SERVER_NAME"] == name
        assert any(v.endswith(":/data") for v in node["volumes"]), name  # its own store


def test_one_service_per_role_with_a_restart_policy_on_replicated_streams(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    by_role = {s["command"][2]: s for s in services.values()
               if s.get("command", [])[:2] == ["serve", "--role"]}
    assert sorted(by_role) == sorted(ROLES)
    for role, service in by_role.items():
        assert service["restart"] in ("always", "unless-stopped", "on-failure"), role
        env = service["environment"]
        assert env["CATALYST_NATS_REPLICAS"] == "3", role
        assert sorted(u.split("//")[1].split(":")[0]
                      for u in env["CATALYST_NATS_URL"].split(",")) == sorted(
                          nats_nodes(compose)), role
        for node in nats_nodes(compose):
            assert service["depends_on"][node]["condition"] == "service_healthy", role


def test_a_mail_catcher_receives_the_alerts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    catcher = services["mailcatcher"]
    assert "1025:1025" in catcher["ports"]
    env = services["alerts"]["environment"]
    assert (env["SMTP_HOST"], env["SMTP_PORT"]) == ("mailcatcher", "1025")


def test_every_service_command_parses(compose: dict[str, Any]) -> None:
    """A typo in a compose command would only show as a crash loop in the containers."""
    runner = CliRunner()
    for name, service in compose["services"].items():
        command = service.get("command")
        if command is None or name in nats_nodes(compose) or name == "mailcatcher":
            continue
        result = runner.invoke(app, [command[0], "--help"])
        assert result.exit_code == 0, (name, result.output)
        options = set(re.findall(r"--[a-z][a-z-]*", result.output))
        used = {arg for arg in command[1:] if arg.startswith("--")}
        assert used <= options, (name, used - options)


def test_the_image_pins_python_and_never_runs_as_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+python:(\S+)", dockerfile, re.MULTILINE)
    assert base and re.match(r"\d+\.\d+\.\d+", base.group(1)), "Python pinned to a patch"
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["catalyst"\]', dockerfile, re.MULTILINE)
