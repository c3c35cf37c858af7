"""SMTP misconfiguration is loud and not retried forever: a real SMTP server (aiosmtpd)
without STARTTLS, without AUTH, or refusing the password. Each is a configuration error
(`will_retry` false) naming what to fix; the mailbox still takes the alert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.alerts.delivery import AlertDeliveryError, send_test_alert
from config.settings import Alerts, Settings, Smtp, TradingConfig
from domain.events import AlertFailed, AlertSent
from tests.integration.test_alert_delivery import (
    ROUTES,
    Inbox,
    delivery,
    free_port,
    password_check,
    start_smtp,
    the_alert,
)

pytestmark = pytest.mark.integration


def cfg(port: int, tmp: Path, **smtp: Any) -> Settings:
    return Settings(trading=TradingConfig(alerts=Alerts(
        channels=("mailbox", "smtp"), recipients=ROUTES, mailbox_dir=tmp / "mail",
        smtp=Smtp(host="127.0.0.1", port=port, from_addr="catalyst@example.com",
                  timeout_seconds=5, **smtp))))


@pytest.fixture
def plain_server() -> Any:
    """No STARTTLS, no AUTH: a bare relay on the local network."""
    inbox, port = Inbox(), free_port()
    controller = start_smtp(inbox, port)
    yield inbox, port
    controller.stop()


def by_channel(events: list[Any]) -> dict[str, Any]:
    return {e.channel: e for e in events}


async def test_credentials_require_starttls_and_a_server_without_it_is_a_config_error(
    plain_server: Any, tmp_path: Path,
) -> None:
    inbox, port = plain_server
    events = await delivery(cfg(port, tmp_path, username="bot", password="pw")).deliver(
        the_alert())
    got = by_channel(events)
    assert isinstance(got["mailbox"], AlertSent)  # the copy that is kept
    failed = got["smtp"]
    assert isinstance(failed, AlertFailed) and failed.will_retry is False
    assert failed.reason.startswith("configuration error: STARTTLS not offered")
    assert "credentials" in failed.reason and "pw" not in failed.reason
    assert inbox.envelopes == []  # the password never crossed in clear


async def test_without_credentials_starttls_is_opportunistic(
    plain_server: Any, tmp_path: Path,
) -> None:
    inbox, port = plain_server
    events = await delivery(cfg(port, tmp_path)).deliver(the_alert())
    assert {type(e).__name__ for e in events} == {"AlertSent"}
    assert len(inbox.envelopes) == 1


async def test_starttls_asked_for_explicitly_is_required(
    plain_server: Any, tmp_path: Path,
) -> None:
    _, port = plain_server
    events = await delivery(cfg(port, tmp_path, security="starttls")).deliver(the_alert())
    failed = by_channel(events)["smtp"]
    assert isinstance(failed, AlertFailed) and not failed.will_retry
    assert "STARTTLS not offered" in failed.reason


async def test_auth_not_supported_is_a_config_error(
    plain_server: Any, tmp_path: Path,
) -> None:
    inbox, port = plain_server
    events = await delivery(cfg(port, tmp_path, security="none", username="bot",
                                password="pw")).deliver(the_alert())
    failed = by_channel(events)["smtp"]
    assert isinstance(failed, AlertFailed) and not failed.will_retry
    assert failed.reason.startswith("configuration error: AUTH not supported")
    assert inbox.envelopes == []


async def test_refused_authentication_is_a_config_error(tmp_path: Path) -> None:
    inbox, port = Inbox(), free_port()
    controller = start_smtp(inbox, port, authenticator=password_check("bot", "right"),
                            auth_required=True, auth_require_tls=False)
    try:
        events = await delivery(cfg(port, tmp_path, security="none", username="bot",
                                    password="wrong")).deliver(the_alert())
    finally:
        controller.stop()
    failed = by_channel(events)["smtp"]
    assert isinstance(failed, AlertFailed) and not failed.will_retry
    assert failed.reason.startswith("configuration error: authentication failed: 535")
    assert "wrong" not in failed.reason


async def test_alerts_test_fails_when_any_channel_fails_and_says_which(
    plain_server: Any, tmp_path: Path,
) -> None:
    """The mailbox took it, SMTP did not: that is a failed test, not a pass."""
    _, port = plain_server
    with pytest.raises(AlertDeliveryError) as err:
        await send_test_alert(cfg(port, tmp_path, security="starttls"), "CRITICAL")
    text = str(err.value)
    assert "mailbox: sent to" in text
    assert "smtp: FAILED: configuration error: STARTTLS not offered" in text
    assert "1 of 2 channels failed: smtp" in text


async def test_a_channel_failing_for_good_raises_a_critical_through_the_mailbox(
    plain_server: Any, tmp_path: Path,
) -> None:
    """In a running pipeline: SMTP needs STARTTLS (credentials set) and the server has
    none. Not retried; one CRITICAL operations alert goes to the mailbox (not to SMTP), and
    every alert stays pending on smtp for `catalyst alerts deliver`."""
    import email
    import email.policy
    from datetime import timedelta

    from adapters.alerts.pending import DeliveryLedger
    from adapters.runtime.composition import AlertEffect
    from adapters.runtime.config_watcher import SettingsHolder
    from adapters.runtime.pipeline import Pipeline
    from domain.events import DailyLossWarningIssued, Event, TradingResumed
    from handlers.alerter import Alerter
    from tests.builders import T0, make

    inbox, port = plain_server
    settings = cfg(port, tmp_path, username="bot", password="pw")
    delivery_ = delivery(settings)
    recorded: list[Event] = []
    pipeline = Pipeline(SettingsHolder(settings), [Alerter()], [AlertEffect(delivery_)],
                        observers=[recorded.append])
    await pipeline.submit(make(DailyLossWarningIssued, "w", T0, session_date=T0.date(),
                               pnl="-1500", limit="2000", pct_used=0.75, open_positions=1))
    await pipeline.submit(make(TradingResumed, "r", T0 + timedelta(minutes=1),
                               resumed_by="ops", reason="checked"))
    assert inbox.envelopes == []
    failed = [e for e in recorded if isinstance(e, AlertFailed)]
    assert failed and not any(e.will_retry for e in failed)
    ops = [e for e in recorded if e.type == "AlertRaised" and e.kind == "alert_channel_failed"]
    assert len(ops) == 1 and ops[0].severity == "CRITICAL"
    sent = [(e.alert_id, e.channel) for e in recorded if isinstance(e, AlertSent)]
    assert (ops[0].alert_id, "mailbox") in sent and (ops[0].alert_id, "smtp") not in sent
    stored = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
              for p in (tmp_path / "mail" / "new").iterdir()]
    crit = [m for m in stored if m["X-Catalyst-Alert-Kind"] == "alert_channel_failed"]
    assert len(crit) == 1 and "STARTTLS not offered" in crit[0].get_body(("plain",)).get_content()
    ledger = DeliveryLedger().observe_all(recorded)
    pending = ledger.pending(delivery_.channels)
    assert sorted(p.alert.kind for p in pending) == ["daily_loss_warning", "trading_resumed"]
    assert all(p.channels == ("smtp",) for p in pending)
