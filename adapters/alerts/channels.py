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

from config.loader import ConfigError
from domain.events import AlertRaised
from domain.values import Severity

if TYPE_CHECKING:
    from config.settings import Settings, Smtp, Webhook

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "catalyst.alert_channels"
CONFIG_ERROR = "configuration error"  # how a reason says a failure will not pass by itself
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
    """SMTP via aiosmtplib. `smtp.security`: starttls (required), tls (implicit), none; unset:
    STARTTLS required when credentials are set (a password never crosses in clear), else
    opportunistic (upgrade when the server offers it).

    Failures that will not pass by themselves (no STARTTLS, no AUTH, credentials refused,
    recipients refused, untrusted certificate) are "configuration error"s, not retried."""

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
        mode = cfg.effective_security
        try:
            refused, response = await aiosmtplib.send(
                message,
                sender=cfg.from_addr,
                recipients=list(recipients),
                hostname=cfg.host,
                port=cfg.port,
                username=cfg.username,
                password=cfg.password.get_secret_value() if cfg.password else None,
                use_tls=mode == "tls",
                # None: aiosmtplib upgrades when the server offers STARTTLS, else stays plain
                start_tls={"starttls": True, "none": False}.get(mode),
                timeout=cfg.timeout_seconds,
                tls_context=self.tls_context,
            )
        except aiosmtplib.SMTPAuthenticationError as e:
            return self._config_error(f"authentication failed: {e.code} {e.message}")
        except aiosmtplib.SMTPRecipientsRefused as e:
            why = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in e.recipients)
            if _transient_all(e):
                return self._failed(f"all recipients refused: {why}", True)
            return self._config_error(f"all recipients refused: {why}")
        except aiosmtplib.SMTPSenderRefused as e:
            return self._failed(f"sender {e.sender} refused: {e.code} {e.message}", e.code < 500)
        except ssl.SSLCertVerificationError as e:
            return self._config_error(f"TLS certificate not trusted: {e}")
        except aiosmtplib.SMTPNotSupported as e:
            return self._config_error(f"server does not support it: {e}")
        except aiosmtplib.SMTPResponseException as e:
            # 4xx is the server saying "later"; 5xx is final.
            return self._failed(f"{e.code} {e.message}", e.code < 500)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            if _caused_by(e, ssl.SSLCertVerificationError):
                return self._config_error(f"TLS certificate not trusted: {e}")
            text = str(e)
            where = f"{cfg.host}:{cfg.port}"
            if "STARTTLS extension not supported" in text:
                return self._config_error(
                    f"STARTTLS not offered by {where} (security: {mode}"
                    f"{', required because credentials are set' if cfg.security is None else ''}"
                    "); use a server that offers it, or set SMTP_SECURITY")
            if "AUTH extension is not supported" in text:
                return self._config_error(
                    f"AUTH not supported by {where} (security: {mode}) but a username is "
                    "set; remove the credentials, or use TLS if it offers AUTH only there")
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

    def _config_error(self, reason: str) -> DeliveryResult:
        # Retrying would fail the same way every time until someone changes the settings.
        return self._failed(f"{CONFIG_ERROR}: {reason}", False)


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


class UnknownChannelError(ConfigError):
    """A channel named in the config that cannot be built: one clear line (the CLI prints
    CatalystErrors as such), at `config check` and at start-up alike."""

    def __init__(self, message: str, field: str = "alerts.extra_channels") -> None:
        super().__init__(message, field=field)


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
                raise UnknownChannelError("'webhook' is listed but alerts.webhook.url is not set",
                                          field="alerts.channels")
            built.append(WebhookChannel(alerts.webhook))
    extra = alerts.extra_channels
    if extra:
        plugins = _plugin_factories_or_error(extra)
        for name in extra:
            if name not in plugins:
                known = ", ".join(sorted(plugins)) or "none installed"
                builtin = " (a built-in: list it in alerts.channels)" if name in _BUILTIN else ""
                raise UnknownChannelError(
                    f"alert channel {name!r} is not installed{builtin}; installed plug-ins "
                    f"(entry point group {ENTRY_POINT_GROUP}): {known}"
                )
            try:
                channel = plugins[name](settings)
            except Exception as e:  # noqa: BLE001 - a plug-in's bug, said in one line
                raise UnknownChannelError(
                    f"alert channel {name!r} failed to start: {type(e).__name__}: {e}"
                ) from None
            if not isinstance(channel, Channel):
                raise UnknownChannelError(f"{name!r} factory did not return a Channel")
            built.append(channel)
    names = [c.name for c in built]
    if len(set(names)) != len(names):
        raise UnknownChannelError(f"alert channels named twice: {', '.join(names)}")
    return built


_BUILTIN = ("mailbox", "smtp", "webhook")


def _plugin_factories_or_error(wanted: tuple[str, ...]) -> dict[str, ChannelFactory]:
    try:
        return plugin_factories()
    except Exception as e:  # noqa: BLE001 - an entry point that does not import
        raise UnknownChannelError(
            f"loading alert channel plug-ins for {', '.join(wanted)} failed: "
            f"{type(e).__name__}: {e}"
        ) from None
