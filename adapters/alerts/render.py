"""AlertRaised -> subject, plain text, phone-readable HTML and inline images -> EmailMessage.

Templates live in adapters/templates/alert_<kind>.{html,txt} (jinja2). A template that fails
to render (a missing key from an older event, a bug) falls back to the generic template,
which lists the context: an alert is never lost to a rendering error.
"""

from __future__ import annotations

import email.utils
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from domain.events import AlertRaised
from domain.values import Severity

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
SEVERITY_COLOURS = {"CRITICAL": "#b91c1c", "WARNING": "#b45309", "INFO": "#1d4ed8"}


@dataclass(frozen=True)
class InlineImage:
    cid: str  # Content-ID without the angle brackets; the HTML refers to "cid:<cid>"
    data: bytes
    filename: str
    subtype: str = "png"


@dataclass(frozen=True)
class RenderedAlert:
    subject: str
    text: str
    html: str
    images: tuple[InlineImage, ...] = ()


# --- formatting filters --------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def money(value: Any, signed: bool = False) -> str:
    """'1234.5' -> '$1,234.50'; signed: '+$1,234.50' / '-$2,050.00'. None -> '—'."""
    d = _dec(value)
    if d is None:
        return "—"
    sign = "-" if d < 0 else ("+" if signed and d > 0 else "")
    return f"{sign}${abs(d):,.2f}"


def qty(value: Any) -> str:
    d = _dec(value)
    if d is None:
        return "—"
    return f"{d.normalize():f}" if d != d.to_integral() else f"{int(d):,}"


def pct(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.{digits}f}%"


def new_york(value: Any, fmt: str = "%H:%M ET") -> str:
    """ISO UTC timestamp -> New York wall-clock time (the trading day's clock)."""
    if not value:
        return "—"
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt.astimezone(NEW_YORK).strftime(fmt)


def pnl_colour(value: Any) -> str:
    d = _dec(value)
    if d is None or d == 0:
        return "#374151"
    return "#15803d" if d > 0 else "#b91c1c"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("adapters", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(money=money, qty=qty, pct=pct, ny=new_york, pnl_colour=pnl_colour)
    env.globals["severity_colours"] = SEVERITY_COLOURS
    return env


_ENV = _environment()


# --- chart ---------------------------------------------------------------------------------


def pnl_chart_png(
    points: list[list[str]] | list[tuple[str, str]],
    loss_limit: str | None = None,
    warning_pct: float | None = None,
) -> bytes:
    """The day's P&L curve (New York time) as a PNG, sized for a phone screen."""
    fig = pnl_chart_figure(points, loss_limit, warning_pct)
    buf = io.BytesIO()
    # No timestamp/version metadata: the same curve gives the same bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def pnl_chart_figure(
    points: list[list[str]] | list[tuple[str, str]],
    loss_limit: str | None = None,
    warning_pct: float | None = None,
) -> Any:
    """The chart as a matplotlib Figure, laid out (tests measure where things are)."""
    # The Agg canvas bound explicitly (no pyplot, no matplotlib.use): no display needed, no
    # global backend switch, and safe from a worker thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    times = [datetime.fromisoformat(t).astimezone(NEW_YORK) for t, _ in points]
    values = [float(v) for _, v in points]

    fig = Figure(figsize=(6.0, 2.8), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(times, values, color="#111827", linewidth=1.6)
    ax.fill_between(times, values, 0, where=[v >= 0 for v in values], color="#16a34a",
                    alpha=0.25, interpolate=True)
    ax.fill_between(times, values, 0, where=[v < 0 for v in values], color="#dc2626",
                    alpha=0.25, interpolate=True)
    ax.axhline(0, color="#6b7280", linewidth=0.8)
    limit = _dec(loss_limit)
    if limit is not None and values and min(values) < -float(limit) * 0.5:
        # Only draw the limit lines when the day came near them; otherwise they flatten
        # the curve into a line.
        ax.axhline(-float(limit), color="#b91c1c", linestyle="--", linewidth=1,
                   label=f"loss limit {money(-limit)}")
        if warning_pct:
            ax.axhline(-float(limit) * warning_pct, color="#d97706", linestyle=":",
                       linewidth=1, label=f"warning {pct(warning_pct)}")
        # Above the plot, beside the title: inside it the legend hid the curve it explains.
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=7,
                  frameon=False, borderaxespad=0.2)
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=NEW_YORK))
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"{'-' if v < 0 else ''}${abs(v):,.0f}")
    )
    ax.tick_params(labelsize=8)
    ax.grid(True, color="#e5e7eb", linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Daily P&L (New York time)", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


# --- rendering -----------------------------------------------------------------------------


SIMULATED_TAG = "[SIMULATED]"


def subject_for(alert: AlertRaised) -> str:
    """The subject starts with the severity, so a phone's inbox list says how urgent; an
    alert from a simulated run says so next, so a demo's stop is never taken for real."""
    tag = f"{SIMULATED_TAG} " if alert.context.get("simulated") else ""
    return f"[{alert.severity}] {tag}{alert.title}"


def message_id_for(alert: AlertRaised) -> str:
    """Stable per alert: a resend after a retry carries the same Message-ID."""
    return f"<{alert.alert_id}@catalyst>"


def _images_for(alert: AlertRaised) -> tuple[InlineImage, ...]:
    curve = alert.context.get("pnl_curve") or []
    if len(curve) < 2:
        return ()
    png = pnl_chart_png(curve, alert.context.get("loss_limit"), alert.context.get("warning_pct"))
    return (InlineImage(cid=f"pnl-{alert.alert_id}@catalyst", data=png, filename="pnl.png"),)


def render_alert(alert: AlertRaised) -> RenderedAlert:
    """CPU-bound (the chart): call it through asyncio.to_thread from async code."""
    images = _images_for(alert)
    variables = {
        "alert": alert,
        "ctx": alert.context,
        "severity": str(alert.severity),
        "colour": SEVERITY_COLOURS.get(str(alert.severity), "#374151"),
        "chart_cid": images[0].cid if images else None,
    }
    try:
        text = _ENV.get_template(f"alert_{alert.kind}.txt").render(variables)
        html = _ENV.get_template(f"alert_{alert.kind}.html").render(variables)
    except TemplateNotFound:
        text, html = _generic(variables)
    except Exception:  # noqa: BLE001 - never lose an alert to a template bug
        log.exception("template for alert kind %r failed; using the generic one", alert.kind)
        text, html = _generic(variables)
    return RenderedAlert(subject=subject_for(alert), text=text, html=html, images=images)


def _generic(variables: dict[str, Any]) -> tuple[str, str]:
    return (
        _ENV.get_template("alert_generic.txt").render(variables),
        _ENV.get_template("alert_generic.html").render(variables),
    )


def build_email(
    alert: AlertRaised,
    rendered: RenderedAlert,
    *,
    from_addr: str,
    to: tuple[str, ...] | list[str],
    sent_at: datetime | None = None,
) -> EmailMessage:
    """multipart/alternative (text, then HTML with its images as multipart/related).

    `Date:` is when the email is sent (default: now), not the alert's event time: a
    simulated day's alerts (or ones delivered after an outage) would otherwise sort as old
    mail. The body shows the market time."""
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = from_addr
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.format_datetime(sent_at or datetime.now(UTC))
    msg["Message-ID"] = message_id_for(alert)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to alerts
    msg["X-Catalyst-Alert-Id"] = alert.alert_id
    msg["X-Catalyst-Alert-Kind"] = alert.kind
    msg["X-Catalyst-Severity"] = str(alert.severity)
    if alert.severity == Severity.CRITICAL:
        msg["X-Priority"] = "1"
        msg["Importance"] = "high"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    if rendered.images:
        html_part = msg.get_payload()[-1]
        for img in rendered.images:
            html_part.add_related(
                img.data, "image", img.subtype, cid=f"<{img.cid}>", filename=img.filename,
                disposition="inline",
            )
    return msg


def webhook_payload(alert: AlertRaised, rendered: RenderedAlert) -> dict[str, Any]:
    """The JSON a webhook receives: the AlertRaised event plus its subject and text."""
    return {
        **alert.model_dump(mode="json"),
        "subject": rendered.subject,
        "text": rendered.text,
        "message_id": message_id_for(alert),
    }
