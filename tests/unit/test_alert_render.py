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


def test_date_is_the_send_time_and_the_body_keeps_the_market_time() -> None:
    """A simulated day's (or a late delivery's) email must not sort as old mail."""
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    a = sample_alerts()["daily_loss_warning"]  # decided on 2025-03-14
    sent = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    rendered = render_alert(a)
    msg = build_email(a, rendered, from_addr="c@example.com", to=("t@example.com",),
                      sent_at=sent)
    assert parsedate_to_datetime(msg["Date"]) == sent
    assert "Fri Mar 14 2025, 13:41" in rendered.text  # the market time, New York


def test_a_simulated_alert_says_so_in_its_subject_and_body() -> None:
    a = sample_alerts()["emergency_stop"]
    sim = a.model_copy(update={"context": {**a.context, "simulated": True}})
    rendered = render_alert(sim)
    assert rendered.subject == "[CRITICAL] [SIMULATED] Emergency stop: trading halted"
    assert "simulated market time" in rendered.text and "SIMULATED" in rendered.html


def test_a_warning_past_the_limit_shows_no_negative_room() -> None:
    a = sample_alerts()["daily_loss_warning"]
    past = a.model_copy(update={"context": {**a.context, "pnl": "-2262.89", "pct_used": 1.13,
                                            "remaining": "-262.89", "past_limit": True}})
    rendered = render_alert(past)
    for body in (rendered.text, rendered.html):
        assert "-$262.89" not in body
        assert "past the limit" in body


def test_the_chart_legend_sits_outside_the_plot() -> None:
    """Inside the axes the legend covered the P&L line it explains."""
    from adapters.alerts.render import pnl_chart_figure

    curve = [[f"2025-03-14T{13 + m // 60:02d}:{m % 60:02d}:00+00:00", str(-30.0 * m)]
             for m in range(0, 120)]
    fig = pnl_chart_figure(curve, "2000", 0.75)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, plot = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.y0 >= plot.y1 - 1  # above the plotting area, not over the curve
