"""`catalyst` and alerts, end to end: misconfiguration is one clear line, everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli_support import catalyst, write_config

pytestmark = pytest.mark.e2e


def test_a_misspelled_plugin_channel_fails_config_check_and_run_in_one_line(
    tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path / "cfg", trading={"alerts": {"extra_channels": ["jsonll"]}})
    check = catalyst(tmp_path, "config", "check", "--config", str(cfg))
    assert check.returncode == 1
    assert "alert channel 'jsonll' is not installed" in check.stderr
    assert "alerts.extra_channels" in check.stderr
    run = catalyst(tmp_path, "run", "--config", str(cfg))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr
    assert "alert channel 'jsonll' is not installed" in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 2, run.stderr


def _run_id(cwd: Path) -> str:
    return (cwd / "var" / "runs" / "latest").resolve().name


def test_smtp_down_during_a_run_then_deliver_sends_every_alert_exactly_once(
    tmp_path: Path,
) -> None:
    """SMTP is down for the whole simulated session: every alert stays pending in the log
    (and in the mailbox), the run says so and fails on the undelivered CRITICAL; once SMTP
    is back, `alerts deliver` sends each exactly once, and a second one sends nothing."""
    import email
    import email.policy
    import json
    from collections import Counter

    from tests.e2e.cli_support import clean_env
    from tests.integration.test_alert_delivery import Inbox, free_port, start_smtp

    port = free_port()  # nothing listens: SMTP is down
    env = clean_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none")
    run = catalyst(tmp_path, "run", env=env, timeout=180)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "CRITICAL alert(s) not delivered" in run.stderr
    assert "alerts pending delivery (1 CRITICAL)" in run.stdout
    assert "catalyst alerts deliver --run" in run.stdout
    run_id = _run_id(tmp_path)

    listed = catalyst(tmp_path, "alerts", "pending", "--run", run_id, "--json", env=env)
    pending = json.loads(listed.stdout)
    assert pending and all(p["channels"] == ["smtp"] for p in pending)
    assert any(p["severity"] == "CRITICAL" and p["kind"] == "emergency_stop" for p in pending)
    kept = list((tmp_path / "var" / "mail" / "new").iterdir())
    assert len(kept) == len(pending)  # the mailbox kept a copy of every one

    inbox = Inbox()
    controller = start_smtp(inbox, port)  # SMTP is back
    try:
        first = catalyst(tmp_path, "alerts", "deliver", "--run", run_id, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        second = catalyst(tmp_path, "alerts", "deliver", "--run", run_id, env=env)
        assert second.returncode == 0 and "nothing pending" in second.stdout
    finally:
        controller.stop()
    msgs = [email.message_from_bytes(e.content, policy=email.policy.default)  # type: ignore[arg-type]
            for e in inbox.envelopes]
    ids = Counter(m["Message-ID"] for m in msgs)
    assert ids == Counter({f"<{p['alert_id']}@catalyst>": 1 for p in pending})
    assert all("[SIMULATED]" in m["Subject"] for m in msgs)
    after = catalyst(tmp_path, "alerts", "pending", "--run", run_id, "--json", env=env)
    assert json.loads(after.stdout) == []
    verify = catalyst(tmp_path, "replay", "--run", run_id, "--verify", env=env, timeout=180)
    assert verify.returncode == 0 and " 0 divergences" in verify.stdout, verify.stdout


def test_misconfigured_smtp_is_loud_in_alerts_test_and_in_a_run(tmp_path: Path) -> None:
    """Credentials set, the server offers no STARTTLS: `alerts test` fails naming smtp even
    though the mailbox took it; a run records configuration errors (not retried), puts one
    CRITICAL about the channel in the mailbox, exits 1, and still replays exactly."""
    import email
    import email.policy

    from tests.e2e.cli_support import clean_env
    from tests.integration.test_alert_delivery import Inbox, free_port, start_smtp

    inbox, port = Inbox(), free_port()
    controller = start_smtp(inbox, port)
    env = clean_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_USERNAME="bot",
                    SMTP_PASSWORD="pw-123")
    try:
        test = catalyst(tmp_path, "alerts", "test", env=env)
        assert test.returncode == 1
        assert "mailbox: sent to" in test.stderr
        assert "smtp: FAILED: configuration error: STARTTLS not offered" in test.stderr
        assert "channels failed: smtp" in test.stderr
        run = catalyst(tmp_path, "run", env=env, timeout=180)
    finally:
        controller.stop()
    assert inbox.envelopes == []  # the password never went out in clear
    assert run.returncode == 1 and "pw-123" not in run.stdout + run.stderr
    box = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
           for p in (tmp_path / "var" / "mail" / "new").iterdir()]
    ops = [m for m in box if m["X-Catalyst-Alert-Kind"] == "alert_channel_failed"]
    assert len(ops) == 1
    assert ops[0]["Subject"] == "[CRITICAL] [SIMULATED] Alerts are not reaching you via smtp"
    verify = catalyst(tmp_path, "replay", "--run", _run_id(tmp_path), "--verify", env=env,
                      timeout=180)
    assert verify.returncode == 0 and " 0 divergences" in verify.stdout, verify.stdout
