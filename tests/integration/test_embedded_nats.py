"""The embedded nats-server never outlives a killed parent (it would hold the store), and a
port picked for it that is taken before it binds costs a retry, not a failed start."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.nats.embedded import EmbeddedNats, EmbeddedNatsError, free_port
from adapters.nats.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has exited; only reaping is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_a_killed_parent_takes_its_server_down() -> None:
    code = ("from adapters.nats.embedded import EmbeddedNats; import time; "
            "s = EmbeddedNats().start(); print(s.proc.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    assert parent.stdout is not None
    server = int(parent.stdout.readline())
    assert alive(server)
    parent.kill()
    parent.wait()
    for _ in range(50):
        if not alive(server):
            break
        time.sleep(0.1)
    assert not alive(server)


def _squat(port: int) -> socket.socket:
    """Bind a port without listening: a connect to it is refused, as to a free port, but
    the server's own bind fails (the race CI lost: checked free, taken before the bind)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    return s


def test_free_ports_lie_below_the_ephemeral_range_and_never_repeat() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(p < low for p in ports)


def test_a_server_whose_picked_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    taken = server.port
    with _squat(taken):
        server.start()
        try:
            assert server.port != taken
        finally:
            server.cleanup()


def test_a_fixed_port_that_is_taken_is_an_error_not_another_port(tmp_path: Path) -> None:
    port = free_port()
    with _squat(port), pytest.raises(EmbeddedNatsError, match="exited"):
        EmbeddedNats(store_dir=tmp_path / "nats", port=port).start()


def test_a_cluster_whose_picked_route_port_was_taken_starts_on_fresh_ports(
        tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster")
    taken = cluster.ports[2][1]  # n3's route port: n3 failed to start this way in CI
    with _squat(taken):
        cluster.start()
        try:
            assert taken not in {p for ports in cluster.ports for p in ports}
        finally:
            cluster.stop()


def test_a_start_is_judged_on_its_own_part_of_an_appended_log(tmp_path: Path) -> None:
    """A store's log keeps every start's lines: an old "Server is ready" (and someone else
    listening on the port) is not this start's readiness."""
    store = tmp_path / "nats"
    store.mkdir()
    (store / "nats-server.log").write_text("[1] old run: Server is ready\n")
    port = free_port()
    with _squat(port) as other:
        other.listen()
        with pytest.raises(EmbeddedNatsError, match="exited"):
            EmbeddedNats(store_dir=store, port=port).start(timeout=5)
    server = EmbeddedNats(store_dir=store).start()
    try:
        assert "old run" in (store / "nats-server.log").read_text()  # kept
    finally:
        server.cleanup()
