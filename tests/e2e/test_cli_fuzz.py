"""Every command, with --help and with wrong and random arguments: never a traceback, never a
hang, a non-zero exit with one `error:` line on any error (issue 16).

The commands are found by walking the real command tree, so a command added later is fuzzed
too. They run in this process through `adapters.cli.main` (the console script's entry point)
in an empty scratch directory, with a per-call alarm: a subprocess per call would cost
seconds each on a loaded machine, and the whole test must stay well under a minute.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from adapters.cli import main as cli
from config.loader import ENV_MAP

pytestmark = pytest.mark.e2e

PER_CALL_SECONDS = 8  # generous: the slowest error path loads the bundled dataset
WRONG = ["", " ", "-1", "0", "-5", "nan", "inf", "abc", "2025-13-45", "2025-02-30T25:00",
         "typo-run", "../escape", "/nonexistent/dir/file", "9" * 30, "é✓", "--", "-",
         "latest", "catalyst.>", "a,b,,c"]


class Hang(BaseException):
    """Raised by the alarm: a BaseException so no `except Exception` swallows it."""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    escaped: BaseException | None = None


def leaf_commands() -> list[tuple[list[str], Any]]:
    root = typer.main.get_command(cli.app)
    out: list[tuple[list[str], Any]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(root, [])
    return out


@contextlib.contextmanager
def alarm(seconds: int) -> Iterator[None]:
    def ring(*_: Any) -> None:
        raise Hang(f"no answer in {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def call(args: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    argv, code, escaped = sys.argv, 0, None
    sys.argv = ["catalyst", *args]
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                alarm(PER_CALL_SECONDS):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - the point: nothing may escape main()
        escaped = e
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue(), time.monotonic() - t0, escaped)


def problems(args: list[str], o: Outcome, must_fail: bool) -> list[str]:
    label = "catalyst " + " ".join(repr(a) if not a or " " in a else a for a in args)
    found = []
    if o.escaped is not None:
        found.append(f"{label}: {type(o.escaped).__name__}: {o.escaped}")
    if "Traceback" in o.stderr + o.stdout:
        found.append(f"{label}: printed a traceback")
    errors = [line for line in o.stderr.splitlines() if line.startswith("error:")]
    if errors and o.code == 0:
        found.append(f"{label}: said {errors[0]!r} but exited 0")
    if o.code != 0 and o.escaped is None and "Usage:" not in o.stderr:
        lines = [line for line in o.stderr.splitlines() if line.strip()]
        if len(errors) != 1 or len(lines) != 1:
            found.append(f"{label}: exit {o.code} without exactly one error line: "
                         f"{o.stderr[-300:]!r}")
    if must_fail and o.code == 0:
        found.append(f"{label}: accepted wrong arguments (exit 0)")
    return found


def wrong_calls(path: list[str], cmd: Any, rng: random.Random) -> list[tuple[list[str], bool]]:
    """(args, must fail): the fixed mistakes, then random combinations of wrong values."""
    options = [p for p in cmd.params if p.param_type_name == "option" and p.name != "help"]
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    calls: list[tuple[list[str], bool]] = [
        ([*path, "--no-such-option"], True),
        ([*path, *["zzz-not-an-argument"] * (len(arguments) + 1)], True),
    ]
    for _ in range(6):
        args = list(path)
        # A wrong --config ends every command at once: rarely, so the rest is reached.
        chosen = [o for o in options
                  if o.required or rng.random() < (0.1 if o.name == "config_dir" else 0.5)]
        for o in chosen:
            name = o.opts[0] if not o.is_flag else rng.choice(o.opts + o.secondary_opts)
            args.append(name)
            if not o.is_flag:
                args.append(rng.choice(WRONG))
        args += [rng.choice(WRONG) for _ in arguments]
        if path == ["run"] and "--date" not in args:
            args += ["--date", rng.choice(WRONG)]  # never a whole simulation in a fuzz call
        calls.append((args, False))
    return calls


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var in ENV_MAP or (var.endswith("_FILE") and var[:-5] in ENV_MAP):
            monkeypatch.delenv(var)
    monkeypatch.setenv("COLUMNS", "100")
    return tmp_path


def test_every_command_has_help_without_type_noise_on_flags(scratch: Path) -> None:
    found = []
    for path, _cmd in leaf_commands():
        o = call([*path, "--help"])
        if o.code != 0 or "Usage: catalyst" not in o.stdout or o.escaped:
            found.append(f"{' '.join(path)} --help: exit {o.code} {o.stdout[:200]!r}")
        if "<bool>" in o.stdout:
            found.append(f"{' '.join(path)} --help shows <bool> on a flag")
    assert not found, "\n".join(found)


def test_every_command_with_wrong_and_random_arguments(scratch: Path) -> None:
    rng = random.Random(16)
    found: list[str] = []
    started = time.monotonic()
    calls = 0
    for path, cmd in leaf_commands():
        for args, must_fail in wrong_calls(path, cmd, rng):
            o = call(args)
            calls += 1
            found += problems(args, o, must_fail)
    assert calls > 50
    assert not found, "\n".join(found)
    assert time.monotonic() - started < 90
    # Nothing that reads left a store behind (writes happen only where a command writes).
    assert not (scratch / "var" / "nats").exists()


READERS = [["replay"], ["audit", "report"], ["audit", "export"], ["status"],
           ["events", "tail"]]


def test_reading_commands_on_a_real_log_with_mixed_right_and_wrong_arguments(
        scratch: Path) -> None:
    """Right values mixed with wrong ones reach further into the readers than an empty
    directory does: a one-day backtest's log is the store."""
    from datetime import date

    from tests.e2e.cli_support import catalyst
    from tests.e2e.test_backtest_cli import Tape

    day = date(2026, 3, 2)
    bars, signals = (Tape().symbol("AAA", day, "10.00")
                     .signal(day, "14:35", "AAA", "9.50", "11.00").write(scratch / "in"))
    assert signals is not None
    b = catalyst(scratch, "backtest", "--bars", str(bars), "--signals", str(signals),
                 "--report", "r.json", timeout=120)
    assert b.returncode == 0, b.stderr
    run_id = os.readlink(scratch / "var/runs/latest")
    export = scratch / "day.jsonl"
    e = catalyst(scratch, "audit", "export", "--date", day.isoformat(), "--out", str(export),
                 timeout=60)
    assert e.returncode == 0, e.stderr
    right = {  # values that make sense for each option, mixed below with wrong ones
        "day": [day.isoformat()], "start": [f"{day}T10:00", day.isoformat()],
        "end": [f"{day}T15:00", day.isoformat()], "run": [run_id, "latest"],
        "subject": ["catalyst.order.>", "catalyst.>"], "jobs": ["1", "2"],
        "fmt": ["json", "csv", "html"], "out": ["out.txt"], "file": [str(export)],
        "session": ["s-unknown"],
    }
    rng = random.Random(1616)
    found: list[str] = []
    started = time.monotonic()
    for path in READERS:
        cmd = next(c for p, c in leaf_commands() if p == path)
        options = [p for p in cmd.params if p.param_type_name == "option"
                   and p.name not in ("help", "config_dir")]
        for _ in range(6):
            args = list(path)
            for o in options:
                if not (o.required or rng.random() < 0.35):
                    continue
                args.append(o.opts[0] if not o.is_flag
                            else rng.choice(o.opts + o.secondary_opts))
                if not o.is_flag:
                    good = right.get(o.name or "")
                    args.append(rng.choice(good if good and rng.random() < 0.85 else WRONG))
            found += problems(args, call(args), must_fail=False)
    assert not found, "\n".join(found)
    assert time.monotonic() - started < 90
    assert not (scratch / "var" / "nats").exists()
