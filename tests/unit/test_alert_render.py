"""Rendering never loses an alert: subject, Message-ID, escaping, fallback template."""

from __future__ import annotations

from email.message import EmailMessage

from adapters.alerts.delivery import bare_address, valid_address
from adapters.alerts.examples import sample_alerts
from adapters.alerts.render import build_email, money, render_alert
from domain.events import AlertRaised
from domain.values import Severity


def alert(kind: str, context: dict, severity: Severity = Severity.CRITICAL) -> AlertRaised:
    base = sample_alerts()["emergency_stop"]
    return base.model_copy(update={"kind": kind, "context": context, "severity": severity})


def test_subject_starts_with_the_severity_and_message_id_follows_the_alert() -> None:
    a = sample_alerts()["emergency_stop"]
    rendered = render_alert(a)
    msg = build_email(a, rendered, from_addr="c@example.com", to=("t@example.com",))
    assert rendered.subject == "[CRITICAL] Emergency stop: trading halted"
    assert msg["Message-ID"] == f"<{a.alert_id}@catalyst>"
    assert isinstance(msg, EmailMessage) and msg.is_multipart()


def test_a_broken_or_unknown_template_falls_back_to_the_generic_one() -> None:
    missing_keys = render_alert(alert("emergency_stop", {"reason": "limit"}))
    unknown_kind = render_alert(alert("margin_call", {"equity": "1200.00"}))
    assert "reason: limit" in missing_keys.text
    assert "equity: 1200.00" in unknown_kind.text and "margin_call" in unknown_kind.html


def test_html_escapes_what_came_from_outside() -> None:
    rendered = render_alert(alert("handler_crash_looping", {
        "handler": "scanner", "failures": 3, "error": "<script>alert(1)</script>",
    }))
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text


def test_money_and_addresses() -> None:
    assert money("-2050") == "-$2,050.00"
    assert money("187.5", signed=True) == "+$187.50"
    assert money(None) == "—"
    assert valid_address("trader@example.com")
    assert not valid_address("not an address")
    assert bare_address("Trader <trader@example.com>") == "trader@example.com"
    assert not valid_address("@example.com")
    assert valid_address("trader@localhost")  # the default recipient
