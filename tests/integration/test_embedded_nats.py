"""The embedded nats-server never outlives a killed parent (it would hold the store)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

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
