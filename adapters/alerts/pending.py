"""What the log says is still owed: alerts a channel has not taken, and delivering them.

The log is the delivery ledger. An alert is pending on a channel when the channel recorded
an `AlertFailed` for it and no `AlertSent` (a failure that may pass, or a configuration
error since fixed), or when nothing at all was recorded for it (the process died between
deciding and delivering). The whole log is read, never up to a consumer's ack floor: a
channel that has delivered an alert never sends it again, whatever restarts happened.

    ledger = DeliveryLedger(); for ev in log: ledger.observe(ev)
    ledger.pending(channels)                       # [PendingAlert, ...]
    await deliver_pending(settings, log)           # `catalyst alerts deliver`

Delivering records `AlertSent` / `AlertFailed` in the same log, with the same Message-ID
(from the alert id), so a second `deliver` finds nothing to send. A failure that will not
pass by itself goes through the alerter, as in a running system, so the operations alert
(and `replay --verify`) see it the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from adapters.alerts.channels import Channel, WebhookChannel
from adapters.alerts.delivery import AlertDelivery
from domain.errors import CatalystError
from domain.events import AlertFailed, AlertRaised, AlertSent, Event
from domain.values import Severity

if TYPE_CHECKING:
    from rich.console import Console

    from adapters.nats.event_log import EventLog
    from config.settings import Settings

ALERT_SUBJECTS = ["catalyst.alert.raised", "catalyst.alert.sent", "catalyst.alert.failed"]
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
# Not a channel: malformed addresses in alerts.recipients are reported under this name and
# cannot be delivered by retrying.
_NOT_CHANNELS = frozenset({"recipients"})


@dataclass(frozen=True)
class PendingAlert:
    alert: AlertRaised
    channels: tuple[str, ...]  # the channels that have not taken it
    attempts: int = 0
    last_error: str = ""


@dataclass
class DeliveryLedger:
    """Per alert and channel, what happened: a pure fold over the alert events."""

    raised: dict[str, AlertRaised] = field(default_factory=dict)  # in log order
    sent: set[tuple[str, str]] = field(default_factory=set)
    failed: dict[tuple[str, str], AlertFailed] = field(default_factory=dict)  # the last one
    touched: set[str] = field(default_factory=set)  # alerts with any outcome recorded

    def observe(self, event: Event) -> None:
        if isinstance(event, AlertRaised):
            self.raised.setdefault(event.alert_id, event)
        elif isinstance(event, AlertSent):
            self.sent.add((event.alert_id, event.channel))
            self.touched.add(event.alert_id)
        elif isinstance(event, AlertFailed):
            self.failed[(event.alert_id, event.channel)] = event
            self.touched.add(event.alert_id)

    def observe_all(self, events: Iterable[Event]) -> DeliveryLedger:
        for ev in events:
            self.observe(ev)
        return self

    def pending(self, channels: Sequence[Channel]) -> list[PendingAlert]:
        """Alerts some channel still owes, oldest first. `channels`: those configured now,
        for alerts that no channel ever reported on."""
        by_alert: dict[str, list[AlertFailed]] = {}
        for (alert_id, channel), ev in self.failed.items():
            if channel not in _NOT_CHANNELS and (alert_id, channel) not in self.sent:
                by_alert.setdefault(alert_id, []).append(ev)
        out: list[PendingAlert] = []
        for alert_id, alert in self.raised.items():
            fails = by_alert.get(alert_id, [])
            if fails:
                names = tuple(sorted(f.channel for f in fails))
                last = max(fails, key=lambda f: f.attempt)
                out.append(PendingAlert(alert, names, max(f.attempt for f in fails),
                                        last.reason))
            elif alert_id not in self.touched:
                names = tuple(c.name for c in channels if takes(c, alert))
                if not names and alert.context.get("exclude_channels"):
                    names = tuple(c.name for c in channels)  # as AlertDelivery does
                if names:
                    out.append(PendingAlert(alert, names))
        return out


def takes(channel: Channel, alert: AlertRaised) -> bool:
    """Whether `channel` would take `alert` at all (the webhook has a minimum severity;
    the alert about a broken channel does not go to that channel)."""
    if channel.name in (alert.context.get("exclude_channels") or ()):
        return False
    if isinstance(channel, WebhookChannel):
        return _RANK[alert.severity] >= _RANK[Severity(channel.webhook.min_severity)]
    return True


async def read_alert_events(log: EventLog) -> list[Event]:
    return [stored.event async for stored in log.read(ALERT_SUBJECTS)]


async def pending_in_log(settings: Settings, log: EventLog) -> list[PendingAlert]:
    from adapters.alerts.channels import channels_from_settings

    ledger = DeliveryLedger().observe_all(await read_alert_events(log))
    return ledger.pending(channels_from_settings(settings))


@dataclass
class DeliveryReport:
    delivered: list[AlertSent] = field(default_factory=list)
    failed: list[AlertFailed] = field(default_factory=list)
    unconfigured: list[tuple[str, str]] = field(default_factory=list)  # (alert_id, channel)
    raised: list[AlertRaised] = field(default_factory=list)  # operations alerts decided now

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unconfigured


async def deliver_pending(
    settings: Settings,
    log: EventLog,
    *,
    clock: Callable[[], datetime] | None = None,
    channels: Sequence[Channel] | None = None,
) -> DeliveryReport:
    """Deliver every pending alert once, on the channels that owe it; record the outcomes."""
    from handlers.alerter import Alerter

    # What the alerter follows, plus the deliveries: the whole log, never an ack floor.
    subjects = [*Alerter.subjects, "catalyst.alert.sent"]
    history = [stored.event async for stored in log.read(subjects)]
    ledger = DeliveryLedger().observe_all(history)
    delivery = AlertDelivery(settings, channels, clock=clock or (lambda: datetime.now(UTC)))
    for ev in history:
        delivery.evolve(ev)  # attempt numbers carry on; AlertFailed ids stay distinct
    # The alerter as the run left it, to decide on what this delivery records (a channel
    # failing for good), exactly as the running system's alerter would.
    alerter = Alerter()
    alerter.rebuild(history)

    report = DeliveryReport()
    configured = {c.name for c in delivery.channels}
    queue = list(ledger.pending(delivery.channels))
    while queue:
        item = queue.pop(0)
        missing = [c for c in item.channels if c not in configured]
        report.unconfigured += [(item.alert.alert_id, c) for c in missing]
        only = [c for c in item.channels if c in configured]
        if not only:
            continue
        events: list[Event] = list(await delivery.deliver(item.alert, only=only))
        decided: list[Event] = []
        for ev in events:
            if isinstance(ev, AlertSent):
                report.delivered.append(ev)
            elif isinstance(ev, AlertFailed):
                report.failed.append(ev)
            decided += alerter.handle(ev, settings)
        await log.publish_many([*events, *decided])
        for ev in decided:
            if isinstance(ev, AlertRaised):
                report.raised.append(ev)
                names = tuple(c.name for c in delivery.channels_for(ev) if takes(c, ev)) or tuple(
                    c.name for c in delivery.channels_for(ev))
                if names:
                    queue.append(PendingAlert(ev, names))
    return report


class AlertsUndeliveredError(CatalystError):
    """A run ends with a CRITICAL alert no channel delivered: it must not look like success."""


def deliver_command(run_id: str | None) -> str:
    return "catalyst alerts deliver" + (f" --run {run_id}" if run_id else "")


def pending_line(pending: Sequence[PendingAlert], run_id: str | None) -> str:
    """The run summary's line, in rich markup: red, with the command that fixes it."""
    crit = sum(1 for p in pending if p.alert.severity == Severity.CRITICAL)
    what = f" ({crit} CRITICAL)" if crit else ""
    channels = sorted({c for p in pending for c in p.channels})
    return (f"[bold red]{len(pending)} alerts pending delivery{what}[/] (not taken by "
            f"{', '.join(channels)}); deliver them with: [bold]{deliver_command(run_id)}[/]")


def check_pending(pending: Sequence[PendingAlert], console: Console, run_id: str | None) -> None:
    """Print the pending line; raise AlertsUndeliveredError when a CRITICAL is among them."""
    if not pending:
        return
    console.print(pending_line(pending, run_id))
    crit = sum(1 for p in pending if p.alert.severity == Severity.CRITICAL)
    if crit:
        raise AlertsUndeliveredError(
            f"{crit} CRITICAL alert(s) not delivered; {deliver_command(run_id)}")
