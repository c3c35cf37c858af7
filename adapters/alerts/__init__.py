"""Alert delivery: render (jinja2 + matplotlib), channels (maildir, SMTP, webhook, plug-ins),
and AlertDelivery, which turns an AlertRaised into AlertSent / AlertFailed events."""

from adapters.alerts.channels import (
    ENTRY_POINT_GROUP,
    Channel,
    DeliveryResult,
    MailboxChannel,
    SmtpChannel,
    WebhookChannel,
    channels_from_settings,
)
from adapters.alerts.delivery import AlertDelivery, AlertDeliveryError, send_test_alert
from adapters.alerts.render import RenderedAlert, build_email, message_id_for, render_alert

__all__ = [
    "ENTRY_POINT_GROUP",
    "AlertDelivery",
    "AlertDeliveryError",
    "Channel",
    "DeliveryResult",
    "MailboxChannel",
    "RenderedAlert",
    "SmtpChannel",
    "WebhookChannel",
    "build_email",
    "channels_from_settings",
    "message_id_for",
    "render_alert",
    "send_test_alert",
]
