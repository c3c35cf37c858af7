"""The delivery ledger: what each channel still owes, folded from the whole log."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from adapters.alerts.channels import MailboxChannel, WebhookChannel
from adapters.alerts.pending import DeliveryLedger
from config.settings import Webhook
from domain.events import AlertFailed, AlertRaised, AlertSent, Event
from domain.values import Severity, derive_id

T = datetime(2025, 3, 14, 15, 0, tzinfo=UTC)


def raised(alert_id: str, severity: Severity = Severity.WARNING, **ctx: object) -> AlertRaised:
    return AlertRaised(event_id=derive_id(UUID(int=1), alert_id), type="AlertRaised",
                       occurred_at=T, correlation_id="t", alert_id=alert_id, kind="k",
                       severity=severity, title=alert_id, context=dict(ctx))


def sent(a: AlertRaised, channel: str) -> AlertSent:
    return AlertSent.caused_by(a, 0, f"d:{channel}", alert_id=a.alert_id, kind=a.kind,
                               severity=a.severity, channel=channel, recipients=("x@y",),
                               subject_line="s", message_id=f"<{a.alert_id}@catalyst>")


def failed(a: AlertRaised, channel: str, attempt: int, retry: bool = True) -> AlertFailed:
    return AlertFailed.caused_by(a, attempt, f"d:{channel}:failed", alert_id=a.alert_id,
                                 kind=a.kind, severity=a.severity, channel=channel,
                                 reason=f"boom {attempt}", attempt=attempt, will_retry=retry)


def channels(tmp: Path) -> list:  # type: ignore[type-arg]
    return [MailboxChannel(tmp), WebhookChannel(Webhook(url="http://h/x",
                                                        min_severity="WARNING"))]


def test_pending_per_channel_from_the_whole_log(tmp_path: Path) -> None:
    a, b, c, d = raised("a"), raised("b"), raised("c"), raised("d", Severity.INFO)
    log: list[Event] = [
        a, sent(a, "mailbox"), failed(a, "smtp", 1), failed(a, "smtp", 2),  # smtp owes a
        b, failed(b, "smtp", 1), sent(b, "smtp"),  # delivered on the retry
        c,  # decided, then the process died: every channel that takes it owes it
        d,  # INFO, no outcome: the webhook (WARNING and up) does not owe it
        failed(b, "recipients", 0, retry=False),  # malformed address: not a channel
    ]
    pending = DeliveryLedger().observe_all(log).pending(channels(tmp_path))
    got = {p.alert.alert_id: (p.channels, p.attempts, p.last_error) for p in pending}
    assert got == {
        "a": (("smtp",), 2, "boom 2"),
        "c": (("mailbox", "webhook"), 0, ""),
        "d": (("mailbox",), 0, ""),
    }


def test_an_alert_about_a_broken_channel_is_not_owed_by_that_channel(tmp_path: Path) -> None:
    ops = raised("ops", Severity.CRITICAL, exclude_channels=["webhook"])
    [p] = DeliveryLedger().observe_all([ops]).pending(channels(tmp_path))
    assert p.channels == ("mailbox",)


def test_with_no_other_channel_the_broken_one_still_owes_the_operations_alert(
    tmp_path: Path,
) -> None:
    """Excluding the only channel would be silence; trying it records a failure instead."""
    ops = raised("ops", Severity.CRITICAL, exclude_channels=["mailbox"])
    [p] = DeliveryLedger().observe_all([ops]).pending([MailboxChannel(tmp_path)])
    assert p.channels == ("mailbox",)


def test_retry_backoff_doubles_from_five_seconds_up_to_the_cap() -> None:
    from adapters.alerts.delivery import backoff

    assert [backoff(n, 300) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff(10_000, 300) == 300  # no overflow on a long outage
