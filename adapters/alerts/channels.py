"""Where alerts go: a Channel sends one rendered alert and says how it went; it never raises.

Built-in: `mailbox` (a Maildir on disk, the default; works with no configuration), `smtp`
(aiosmtplib) and `webhook` (JSON over HTTP POST). Third-party channels register a factory
under the `catalyst.alert_channels` entry point group (see docs/alerts.md).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
import aiosmtplib

from domain.events import AlertRaised
from domain.values import Severity

if TYPE_CHECKING:
    from config.settings import Settings, Smtp, Webhook

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "catalyst.alert_channels"
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True)
class DeliveryResult:
    """What one channel did with one alert.

    ok        delivered (to `recipients`; `refused` lists addresses the server turned down)
    skipped   the channel does not take this alert (e.g. below the webhook's min severity)
    retryable a failure that may pass (server down, timeout): the caller retries later;
              not retryable (auth, bad address, 4xx): recorded and given up.
    """

    channel: str
    ok: bool
    recipients: tuple[str, ...] = ()
    reason: str = ""
    retryable: bool = False
    skipped: bool = False
    refused: tuple[tuple[str, str], ...] = ()  # (address, server's reason)
    detail: str = ""


@runtime_checkable
class Channel(Protocol):
    """A place alerts go. `payload` says what `send` receives:
    "email" -> the EmailMessage (To already routed by severity); "json" -> a dict."""

    name: str
    payload: Literal["email", "json"]

    async def send(
        self, alert: AlertRaised, message: EmailMessage | dict[str, Any]
    ) -> DeliveryResult: ...


def message_recipients(message: EmailMessage) -> tuple[str, ...]:
    return tuple(addr for _, addr in getaddresses(message.get_all("To", [])) if addr)


# --- mailbox -------------------------------------------------------------------------------


class MailboxChannel:
    """Delivers into a Maildir (new/ tmp/ cur/). One file per alert, named by alert_id, so a
    resend of an alert already in the box is recognised and not stored twice."""

    name = "mailbox"
    payload: Literal["email", "json"] = "email"

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path_for(self, alert: AlertRaised) -> Path:
        return self.directory / "new" / f"{alert.alert_id}.catalyst"

    async def send(
        self, alert: AlertRaised, message: EmailMessage | dict[str, Any]
    ) -> DeliveryResult:
        assert isinstance(message, EmailMessage)
        try:
            path = await asyncio.to_thread(self._write, alert, message)
        except OSError as e:
            # A full disk may clear; a permission error will not.
            retry = e.errno in (errno.ENOSPC, errno.EAGAIN, errno.EBUSY, errno.EIO)
            return DeliveryResult(self.name, False, reason=f"maildir: {e}", retryable=retry)
        return DeliveryResult(
            self.name, True, recipients=message_recipients(message), detail=str(path)
        )

    def _write(self, alert: AlertRaised, message: EmailMessage) -> Path:
        for sub in ("tmp", "new", "cur"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        final = self.path_for(alert)
        # A reader moves new/X to cur/X:2,flags once seen.
        if final.exists() or any((self.directory / "cur").glob(f"{final.name}*")):
            return final
        tmp = self.directory / "tmp" / f"{final.name}.{os.getpid()}.{socket.gethostname()}"
        with open(tmp, "wb") as fh:
            fh.write(bytes(message))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)  # atomic: a reader never sees half a message
        return final


# --- SMTP ----------------------------------------------------------------------------------


class SmtpChannel:
    """SMTP via aiosmtplib: STARTTLS (required, not opportunistic), implicit TLS or none."""

    name = "smtp"
    payload: Literal["email", "json"] = "email"

    def __init__(self, smtp: Smtp, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.smtp = smtp
        self.tls_context = tls_context  # None: the system's trust store

    async def send(
        self, alert: AlertRaised, message: EmailMessage | dict[str, Any]
    ) -> DeliveryResult:
        assert isinstance(message, EmailMessage)
        cfg = self.smtp
        recipients = message_recipients(message)
        if not cfg.host:
            return DeliveryResult(self.name, False, reason="smtp.host is not configured")
        if not recipients:
            return DeliveryResult(self.name, False, reason="no valid recipient address")
        try:
            refused, response = await aiosmtplib.send(
                message,
                sender=cfg.from_addr,
                recipients=list(recipients),
                hostname=cfg.host,
                port=cfg.port,
                username=cfg.username,
                password=cfg.password.get_secret_value() if cfg.password else None,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                timeout=cfg.timeout_seconds,
                tls_context=self.tls_context,
            )
        except aiosmtplib.SMTPAuthenticationError as e:
            return self._failed(f"authentication failed: {e.code} {e.message}", False)
        except aiosmtplib.SMTPRecipientsRefused as e:
            why = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            return self._failed(f"all recipients refused: {why}", _transient_all(e))
        except aiosmtplib.SMTPSenderRefused as e:
            return self._failed(f"sender {e.sender} refused: {e.code} {e.message}", e.code < 500)
        except ssl.SSLCertVerificationError as e:
            return self._failed(f"TLS certificate not trusted: {e}", False)
        except aiosmtplib.SMTPNotSupported as e:
            return self._failed(f"server does not support it: {e}", False)
        except aiosmtplib.SMTPResponseException as e:
            # 4xx is the server saying "later"; 5xx is final.
            return self._failed(f"{e.code} {e.message}", e.code < 500)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            if _caused_by(e, ssl.SSLCertVerificationError):
                return self._failed(f"TLS certificate not trusted: {e}", False)
            # connect refused, disconnect, timeout: the server may come back
            return self._failed(f"{type(e).__name__}: {e}", True)
        accepted = tuple(r for r in recipients if r not in refused)
        return DeliveryResult(
            self.name,
            ok=bool(accepted),
            recipients=accepted,
            refused=tuple((addr, f"{r.code} {r.message}") for addr, r in refused.items()),
            reason="" if accepted else "all recipients refused",
            detail=response,
        )

    def _failed(self, reason: str, retryable: bool) -> DeliveryResult:
        return DeliveryResult(self.name, False, reason=reason, retryable=retryable)


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """aiosmtplib wraps the ssl error in SMTPConnectError; look down the chain."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _transient_all(e: aiosmtplib.SMTPRecipientsRefused) -> bool:
    return all(400 <= r.code < 500 for r in e.recipients)


# --- webhook -------------------------------------------------------------------------------


class WebhookChannel:
    """POSTs the alert as JSON. The receiver can dedupe on `alert_id` (a retry resends it)."""

    name = "webhook"
    payload: Literal["email", "json"] = "json"

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook

    async def send(
        self, alert: AlertRaised, message: EmailMessage | dict[str, Any]
    ) -> DeliveryResult:
        assert isinstance(message, dict)
        if _SEVERITY_RANK[alert.severity] < _SEVERITY_RANK[Severity(self.webhook.min_severity)]:
            return DeliveryResult(self.name, True, skipped=True)
        timeout = aiohttp.ClientTimeout(total=self.webhook.timeout_seconds)
        headers = {"Idempotency-Key": alert.alert_id, "User-Agent": "catalyst-alerts"}
        url = self.webhook.url.get_secret_value()  # the token is in it: unwrapped only here
        shown = self.webhook.display_url  # what the log (permanent) and the reasons get
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                async with http.post(url, json=message, headers=headers) as resp:
                    body = _scrub((await resp.text())[:200], url, shown)
                    if resp.status < 300:
                        return DeliveryResult(self.name, True, recipients=(shown,), detail=body)
                    # 408/429/5xx: try later; other 4xx: our request is wrong, give up.
                    retry = resp.status >= 500 or resp.status in (408, 429)
                    return DeliveryResult(
                        self.name, False, reason=f"HTTP {resp.status}: {body}", retryable=retry
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            # Some aiohttp errors (InvalidURL, redirects) carry the full URL in their text.
            return DeliveryResult(
                self.name, False, reason=_scrub(f"{type(e).__name__}: {e}", url, shown),
                retryable=True,
            )


def _scrub(text: str, url: str, shown: str) -> str:
    """`text` without the webhook URL, or the path/query of it (where tokens live)."""
    secret = url.strip()
    if secret:
        text = text.replace(secret, shown)
        tail = urlsplit(secret)._replace(scheme="", netloc="").geturl()
        if len(tail) > 1:
            text = text.replace(tail, "/...")
    return text


# --- discovery -----------------------------------------------------------------------------

ChannelFactory = Callable[["Settings"], Channel]


def plugin_factories() -> dict[str, ChannelFactory]:
    """Third-party channels: entry point name -> factory(settings) -> Channel."""
    found: dict[str, ChannelFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


class UnknownChannelError(ValueError):
    pass


def channels_from_settings(settings: Settings) -> list[Channel]:
    """The channels `alerts.channels` (+ `alerts.extra_channels`, entry points) names."""
    alerts = settings.trading.alerts
    built: list[Channel] = []
    for name in alerts.channels:
        if name == "mailbox":
            built.append(MailboxChannel(alerts.mailbox_dir))
        elif name == "smtp":
            built.append(SmtpChannel(alerts.smtp))
        elif name == "webhook":
            if alerts.webhook is None:
                raise UnknownChannelError("alerts.channels has 'webhook' but no alerts.webhook.url")
            built.append(WebhookChannel(alerts.webhook))
    extra = alerts.extra_channels
    if extra:
        plugins = plugin_factories()
        for name in extra:
            if name not in plugins:
                known = ", ".join(sorted(plugins)) or "none installed"
                raise UnknownChannelError(
                    f"alert channel {name!r} is not installed "
                    f"(entry point group {ENTRY_POINT_GROUP}: {known})"
                )
            channel = plugins[name](settings)
            if not isinstance(channel, Channel):
                raise UnknownChannelError(f"{name!r} factory did not return a Channel")
            built.append(channel)
    return built
