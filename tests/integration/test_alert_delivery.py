"""Alerts leave the building: a real SMTP server (aiosmtpd), a Maildir, an HTTP webhook."""

from __future__ import annotations

import email
import email.policy
import importlib
import json
import logging
import mailbox
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from adapters.alerts.channels import (
    MailboxChannel,
    SmtpChannel,
    UnknownChannelError,
    WebhookChannel,
    channels_from_settings,
)
from adapters.alerts.delivery import AlertDelivery, AlertDeliveryError, send_test_alert
from adapters.alerts.examples import sample_alerts
from adapters.nats.embedded import free_port
from config.loader import redacted
from config.settings import Alerts, Recipients, Settings, Smtp, TradingConfig, Webhook
from domain.events import AlertFailed, AlertRaised, AlertSent
from domain.values import Severity

pytestmark = pytest.mark.integration

ROUTES = Recipients(
    critical=("oncall@example.com", "trader@example.com"),
    warning=("trader@example.com",),
    info=("journal@example.com",),
)
NOW = datetime(2025, 3, 14, 20, 0, tzinfo=UTC)


# --- a real SMTP server --------------------------------------------------------------------


@dataclass
class Inbox:
    """What the aiosmtpd handler received: one envelope per accepted message."""

    envelopes: list[Envelope] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: Any, session: Session, envelope: Envelope
    ) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(e.content, policy=email.policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]


def start_smtp(inbox: Inbox, port: int, **kwargs: Any) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller


def password_check(user: str, password: str):  # type: ignore[no-untyped-def]
    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)  # handled=False: server replies 535

    return authenticator


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = start_smtp(inbox, port)
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def settings(port: int = 25, *, channels: tuple[Any, ...] = ("smtp",), tmp: Path | None = None,
             **smtp: Any) -> Settings:
    alerts: dict[str, Any] = {
        "channels": channels,
        "recipients": ROUTES,
        "smtp": Smtp(host="127.0.0.1", port=port, security=smtp.pop("security", "none"),
                     from_addr="catalyst@example.com", timeout_seconds=5, **smtp),
    }
    if tmp is not None:
        alerts["mailbox_dir"] = tmp / "mail"
    return Settings(trading=TradingConfig(alerts=Alerts(**alerts)))


def delivery(cfg: Settings, **kwargs: Any) -> AlertDelivery:
    return AlertDelivery(cfg, clock=lambda: NOW, **kwargs)


def the_alert(severity: Severity = Severity.WARNING, alert_id: str = "a-1") -> AlertRaised:
    return sample_alerts()["daily_loss_warning"].model_copy(
        update={"severity": severity, "alert_id": alert_id}
    )


def parts(msg: EmailMessage) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("text/plain", "text/html"):
            found[ctype] = part.get_content()
        elif ctype == "image/png":
            found["image"] = (part["Content-ID"], part.get_content())
    return found


# --- every template, over SMTP -------------------------------------------------------------

EXPECTED = {  # kind -> text both the plain and the HTML part must contain
    "emergency_stop": ["catalyst resume --reason", "-$2,013.48", "TSLA", "-$2,028.50",
                       "NVDA closed (stop-loss)", "-$1,706.58"],
    "emergency_stop_failed": ["ConnectionResetError", "Positions still open"],
    "daily_loss_warning": ["-$1,506.63", "$2,000.00", "75%"],
    "session_started": ["autonomous", "paper", "AAPL, AMD, NVDA"],
    "trades_executed": ["NVDA", "$912.15", "Analyst upgrade", "$892.55"],
    "daily_summary": ["-$2,028.50", "25%", "+$187.50", "-$1,674.00"],
    "reconciliation_discrepancy": ["AMD", "40 shares long"],
    "handler_crash_looping": ["scanner", "KeyError"],
    "trading_resumed": ["cli:trader"],
    "test": ["catalyst alerts test"],
    "trade_closed": ["AAPL", "take-profit", "+$187.50", "$191.15"],
    "alert_channel_failed": ["STARTTLS not offered", "catalyst alerts deliver"],
}


async def test_every_template_arrives_at_the_severity_s_addresses(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    alerts = sample_alerts()
    assert set(alerts) == set(EXPECTED)
    sender = delivery(settings(port))
    # alert_channel_failed says smtp is broken; with no other channel it still goes there
    for alert in alerts.values():
        events = await sender.deliver(alert)
        assert [type(e) for e in events] == [AlertSent], events

    by_id = {m["Message-ID"]: (m, env) for m, env in zip(inbox.messages(), inbox.envelopes,
                                                          strict=True)}
    for kind, alert in alerts.items():
        msg, envelope = by_id[f"<{alert.alert_id}@catalyst>"]
        routed = getattr(ROUTES, alert.severity.lower())
        assert sorted(envelope.rcpt_tos) == sorted(routed), kind
        assert envelope.mail_from == "catalyst@example.com"
        assert msg["Subject"].startswith(f"[{alert.severity}] "), msg["Subject"]
        assert msg["X-Catalyst-Alert-Kind"] == kind
        body = parts(msg)
        for snippet in EXPECTED[kind]:
            assert snippet in body["text/plain"], (kind, snippet)
            assert snippet in body["text/html"].replace("&amp;", "&"), (kind, snippet)
        if kind == "daily_summary":
            cid, png = body["image"]
            assert png.startswith(b"\x89PNG")
            assert f'src="cid:{cid.strip("<>")}"' in body["text/html"]
        else:
            assert "image" not in body
    crit = by_id[f"<{alerts['emergency_stop'].alert_id}@catalyst>"][0]
    assert crit["Subject"] == "[CRITICAL] Emergency stop: trading halted"
    assert crit["X-Priority"] == "1"


# --- SMTP failures -------------------------------------------------------------------------


async def test_wrong_password_is_an_alert_failed_not_a_crash(tmp_path: Path) -> None:
    inbox, port = Inbox(), free_port()
    controller = start_smtp(
        inbox, port, authenticator=password_check("catalyst", "right"), auth_required=True,
        auth_require_tls=False,
    )
    try:
        cfg = settings(port, channels=("mailbox", "smtp"), tmp=tmp_path,
                       username="catalyst", password="wrong")
        events = await delivery(cfg).deliver(the_alert())
    finally:
        controller.stop()
    sent = [e for e in events if isinstance(e, AlertSent)]
    failed = [e for e in events if isinstance(e, AlertFailed)]
    assert [e.channel for e in sent] == ["mailbox"]  # the other channel still delivers
    assert len(failed) == 1 and failed[0].channel == "smtp"
    assert "authentication failed" in failed[0].reason and "535" in failed[0].reason
    assert failed[0].will_retry is False
    assert inbox.envelopes == []


async def test_smtp_down_fails_then_delivers_with_the_same_message_id() -> None:
    port = free_port()  # nothing listens yet
    sender = delivery(settings(port))
    alert = the_alert(Severity.CRITICAL, alert_id="stop-1")

    first = await sender.deliver(alert)
    assert len(first) == 1 and isinstance(first[0], AlertFailed)
    assert first[0].will_retry and first[0].attempt == 1
    assert sender.retry_delay(first) == 5.0

    inbox = Inbox()
    controller = start_smtp(inbox, port)
    try:
        second = await sender.deliver(alert)  # what the log's redelivery leads to
        third = await sender.deliver(alert)  # a duplicate redelivery: nothing to do
    finally:
        controller.stop()
    assert [type(e) for e in second] == [AlertSent] and third == []
    assert sender.retry_delay(second) is None
    assert second[0].message_id == "<stop-1@catalyst>"
    assert inbox.messages()[0]["Message-ID"] == "<stop-1@catalyst>"
    assert first[0].event_id != second[0].event_id


async def test_bad_and_refused_addresses_are_reported_and_the_rest_delivered(
    smtp_server: tuple[Inbox, int],
) -> None:
    inbox, port = smtp_server
    inbox.refuse.add("gone@example.com")
    cfg = settings(port).model_copy(deep=True)
    routes = Recipients(critical=("oncall@example.com", "not an address", "gone@example.com"))
    cfg = Settings(trading=TradingConfig(alerts=cfg.trading.alerts.model_copy(
        update={"recipients": routes})))
    events = await delivery(cfg).deliver(the_alert(Severity.CRITICAL))
    sent = [e for e in events if isinstance(e, AlertSent)]
    failed = {e.channel: e for e in events if isinstance(e, AlertFailed)}
    assert sent[0].recipients == ("oncall@example.com",)
    assert inbox.envelopes[0].rcpt_tos == ["oncall@example.com"]
    assert "'not an address'" in failed["recipients"].reason
    assert "gone@example.com" in failed["smtp"].reason and "550" in failed["smtp"].reason
    assert not any(e.will_retry for e in failed.values())


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_modes_with_authentication(
    security: str, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    inbox, port = Inbox(), free_port()
    tls_kwargs: dict[str, Any] = (
        {"tls_context": server_tls, "require_starttls": True} if security == "starttls"
        # aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH
        else {"ssl_context": server_tls, "auth_require_tls": False}
    )
    controller = start_smtp(
        inbox, port, authenticator=password_check("catalyst", "s3cret"), auth_required=True,
        **tls_kwargs,
    )
    try:
        cfg = settings(port, security=security, username="catalyst", password="s3cret")
        channel = SmtpChannel(cfg.trading.alerts.smtp, tls_context=client_tls)
        events = await delivery(cfg, channels=[channel]).deliver(the_alert())
        # Without trusting the certificate the same server is refused, and not retried.
        untrusted = await delivery(cfg, channels=[SmtpChannel(cfg.trading.alerts.smtp)]).deliver(
            the_alert(alert_id="a-2")
        )
    finally:
        controller.stop()
    assert [type(e) for e in events] == [AlertSent]
    assert len(inbox.envelopes) == 1
    assert isinstance(untrusted[0], AlertFailed) and not untrusted[0].will_retry
    assert "certificate" in untrusted[0].reason


# --- mailbox -------------------------------------------------------------------------------


async def test_mailbox_delivery_is_a_maildir_and_a_resend_is_recognised(tmp_path: Path) -> None:
    cfg = settings(channels=("mailbox",), tmp=tmp_path)
    alert = sample_alerts()["daily_summary"]
    events = await delivery(cfg).deliver(alert)
    again = await delivery(cfg).deliver(alert)  # a fresh process, no memory of the first
    assert [type(e) for e in events] == [AlertSent]
    assert [type(e) for e in again] == [AlertSent]

    box = mailbox.Maildir(tmp_path / "mail", create=False)
    stored = [box.get_message(k) for k in box.keys()]
    assert len(stored) == 1
    msg = email.message_from_bytes(bytes(stored[0]), policy=email.policy.default)
    assert msg["Message-ID"] == f"<{alert.alert_id}@catalyst>"
    assert msg["To"] == "journal@example.com"
    assert "image" in parts(msg)  # type: ignore[arg-type]


async def test_a_redelivery_goes_only_to_channels_that_have_not_taken_it(
    tmp_path: Path,
) -> None:
    cfg = settings(free_port(), channels=("mailbox", "smtp"), tmp=tmp_path)
    alert = the_alert()
    first = await delivery(cfg).deliver(alert)
    assert {(type(e).__name__, e.channel) for e in first} == {
        ("AlertSent", "mailbox"), ("AlertFailed", "smtp"),
    }
    restarted = delivery(cfg)
    for ev in first:  # rebuilt from the log
        restarted.evolve(ev)
    second = await restarted.deliver(alert)
    assert [(type(e).__name__, e.channel, e.attempt) for e in second] == [
        ("AlertFailed", "smtp", 2)
    ]


# --- webhook -------------------------------------------------------------------------------


@pytest.fixture
async def webhook_server() -> Any:
    received: list[tuple[dict[str, Any], str]] = []
    status = {"code": 200}

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.json(), request.headers.get("Idempotency-Key", "")))
        return web.Response(status=status["code"], text="ok" if status["code"] < 300 else "no")

    async def echo(request: web.Request) -> web.Response:  # a server that echoes the path
        received.append((await request.json(), request.headers.get("Idempotency-Key", "")))
        return web.Response(status=status["code"], text=f"unknown hook {request.path_qs}")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/services/{rest:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/hook", received, status
    await runner.cleanup()


async def test_webhook_posts_the_alert_as_json(webhook_server: Any) -> None:
    url, received, status = webhook_server
    cfg = Settings(trading=TradingConfig(alerts=Alerts(
        channels=("webhook",), webhook=Webhook(url=url, min_severity="WARNING"))))
    sender = delivery(cfg)
    alert = sample_alerts()["emergency_stop"]
    events = await sender.deliver(alert)
    assert [type(e) for e in events] == [AlertSent]
    assert events[0].recipients == (url.removesuffix("/hook") + "/...",)  # no path: no token
    body, key = received[0]
    assert key == alert.alert_id
    assert (body["alert_id"], body["kind"], body["severity"]) == (
        alert.alert_id, "emergency_stop", "CRITICAL",
    )
    assert body["subject"] == "[CRITICAL] Emergency stop: trading halted"
    assert body["context"]["realized_pnl_after"] == "-2028.50"

    assert await sender.deliver(sample_alerts()["session_started"]) == []  # below WARNING
    status["code"] = 503
    failed = await sender.deliver(the_alert(alert_id="w-1"))
    assert isinstance(failed[0], AlertFailed) and failed[0].will_retry
    status["code"] = 400
    failed = await sender.deliver(the_alert(alert_id="w-2"))
    assert isinstance(failed[0], AlertFailed) and not failed[0].will_retry
    assert len(received) == 3


async def test_the_webhook_url_token_stays_out_of_the_log_and_the_config(
    webhook_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack/Discord URLs carry the token: AlertSent (a permanent log), AlertFailed, the
    redacted config (`config check`, RunStarted) and the log lines get scheme + host only."""
    url, received, status = webhook_server
    token = "T0000/B0000/XXXXsecretXXXXtoken"
    secret_url = url.replace("/hook", f"/services/{token}?key=k3y")
    cfg = Settings(trading=TradingConfig(alerts=Alerts(
        channels=("webhook",), webhook=Webhook(url=secret_url))))
    sender = delivery(cfg)

    caplog.set_level(logging.DEBUG)
    [sent] = await sender.deliver(the_alert(alert_id="t-1"))
    assert isinstance(sent, AlertSent) and len(received) == 1  # the real URL was used
    assert sent.recipients == (url.removesuffix("/hook") + "/...",)
    status["code"] = 404  # the body echoes the path back
    [failed] = await sender.deliver(the_alert(alert_id="t-2"))
    assert isinstance(failed, AlertFailed) and failed.reason.startswith("HTTP 404")

    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    shown = [sent.model_dump_json(), failed.model_dump_json(), ours,
             json.dumps(redacted(cfg)), repr(cfg), str(cfg.trading.alerts.webhook)]
    for text in shown:
        assert token not in text and "k3y" not in text and "XXXXsecret" not in text, text
    assert redacted(cfg)["trading"]["alerts"]["webhook"]["url"] == sent.recipients[0]


# --- plug-ins and the CLI's test alert -----------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


async def test_the_documented_plugin_channel_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example in docs/alerts.md, installed as a real entry point (a dist-info)."""
    code = re.search(r"```python\n(# catalyst_jsonl_channel\.py.*?)```", DOCS.read_text(),
                     re.S)
    assert code, "docs/alerts.md lost its plug-in example"
    (tmp_path / "catalyst_jsonl_channel.py").write_text(code.group(1))
    dist = tmp_path / "catalyst_jsonl_channel-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: catalyst-jsonl-channel\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[catalyst.alert_channels]\njsonl = catalyst_jsonl_channel:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    out = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("CATALYST_JSONL_ALERTS", str(out))

    cfg = Settings(trading=TradingConfig(alerts=Alerts(channels=(), extra_channels=("jsonl",))))
    events = await delivery(cfg).deliver(the_alert())
    assert [(type(e).__name__, e.channel) for e in events] == [("AlertSent", "jsonl")]
    line = json.loads(out.read_text().splitlines()[0])
    assert line["alert_id"] == "a-1" and line["subject"].startswith("[WARNING]")
    sys.modules.pop("catalyst_jsonl_channel", None)

    with pytest.raises(UnknownChannelError, match="not installed"):
        channels_from_settings(Settings(trading=TradingConfig(alerts=Alerts(
            extra_channels=("pager",)))))


async def test_send_test_alert_reports_each_channel(tmp_path: Path) -> None:
    report = await send_test_alert(settings(channels=("mailbox",), tmp=tmp_path), "critical")
    assert report.startswith("mailbox: sent to oncall@example.com, trader@example.com")
    assert len(list((tmp_path / "mail" / "new").iterdir())) == 1
    with pytest.raises(AlertDeliveryError, match="smtp: FAILED"):
        await send_test_alert(settings(free_port()), Severity.INFO)


def test_builtin_channels_follow_the_settings(tmp_path: Path) -> None:
    cfg = Settings(trading=TradingConfig(alerts=Alerts(
        channels=("mailbox", "smtp", "webhook"), webhook=Webhook(url="http://x/"),
        mailbox_dir=tmp_path)))
    assert [type(c) for c in channels_from_settings(cfg)] == [
        MailboxChannel, SmtpChannel, WebhookChannel,
    ]
