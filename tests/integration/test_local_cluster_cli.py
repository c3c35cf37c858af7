"""The documented command: `python -m adapters.nats.local_cluster start` brings up a 3-node
cluster a Catalyst at replicas 3 can use, and `stop` from another shell takes it down."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.nats.embedded import free_port
from adapters.nats.event_log import EventLog, StreamNames

pytestmark = pytest.mark.integration


def free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base_port() -> int:
    """A client port whose whole family (clients, routes +2000, monitoring +4000) is free."""
    for _ in range(50):
        base = free_port()
        if base + 4002 < 65536 and all(free(base + off + i) for off in (0, 2000, 4000)
                                       for i in range(3)):
            return base
    raise AssertionError("no free port family found")


async def test_start_prints_the_servers_and_stop_from_another_shell_ends_it(
        tmp_path: Path) -> None:
    base = free_base_port()
    cmd = [sys.executable, "-m", "adapters.nats.local_cluster"]
    proc = subprocess.Popen([*cmd, "start", "--dir", str(tmp_path), "--base-port", str(base)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while not any("CATALYST_NATS_URL=" in line for line in lines):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        urls = next(x for x in lines if "CATALYST_NATS_URL=" in x).split("=", 1)[1].strip()
        assert urls == ",".join(f"nats://127.0.0.1:{base + i}" for i in range(3))
        assert (tmp_path / "cluster.json").exists()

        log = await EventLog.connect(urls, names=StreamNames("CLI_REC", "CLI_MD"), replicas=3)
        try:
            info = await log.js.stream_info("CLI_REC")
            assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
        finally:
            await log.close()

        stop = subprocess.run([*cmd, "stop", "--dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert proc.wait(timeout=30) == 0
        assert "cluster stopped" in proc.stdout.read()
        assert not (tmp_path / "cluster.json").exists()
        assert [d.name for d in sorted(tmp_path.iterdir())] == ["n1", "n2", "n3"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
