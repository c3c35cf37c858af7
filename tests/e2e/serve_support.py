"""`catalyst run --serve` / `catalyst serve` as a user starts them: a real process on a free
port (the URL read from what it prints), stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cli_support import CATALYST, clean_env

TOKEN = "tester:dashboard-test-token-0123456789"
SECRET = TOKEN.split(":", 1)[1]
AUTH = {"Authorization": f"Bearer {SECRET}"}
_URL = re.compile(r"API and dashboard: (http://\S+?)/\s")


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)
    # Lines as a reader thread takes them off the pipe. select() on the pipe would miss a
    # line already pulled into the text wrapper's buffer with the one before it, and wait
    # for output that had already come (it did, once, under load).
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def start_reading(self) -> None:
        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.put(line)
            self.lines.put(None)  # the process closed its output

        threading.Thread(target=pump, daemon=True).start()

    def read_until(self, text: str, timeout: float) -> None:
        """Wait for a line of output containing `text` (the process keeps running)."""
        deadline = time.monotonic() + timeout
        if any(text in line for line in self.output):
            return
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                break
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in the output:\n{''.join(self.output)[-3000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        """Ctrl-C, then kill -9 if it has not ended within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def interrupt(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the rest of the output, to its end
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
        return code


@contextmanager
def serving(cwd: Path, *args: str, token: str | None = TOKEN,
            start_timeout: float = 60.0) -> Iterator[Served]:
    assert CATALYST
    env = clean_env(PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    env = {k: v for k, v in env.items() if not k.startswith("CATALYST_API_TOKEN")}
    if token:
        env["CATALYST_API_TOKEN"] = token
    # Ctrl-C as in a terminal: a test runner started in the background ignores SIGINT, and
    # a child would inherit that.
    proc = subprocess.Popen([CATALYST, *args, "--port", "0"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    served = Served(proc, "")
    served.start_reading()
    try:
        served.read_until("API and dashboard:", start_timeout)
        m = _URL.search("".join(served.output))
        assert m, "".join(served.output)
        served.url = m.group(1)
        yield served
    finally:
        served.stop(20)


def chromium_paths() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver (.ci/run installs them); nothing downloaded."""
    browser = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                    if os.path.exists(p)), None)
    driver = next((p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
                   if os.path.exists(p)), None)
    return (browser, driver) if browser and driver else None
