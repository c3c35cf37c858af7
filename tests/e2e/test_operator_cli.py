"""Operator-proof CLI (issue 16): reading never writes, unknown runs are errors, a finished
run's log is closed, a cut-off run says so. The real `catalyst` script, real stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.cli_support import CATALYST, Run, catalyst, clean_env, write_config

pytestmark = pytest.mark.e2e


def one_line_error(r: Run) -> str:
    """The error contract: non-zero, nothing but one `error:` line on stderr, no traceback."""
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def tree(cwd: Path) -> set[str]:
    return {str(p.relative_to(cwd)) for p in cwd.rglob("*")}


@dataclass
class Sim:
    cwd: Path
    run_id: str
    day: str
    verified: str  # the last line of `replay --verify` right after the run
    summary: str  # what `catalyst run` printed, on a 60-column terminal


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    cwd = tmp_path_factory.mktemp("sim")
    r = catalyst(cwd, "run", "--date", "2025-11-25", env=clean_env(COLUMNS="60"),
                 timeout=240)
    assert r.returncode == 0, r.stderr
    run_id = os.readlink(cwd / "var/runs/latest")
    v = catalyst(cwd, "replay", "--verify", timeout=240)
    assert v.returncode == 0 and " 0 divergences" in v.stdout, v.stdout + v.stderr
    return Sim(cwd, run_id, "2025-11-25", v.stdout.strip().splitlines()[-1], r.stdout)


def test_the_summary_labels_the_event_log_and_never_wraps_a_path_or_command(sim: Sim) -> None:
    lines = sim.summary.splitlines()
    assert f"event log (NATS store): var/runs/{sim.run_id}/nats" in lines
    assert f"replay: catalyst replay --run {sim.run_id}" in lines
    assert "mail (maildir): var/mail/" in lines


READS = [
    ["status"], ["status", "--json"], ["replay"], ["replay", "--verify"],
    ["audit", "report", "--date", "2025-11-25"],
    ["audit", "export", "--date", "2025-11-25", "--out", "x.jsonl"],
    ["events", "tail"],
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_reading_command_with_no_log_anywhere_says_so_and_creates_nothing(
        tmp_path: Path, args: list[str]) -> None:
    r = catalyst(tmp_path, *args, timeout=30)
    assert "no event log" in one_line_error(r)
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("args", [["resume", "--reason", "checked"], ["session", "start"]],
                         ids=" ".join)
def test_commands_that_address_a_running_system_refuse_when_none_runs(
        tmp_path: Path, args: list[str]) -> None:
    r = catalyst(tmp_path, *args, timeout=30)
    assert "no running Catalyst system" in one_line_error(r)
    assert tree(tmp_path) == set()


def test_a_finished_simulations_log_is_closed_to_resume_and_session_start(sim: Sim) -> None:
    before = tree(sim.cwd)
    for args in (["resume", "--reason", "after the demo"], ["session", "start"]):
        r = catalyst(sim.cwd, *args, timeout=30)
        assert "catalyst run" in one_line_error(r)  # in a simulation, resume is a new run
    assert not (sim.cwd / "var/nats").exists()
    v = catalyst(sim.cwd, "replay", "--verify", timeout=240)
    assert v.returncode == 0 and v.stdout.strip().splitlines()[-1] == sim.verified
    assert tree(sim.cwd) == before


def test_tailing_a_finished_run_says_so_instead_of_waiting_for_ever(sim: Sim) -> None:
    for args in (["events", "tail"], ["events", "tail", "--run", sim.run_id]):
        r = catalyst(sim.cwd, *args, timeout=30)
        assert "its log is finished" in one_line_error(r) and "catalyst replay" in r.stderr


def test_status_reads_the_run_and_leaves_no_live_store_behind(sim: Sim) -> None:
    r = catalyst(sim.cwd, "status", "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["run"]["run_id"] == sim.run_id and st["session"]["state"] == "ended"
    assert not (sim.cwd / "var/nats").exists()


def test_an_empty_live_store_does_not_shadow_the_simulation_runs(sim: Sim,
                                                                  tmp_path: Path) -> None:
    (sim.cwd / "var/nats/jetstream").mkdir(parents=True)
    try:
        r = catalyst(sim.cwd, "status", "--json", timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["run"]["run_id"] == sim.run_id
        rp = catalyst(sim.cwd, "replay", "--subject", "catalyst.session.>", timeout=60)
        assert rp.returncode == 0 and "SessionStarted" in rp.stdout, rp.stderr
    finally:
        (sim.cwd / "var/nats/jetstream").rmdir()
        (sim.cwd / "var/nats").rmdir()


@pytest.mark.parametrize("args", [
    ["status"], ["replay"], ["replay", "--verify"], ["events", "tail"],
    ["audit", "report", "--date", "2025-11-25"],
    ["audit", "export", "--date", "2025-11-25", "--out", "x.jsonl"],
], ids=" ".join)
def test_an_unknown_run_id_is_an_error_naming_the_nearest_runs(sim: Sim,
                                                              args: list[str]) -> None:
    before = tree(sim.cwd)
    typo = sim.run_id[:-2] + "99"
    r = catalyst(sim.cwd, *args, "--run", typo, timeout=30)
    line = one_line_error(r)
    assert repr(typo) in line and sim.run_id in line
    assert tree(sim.cwd) == before


def _start_run(cwd: Path, *extra: str) -> subprocess.Popen[str]:
    # Slow enough to be caught mid-session: 600x real time is ~40 s for a whole day.
    p = subprocess.Popen([str(CATALYST), "run", "--speed", "600", *extra], cwd=cwd,
                         env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = catalyst(cwd, "status", "--json", timeout=30)
        if st.returncode == 0 and json.loads(st.stdout)["session"]["state"].startswith(
                "running"):
            return p
        time.sleep(0.5)
    p.kill()
    pytest.fail("the run never showed a running session")


def test_a_killed_run_is_reported_cut_off_not_running(tmp_path: Path) -> None:
    p = _start_run(tmp_path)
    # While it runs, a tail follows it (the run announced its server).
    out = tmp_path / "tail.txt"
    with out.open("w") as f:
        tail = subprocess.Popen([str(CATALYST), "events", "tail", "--run", "latest"],
                                cwd=tmp_path, env=clean_env(), stdout=f,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "ClockTicked" not in out.read_text():
            time.sleep(0.5)
        tail.send_signal(signal.SIGINT)
        tail.communicate(timeout=30)
    assert "ClockTicked" in out.read_text(), out.read_text()[-500:]
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    time.sleep(0.5)  # the embedded server dies with its parent
    r = catalyst(tmp_path, "status", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Session: cut off" in r.stdout and "killed or interrupted" in r.stdout, r.stdout
    j = json.loads(catalyst(tmp_path, "status", "--json", timeout=60).stdout)
    assert j["session"]["cut_off"] is True


def test_sigterm_stops_a_run_with_its_summary_and_config_edits_wait_for_the_next_run(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg")
    p = _start_run(tmp_path, "--config", str(config))
    # Simulations take their config at start (README): an edit during one is not applied.
    risk = config / "risk_parameters.yaml"
    risk.write_text(risk.read_text().replace("max_positions: 5", "max_positions: 4", 1))
    time.sleep(1.5)  # a live runtime would have reloaded by now
    p.send_signal(signal.SIGTERM)
    out, errs = p.communicate(timeout=60)
    assert p.returncode == 143, errs
    assert "Traceback" not in errs
    assert "fills" in out and "interrupted (SIGTERM)" in out, out
    assert "event log (NATS store): var/runs/" in out
    cfg = catalyst(tmp_path, "replay", "--subject", "catalyst.config.>", timeout=60)
    assert cfg.returncode == 0 and cfg.stdout == "", cfg.stdout + cfg.stderr


# --- tracebacks where an error belongs ---------------------------------------------------


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.csv").write_bytes(b"\x00\x01\xff\xfe" * 64)
    (tmp_path / "not-export.jsonl").write_text('{"a": 1}\n')
    return tmp_path


@pytest.mark.parametrize(("args", "says"), [
    (["backtest", "--bars", "missing.csv", "--report", "r.json"], "--bars missing.csv: no such"),
    (["backtest", "--bars", "folder", "--report", "r.json"], "--bars folder: is a directory"),
    (["backtest", "--bars", "binary.csv", "--report", "r.json"], "not a text file"),
    (["backtest", "--bars", "not-export.jsonl", "--report", "nodir/r.json"],
     "--report nodir/r.json: the folder nodir does not exist"),
    (["replay", "--file", "not-export.jsonl"], "not a Catalyst export"),
    (["replay", "--file", "binary.csv"], "not a text file"),
    (["replay", "--file", "folder", "--verify"], "is a directory"),
    (["audit", "import", "not-export.jsonl"], "not a Catalyst export"),
    (["audit", "import", "missing.jsonl"], "no such file"),
    (["audit", "report", "--file", "not-export.jsonl"], "not a Catalyst export"),
    (["audit", "report", "--date", "2025-11-25", "--out", "nodir/r.html"],
     "the folder nodir does not exist"),
    (["audit", "export", "--date", "2025-11-25", "--out", "nodir/x.jsonl"],
     "the folder nodir does not exist"),
    (["replay", "--file", "not-export.jsonl", "--run", "latest"], "not both"),
    (["audit", "report", "--file", "not-export.jsonl", "--run", "latest"], "not both"),
    (["run", "--speed", "0"], "--speed 0: must be more than 0"),
    (["run", "--speed", "-5"], "--speed -5: must be more than 0"),
    (["run", "--log-format", "xml"], "--log-format 'xml'"),
    (["run", "--live"], "--live needs ALPACA_API_KEY"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_what_a_user_can_type_wrong_is_one_line_and_writes_nothing(
        junk: Path, args: list[str], says: str) -> None:
    before = tree(junk)
    line = one_line_error(catalyst(junk, *args, timeout=30))
    assert says in line
    assert tree(junk) == before


def test_live_mode_from_the_environment_without_keys_is_refused(tmp_path: Path) -> None:
    r = catalyst(tmp_path, "run", env=clean_env(TRADING_MODE="live"), timeout=30)
    assert "broker.mode: live" in one_line_error(r)
    assert tree(tmp_path) == set()


def test_a_metrics_port_in_use_is_refused_before_the_run_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = catalyst(tmp_path, "run", "--metrics-port", str(port), timeout=30)
    assert f"--metrics-port {port}" in one_line_error(r)
    assert tree(tmp_path) == set()


@pytest.mark.parametrize("args", [["config", "check"], ["status"], ["replay"]], ids=" ".join)
def test_a_nats_url_that_is_not_a_url_is_caught_by_config_check(tmp_path: Path,
                                                                 args: list[str]) -> None:
    r = catalyst(tmp_path, *args, env=clean_env(CATALYST_NATS_URL="localhost 4222"),
                 timeout=30)
    assert "CATALYST_NATS_URL" in one_line_error(r)


def test_an_unreachable_server_is_one_line_not_a_page_of_retries(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(CATALYST_NATS_URL=f"nats://127.0.0.1:{port}")
    r = catalyst(tmp_path, "resume", "--reason", "checked", env=env, timeout=60)
    assert "cannot reach the NATS server" in one_line_error(r)
    st = catalyst(tmp_path, "status", env=env, timeout=60)
    assert st.returncode == 1 and "WARNING" not in st.stderr, st.stderr
    assert "not reachable" in st.stdout and "no answer within" in st.stdout
    assert tree(tmp_path) == set()


# --- dates a run does not hold -------------------------------------------------------------


@pytest.mark.parametrize("args", [["replay"], ["replay", "--verify"], ["audit", "report"],
                                  ["replay", "--json"]], ids=" ".join)
def test_a_date_the_run_does_not_hold_names_the_dates_it_does(sim: Sim,
                                                             args: list[str]) -> None:
    r = catalyst(sim.cwd, *args, "--date", "2025-11-26", timeout=60)
    line = one_line_error(r)
    assert "2025-11-26" in line and sim.day in line
    assert r.stdout == ""


def test_a_subject_that_matches_nothing_on_a_held_date_is_not_an_error(sim: Sim) -> None:
    r = catalyst(sim.cwd, "replay", "--date", sim.day, "--subject", "catalyst.nothing.>",
                 timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


# --- the export's integrity ----------------------------------------------------------------


@pytest.fixture(scope="module")
def export(sim: Sim) -> Path:
    out = sim.cwd / "day.jsonl"
    r = catalyst(sim.cwd, "audit", "export", "--date", sim.day, "--out", str(out),
                 timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def test_the_export_header_names_its_run_count_and_digest(sim: Sim, export: Path) -> None:
    header = json.loads(export.read_text().splitlines()[0])
    assert header["run"] == sim.run_id
    assert header["lines"] == len(export.read_text().splitlines()) - 1
    assert len(header["digest"]) == 64
    v = catalyst(sim.cwd, "replay", "--file", str(export), "--verify", timeout=240)
    assert v.returncode == 0 and " 0 divergences" in v.stdout, v.stdout + v.stderr


def _tamper(export: Path, tmp_path: Path, how: str) -> Path:
    lines = export.read_text().splitlines()
    if how == "tail":
        lines = lines[:-40]
    elif how == "line":
        i = next(k for k in range(len(lines) // 2, len(lines))
                 if '"type":"BarReceived"' in lines[k])
        del lines[i]
    elif how == "edit":
        i = next(k for k in range(len(lines) // 2, len(lines))
                 if '"type":"BarReceived"' in lines[k])
        lines[i] = lines[i].replace('"volume":', '"volume":1', 1)
    out = tmp_path / f"{how}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize("how", ["tail", "line", "edit"])
def test_a_cut_or_edited_export_is_a_divergence(sim: Sim, export: Path, tmp_path: Path,
                                                how: str) -> None:
    bad = _tamper(export, tmp_path, how)
    v = catalyst(sim.cwd, "replay", "--file", str(bad), "--verify", timeout=240)
    assert v.returncode == 1, v.stdout + v.stderr
    assert "DIVERGENCE 1: tampered: export" in v.stdout
    i = catalyst(tmp_path, "audit", "import", str(bad), "--run", "copy", timeout=60)
    assert "digest" in one_line_error(i) or "lines" in one_line_error(i)
    assert not (tmp_path / "var").exists()


# --- var/ growth -------------------------------------------------------------------------


def _fake_run(cwd: Path, run_id: str) -> None:
    """A run's store as the embedded server lays it out (enough for listing and pruning)."""
    (cwd / "var/runs" / run_id / "nats/jetstream/$G/streams/CATALYST").mkdir(parents=True)
    (cwd / "var/runs" / run_id / "nats/jetstream/$G/streams/CATALYST/1.blk").write_bytes(
        b"x" * 2048)


def test_runs_list_and_prune_bound_var(tmp_path: Path) -> None:
    ids = [f"sim-2025010{d}T120000-000000" for d in range(1, 6)]
    for run_id in [*ids, "backtest-20250106T120000-000000", "import-audit"]:
        _fake_run(tmp_path, run_id)
    (tmp_path / "var/runs/latest").symlink_to("backtest-20250106T120000-000000")

    listed = catalyst(tmp_path, "runs", "list", "--json", timeout=30)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["run_id"] for r in rows][-1] == "backtest-20250106T120000-000000"
    assert {r["run_id"]: r["kind"] for r in rows}["import-audit"] == "other"
    assert next(r for r in rows if r["latest"])["run_id"].startswith("backtest-")
    table = catalyst(tmp_path, "runs", "list", timeout=30)
    assert "sim-20250101T120000-000000" in table.stdout and "(latest)" in table.stdout

    dry = catalyst(tmp_path, "runs", "prune", "--keep", "2", "--dry-run", timeout=30)
    assert dry.returncode == 0 and dry.stdout.count("would delete") == 4, dry.stdout
    assert len(list((tmp_path / "var/runs").iterdir())) == 8

    pruned = catalyst(tmp_path, "runs", "prune", "--keep", "2", timeout=30)
    assert pruned.returncode == 0, pruned.stderr
    left = sorted(p.name for p in (tmp_path / "var/runs").iterdir())
    assert left == ["backtest-20250106T120000-000000", "import-audit", "latest",
                    "sim-20250105T120000-000000"]

    aged = catalyst(tmp_path, "runs", "prune", "--older-than", "1", timeout=30)
    assert aged.returncode == 0 and "2 runs deleted" in aged.stdout, aged.stdout
    assert sorted(p.name for p in (tmp_path / "var/runs").iterdir()) == ["import-audit"]
    assert "say what to keep" in one_line_error(catalyst(tmp_path, "runs", "prune"))
    assert "--keep" in one_line_error(catalyst(tmp_path, "runs", "prune", "--keep", "-1"))


def test_ctrl_c_stops_a_run_with_its_summary_too(tmp_path: Path) -> None:
    p = _start_run(tmp_path)
    p.send_signal(signal.SIGINT)
    out, errs = p.communicate(timeout=60)
    assert p.returncode == 130, errs
    assert "Traceback" not in errs
    assert "interrupted (SIGINT)" in out and "events recorded" in out, out
    st = json.loads(catalyst(tmp_path, "status", "--json", timeout=60).stdout)
    assert st["session"]["state"] == "cut off"  # interrupted before its session ended
    v = catalyst(tmp_path, "replay", "--verify", timeout=240)
    assert v.returncode == 0 and " 0 divergences" in v.stdout, v.stdout + v.stderr
