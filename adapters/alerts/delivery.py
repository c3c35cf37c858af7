"""Deliver an AlertRaised on every configured channel; the outcome comes back as events.

    delivery = AlertDelivery(settings)              # channels from alerts.channels
    events = await delivery.deliver(alert)          # [AlertSent | AlertFailed, ...]
    delay = delivery.retry_delay(events)            # seconds, or None when nothing to retry
    # delay is not None -> publish `events`, then nak the AlertRaised message with `delay`:
    # the event log redelivers it, so the retry queue lives in the log, not in memory.

A redelivered alert goes only to the channels that have not taken it yet (state follows
AlertSent, rebuildable with `evolve`), and carries the same Message-ID. Nothing here raises
for a delivery problem: auth errors, refused or malformed addresses and crashing plug-ins
all become AlertFailed with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from adapters.alerts.channels import Channel, DeliveryResult, channels_from_settings
from adapters.alerts.render import (
    build_email,
    message_id_for,
    render_alert,
    webhook_payload,
)
from adapters.nats.event_log import log_context
from adapters.nats.retry import backoff_delay
from domain.events import AlertFailed, AlertRaised, AlertSent, Event
from domain.values import Severity

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)

HANDLER = "alert_delivery"
PLUGIN_TIMEOUT_SECONDS = 120.0  # built-in channels have their own, configured timeouts
_MEMORY = 10_000


def bare_address(address: str) -> str | None:
    """'trader@example.com' or 'Trader <trader@example.com>' -> the address; else None."""
    _, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in addr):
        return None
    if "<" not in address and addr != address.strip():
        return None  # parseaddr salvaged something out of junk
    return addr


def valid_address(address: str) -> bool:
    return bare_address(address) is not None


class AlertDeliveryError(RuntimeError):
    """A channel did not take the test alert (only `send_test_alert` raises it)."""


class AlertDelivery:
    def __init__(
        self,
        settings: Settings,
        channels: Sequence[Channel] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.channels = list(channels) if channels is not None else channels_from_settings(
            settings
        )
        self.clock = clock or (lambda: datetime.now(UTC))
        self._delivered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._attempts: OrderedDict[str, int] = OrderedDict()

    # --- state (rebuildable from the log) ---------------------------------------------------

    def evolve(self, event: Event) -> None:
        """Feed AlertSent / AlertFailed from the log on start: no resend to a channel that
        already took an alert, and attempt numbers carry on."""
        if isinstance(event, AlertSent):
            self._remember(self._delivered, (event.alert_id, event.channel), None)
        elif isinstance(event, AlertFailed):
            prev = self._attempts.get(event.alert_id, 0)
            self._remember(self._attempts, event.alert_id, max(prev, event.attempt))

    @staticmethod
    def _remember(store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        if len(store) > _MEMORY:
            store.popitem(last=False)

    # --- routing ---------------------------------------------------------------------------

    def channels_for(self, alert: AlertRaised) -> list[Channel]:
        """Every channel, less those the alert names in `exclude_channels` (the alert that
        says a channel is broken does not go to that channel)."""
        excluded = set(alert.context.get("exclude_channels") or ())
        rest = [c for c in self.channels if c.name not in excluded]
        # With no other channel, try the broken one anyway: a failure there is recorded
        # and stays pending, where nowhere at all would be silence.
        return rest or list(self.channels)

    def recipients_for(self, severity: Severity) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(valid, malformed) addresses from alerts.recipients.<severity>."""
        configured = getattr(self.settings.trading.alerts.recipients, severity.lower())
        parsed = [(a, bare_address(a)) for a in configured]
        valid = tuple(dict.fromkeys(addr for _, addr in parsed if addr))
        bad = tuple(a for a, addr in parsed if addr is None)
        return valid, bad

    # --- delivery --------------------------------------------------------------------------

    async def deliver(
        self, alert: AlertRaised, attempt: int | None = None,
        only: Collection[str] | None = None,
    ) -> list[AlertSent | AlertFailed]:
        """`only`: deliver on these channels alone (what the log says is still owed)."""
        if attempt is None:
            attempt = self._attempts.get(alert.alert_id, 0) + 1
        self._remember(self._attempts, alert.alert_id, attempt)
        pending = [c for c in self.channels_for(alert)
                   if (alert.alert_id, c.name) not in self._delivered
                   and (only is None or c.name in only)]
        if not pending:
            return []

        rendered = await asyncio.to_thread(render_alert, alert)
        to, malformed = self.recipients_for(alert.severity)
        email = build_email(
            alert, rendered, from_addr=self.settings.trading.alerts.smtp.from_addr, to=to
        )
        payload = webhook_payload(alert, rendered)

        results = await asyncio.gather(
            *(self._send(c, alert, email if c.payload == "email" else payload) for c in pending)
        )
        events: list[AlertSent | AlertFailed] = []
        now = self.clock()
        if malformed and any(c.payload == "email" for c in pending):
            events.append(self._failed(
                alert, "recipients", now, attempt, False,
                f"malformed address(es) in alerts.recipients.{alert.severity.lower()}: "
                + ", ".join(repr(a) for a in malformed),
                index=0,  # the same event id on every retry: the log keeps one
            ))
        for result in results:
            events += self._events_for(alert, result, rendered.subject, now, attempt)
        return events

    async def _send(
        self, channel: Channel, alert: AlertRaised, message: EmailMessage | dict[str, Any]
    ) -> DeliveryResult:
        try:
            return await asyncio.wait_for(channel.send(alert, message), PLUGIN_TIMEOUT_SECONDS)
        except TimeoutError:
            return DeliveryResult(channel.name, False, reason="channel timed out", retryable=True)
        except Exception as e:  # noqa: BLE001 - a broken plug-in must not take delivery down
            log.exception("alert channel %s raised", channel.name)
            return DeliveryResult(
                channel.name, False, reason=f"channel raised {type(e).__name__}: {e}",
                retryable=True,
            )

    def _events_for(
        self, alert: AlertRaised, result: DeliveryResult, subject: str, now: datetime,
        attempt: int,
    ) -> list[AlertSent | AlertFailed]:
        events: list[AlertSent | AlertFailed] = []
        if result.skipped:
            return events
        if result.ok:
            self._remember(self._delivered, (alert.alert_id, result.channel), None)
            log.info("alert %s (%s) sent via %s to %s", alert.alert_id, alert.kind,
                     result.channel, ", ".join(result.recipients),
                     extra=log_context(alert, "alert_delivery"))
            events.append(AlertSent.caused_by(
                alert, 0, f"{HANDLER}:{result.channel}", occurred_at=now,
                alert_id=alert.alert_id, kind=alert.kind, severity=alert.severity,
                channel=result.channel, recipients=result.recipients, subject_line=subject,
                message_id=message_id_for(alert),
            ))
            if result.refused:
                events.append(self._failed(
                    alert, result.channel, now, attempt, False,
                    "refused: " + "; ".join(f"{a}: {why}" for a, why in result.refused),
                ))
            return events
        events.append(self._failed(
            alert, result.channel, now, attempt, result.retryable, result.reason
        ))
        return events

    def _failed(
        self, alert: AlertRaised, channel: str, now: datetime, attempt: int, retry: bool,
        reason: str, *, index: int | None = None,
    ) -> AlertFailed:
        level = logging.ERROR if alert.severity == Severity.CRITICAL else logging.WARNING
        log.log(level, "alert %s (%s, %s) not delivered via %s (attempt %d, %s): %s",
                alert.alert_id, alert.kind, alert.severity, channel, attempt,
                "retryable, stays pending" if retry else "not retried, stays pending", reason)
        return AlertFailed.caused_by(
            alert, attempt if index is None else index, f"{HANDLER}:{channel}:failed",
            occurred_at=now,
            alert_id=alert.alert_id, kind=alert.kind, severity=alert.severity,
            channel=channel, reason=reason, attempt=attempt, will_retry=retry,
        )

    def retry_delay(self, events: Sequence[Event]) -> float | None:
        """Seconds to wait before redelivery, or None when no channel needs a retry.
        Exponential from 5 s, capped at alerts.retry_max_seconds (the one retry policy; the
        waiting itself is the log's: the message is nak'ed with this delay)."""
        retrying = [e for e in events if isinstance(e, AlertFailed) and e.will_retry]
        if not retrying:
            return None
        return backoff(max(e.attempt for e in retrying),
                       self.settings.trading.alerts.retry_max_seconds)


def backoff(attempt: int, cap: float) -> float:
    """The wait after failed attempt number `attempt`: 5 s, 10 s, 20 s... capped (the one
    retry policy's curve, adapters.nats.retry)."""
    return float(backoff_delay(max(1, min(attempt, 64)), 5.0, cap))


async def send_test_alert(settings: Settings, severity: Severity | str = Severity.INFO) -> str:
    """`catalyst alerts test`: one test alert on every configured channel. Returns a
    per-channel report; raises AlertDeliveryError (with the report) when any channel
    failed."""
    sev = Severity(str(severity).upper())
    now = datetime.now(UTC)
    alert = AlertRaised(
        event_id=uuid4(),
        type="AlertRaised",
        occurred_at=now,
        correlation_id="alerts-test",
        alert_id=f"test-{uuid4()}",
        kind="test",
        severity=sev,
        title=f"Test alert ({sev})",
        context={"occurred_at": now.isoformat()},
    )
    delivery = AlertDelivery(settings)
    if not delivery.channels:
        raise AlertDeliveryError("no alert channel configured (alerts.channels is empty)")
    events = await delivery.deliver(alert)
    lines = []
    for ev in events:
        if isinstance(ev, AlertSent):
            lines.append(f"{ev.channel}: sent to {', '.join(ev.recipients)} "
                         f"(Message-ID {ev.message_id})")
        else:
            lines.append(f"{ev.channel}: FAILED: {ev.reason}")
    if not settings.trading.alerts.enabled:
        lines.append("note: alerts.enabled is false, so real alerts are not sent")
    report = "\n".join(lines)
    if not any(isinstance(e, AlertSent) for e in events):
        raise AlertDeliveryError(report or "no channel took the test alert")
    failed = list(dict.fromkeys(e.channel for e in events if isinstance(e, AlertFailed)))
    if failed:
        # One channel working is not a pass: the one that failed is where alerts get lost.
        total = len(delivery.channels_for(alert))
        raise AlertDeliveryError(
            f"{report}\n{len(failed)} of {total} channels failed: {', '.join(failed)}")
    return report
