"""`catalyst run --serve` and `catalyst serve --role api` end to end, over real HTTP.

A simulated demo day driven through the API: the manual emergency stop mid-day flattens the
simulated account and halts; a resume and a late session start go in after the day ended.
After Ctrl-C the log verifies with 0 divergences (the API's events are inputs, dispatched
between two simulated minutes), and `catalyst serve --role api` serves that finished log.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.cli_support import catalyst, clean_env
from tests.e2e.serve_support import AUTH, serving

pytestmark = pytest.mark.e2e


def until(url: str, pred: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(url, timeout=10).json()
        if pred(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


@pytest.mark.timeout(240)
def test_a_day_driven_through_the_api_replays_with_no_divergence(tmp_path: Path) -> None:
    with serving(tmp_path, "run", "--serve", "--speed", "3000") as served:
        api = served.url + "/api/v1"
        until(f"{api}/fills", lambda b: len(b["fills"]) > 0)  # trading has begun
        r = httpx.post(f"{api}/emergency-stop", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        status = until(f"{api}/status", lambda b: b["trading"]["state"] == "halted"
                       and b["positions"] == [])
        assert status["trading"]["reason"] == "manual"
        served.read_until("still serving", 150)
        r = httpx.post(f"{api}/trading/resume", headers=AUTH, json={"reason": "reviewed"},
                       timeout=30)
        assert r.json()["was_halted"] is True
        key = {**AUTH, "Idempotency-Key": "late"}
        first = httpx.post(f"{api}/workflow/start", headers=key, timeout=30).json()
        again = httpx.post(f"{api}/workflow/start", headers=key, timeout=30).json()
        assert first["event_id"] == again["event_id"] and again["duplicate"] is True
        rejected = until(f"{api}/events?subject=catalyst.session.start_rejected",
                         lambda b: len(b) == 1)
        assert "market already closed" in rejected[0]["event"]["reason"]
        stops = httpx.get(f"{api}/events",
                          params={"subject": "catalyst.risk.emergency_stop_triggered"}).json()
        assert [(s["event"]["reason"], s["event"]["triggered_by"]) for s in stops] == [
            ("manual", "api:tester")]  # halted by hand: the limit's stop never came
        assert served.interrupt() == 0
    out = "".join(served.output)
    assert "emergency stops" in out and "dashboard-test-token" not in out

    verify = catalyst(tmp_path, "replay", "--verify", "--run", "latest", env=clean_env(),
                      timeout=150)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert " 0 divergences" in verify.stdout

    # A live store no running Catalyst serves is not opened behind its back.
    shutil.copytree(tmp_path / "var" / "runs" / "latest" / "nats", tmp_path / "var" / "nats")
    r = catalyst(tmp_path, "serve", "--role", "api", "--port", "0")
    assert r.returncode == 1 and "no running Catalyst serves" in r.stderr

    # The API on its own, against that finished log: reads work, the state is the same.
    with serving(tmp_path, "serve", "--role", "api", "--run", "latest") as standalone:
        status = until(standalone.url + "/api/v1/status",
                       lambda b: b["session"]["state"] == "ended")
        assert status["trading"]["state"] == "active"
        assert status["trading"]["last_resumed"]["by"] == "api:tester"
        assert status["api"]["runs_beside"] == "standalone"
        assert standalone.interrupt() == 0


def test_serve_knows_its_roles_and_needs_a_log(tmp_path: Path) -> None:
    r = catalyst(tmp_path, "serve", "--role", "scanner")
    assert r.returncode == 1
    assert ("unknown role 'scanner'; available: ingest, session, strategy, risk, execution, "
            "alerts, api") in r.stderr
    r = catalyst(tmp_path, "serve", "--role", "risk")
    assert r.returncode == 1 and "services share one NATS server" in r.stderr
    r = catalyst(tmp_path, "serve", "--role", "api", "--port", "0")
    assert r.returncode == 1 and "no event log at" in r.stderr
    r = catalyst(tmp_path, "run", "--serve", "--port", "0",
                 env=clean_env(CATALYST_API_TOKEN="alice:short"))
    assert r.returncode == 1 and "shorter than 16 characters" in r.stderr
    assert "short" not in r.stderr.replace("shorter", "")  # the token is not echoed


@pytest.mark.timeout(120)
def test_ctrl_c_during_the_day_ends_the_run_and_the_api(tmp_path: Path) -> None:
    with serving(tmp_path, "run", "--serve", "--speed", "60") as served:
        until(served.url + "/readyz", lambda b: b["ready"])
        started = time.monotonic()
        assert served.interrupt(timeout=60) == 130  # as without --serve: "interrupted"
        assert time.monotonic() - started < 30
    assert "interrupted" in "".join(served.output)
