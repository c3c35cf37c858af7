"""`catalyst run` end to end on the embedded default: the real console script in a scratch
directory, embedded NATS, simulated broker, bundled (synthetic) data, mail to var/mail."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest

from tests.e2e.cli_support import Run, catalyst, clean_env, write_config

pytestmark = pytest.mark.e2e

SELLOFF = "2025-11-26"  # the bundled data's selloff day: every symbol gaps down at 14:01 NY


def row(out: str, label: str) -> str:
    """A value of the summary table, e.g. row(out, "emergency stops") -> "1"."""
    m = re.search(rf"^\W*{re.escape(label)}\s*\W\s*(\S.*?)\s*\W*$", out, re.MULTILINE)
    assert m, f"no summary row {label!r} in:\n{out}"
    return m.group(1)


def mails(cwd: Path) -> list:
    return [message_from_bytes(p.read_bytes()) for p in sorted((cwd / "var/mail/new").glob("*"))]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return catalyst(tmp_path_factory.mktemp("run"), "run")


def test_run_on_the_bundled_data_prints_the_summary_and_exits_0(default_run: Run) -> None:
    r = default_run

    assert r.returncode == 0, r.stderr
    assert re.search(r"P&L \d{4}-\d\d-\d\d\s*\W\s*[+-][\d,]+\.\d\d", r.stdout)
    assert row(r.stdout, "sessions started") == "1"
    assert int(row(r.stdout, "trades (round trips)")) > 0
    assert re.fullmatch(r"[+-][\d,]+\.\d\d", row(r.stdout, "realized P&L"))
    assert row(r.stdout, "emergency stops").isdigit()
    assert int(row(r.stdout, "alerts sent")) > 0


def test_run_delivers_every_sent_alert_to_the_local_mailbox(default_run: Run) -> None:
    sent = int(row(default_run.stdout, "alerts sent"))
    box = mails(default_run.cwd)

    assert len(box) == sent
    assert all(m["To"] == "trader@localhost" and m["X-Catalyst-Severity"] for m in box)
    assert any(m["Subject"].startswith(
        "[INFO] [SIMULATED] Trading session started (autonomous, sim)") for m in box)


@pytest.fixture(scope="module")
def selloff_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return catalyst(tmp_path_factory.mktemp("selloff"), "run", "--date", SELLOFF)


def test_the_selloff_day_trips_the_emergency_stop_and_mails_a_critical_alert(
        selloff_run: Run) -> None:
    r = selloff_run

    assert r.returncode == 0, r.stderr
    assert f"P&L {SELLOFF}" in r.stdout
    assert int(row(r.stdout, "emergency stops")) >= 1
    critical = [m for m in mails(r.cwd) if m["X-Catalyst-Severity"] == "CRITICAL"]
    assert critical, "no CRITICAL mail in var/mail/new"
    assert any(m["X-Catalyst-Alert-Kind"] == "emergency_stop" for m in critical)
    assert any("Emergency stop" in m["Subject"] for m in critical)


def test_a_date_without_data_is_a_clear_error(tmp_path: Path) -> None:
    r = catalyst(tmp_path, "run", "--date", "2030-01-01")

    assert r.returncode == 1
    [message] = r.stderr.strip().splitlines()
    assert message.startswith("error: --date 2030-01-01: the dataset has ")
    assert SELLOFF in message
    assert not (tmp_path / "var" / "runs").exists()


def test_supervised_mode_is_reported_as_a_rejected_session(tmp_path: Path) -> None:
    r = catalyst(tmp_path, "run", env=clean_env(TRADING_SESSION_MODE="supervised"))

    assert r.returncode == 0, r.stderr
    assert "session start rejected: supervised mode not supported" in r.stdout
    assert row(r.stdout, "sessions started") == "0"
    assert row(r.stdout, "fills") == "0"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local port that would see any connection attempt (never answers)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def assert_nobody_connected(s: socket.socket) -> None:
    try:
        conn, peer = s.accept()
    except BlockingIOError:
        return
    conn.close()
    pytest.fail(f"something connected to {s.getsockname()} from {peer}")


def test_live_mode_without_the_live_flag_refuses_before_connecting_anywhere(
        tmp_path: Path, listener: socket.socket) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    config = write_config(tmp_path / "config", trading={
        "broker": {"paper_url": url, "live_url": url, "stream_url": url.replace("http", "ws")},
        "market_data": {"data_url": url, "stream_url": url.replace("http", "ws")},
    })
    env = clean_env(TRADING_MODE="live", ALPACA_API_KEY="PKFAKEKEY0000000000",
                    ALPACA_SECRET_KEY="fake-secret-not-a-real-one",
                    CATALYST_NATS_URL=url.replace("http", "nats"))

    r = catalyst(tmp_path, "run", "--config", str(config), env=env)

    assert r.returncode == 1
    [message] = r.stderr.strip().splitlines()
    assert message.startswith("error: broker.mode is live but --live was not given")
    assert "fake-secret" not in r.stdout + r.stderr
    assert_nobody_connected(listener)
    assert not (tmp_path / "var").exists()


def test_the_live_flag_without_live_mode_is_refused_too(
        tmp_path: Path, listener: socket.socket) -> None:
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    config = write_config(tmp_path / "config", trading={
        "broker": {"paper_url": url, "live_url": url},
        "market_data": {"data_url": url},
    })
    env = clean_env(ALPACA_API_KEY="PKFAKEKEY0000000000", ALPACA_SECRET_KEY="fake-secret",
                    CATALYST_NATS_URL=url.replace("http", "nats"))

    r = catalyst(tmp_path, "run", "--live", "--config", str(config), env=env)

    assert r.returncode == 1
    assert "--live given but broker.mode is paper" in r.stderr
    assert_nobody_connected(listener)
