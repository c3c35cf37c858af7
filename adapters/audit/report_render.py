"""`catalyst audit report` output: the report dict (adapters/audit/report.py) as
self-contained HTML (jinja2, adapters/templates/audit_report.html, the P&L chart inlined as a
base64 matplotlib PNG), as CSV rows, or as JSON. Same report in, same bytes out.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def pnl_chart_png(report: dict[str, Any]) -> bytes | None:
    """The P&L curve (total and realized) with warnings and stops marked; None if no data."""
    curve = report["pnl_curve"]
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    times = [datetime.strptime(p["time"], "%Y-%m-%d %H:%M:%S") for p in curve]
    total = [float(p["total"]) for p in curve]
    realized = [float(p["realized"]) for p in curve]
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    try:
        ax.step(times, total, where="post", label="total", color="#1f5fa8", linewidth=1.6)
        ax.step(times, realized, where="post", label="realized", color="#6b8e23",
                linewidth=1.0, linestyle="--")
        ax.axhline(0, color="#888", linewidth=0.6)
        limits = {s.get("limit") for s in report["emergency_stops"] if s.get("limit")}
        for s in report["sessions"]:
            if s["limits"].get("max_daily_loss_usd"):
                limits.add(s["limits"]["max_daily_loss_usd"])
        for lim in sorted(limits):
            ax.axhline(-float(lim), color="#c0392b", linewidth=0.8, linestyle=":",
                       label=f"loss limit -{lim}")
        for w in report["daily_loss_warnings"]:
            ax.axvline(datetime.strptime(w["time"], "%Y-%m-%d %H:%M:%S"), color="#e67e22",
                       linewidth=0.9)
        for s in report["emergency_stops"]:
            if s.get("triggered_at"):
                ax.axvline(datetime.strptime(s["triggered_at"], "%Y-%m-%d %H:%M:%S"),
                           color="#c0392b", linewidth=1.4, label="emergency stop")
        ax.set_ylabel("P&L (USD)")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"Daily P&L {report.get('date') or ''} (New York time)", fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        # No metadata: the same log gives the same bytes.
        fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()
    finally:
        plt.close(fig)


def render_html(report: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    png = pnl_chart_png(report)
    chart = base64.b64encode(png).decode() if png else None
    return env.get_template("audit_report.html").render(r=report, chart=chart)


CSV_COLUMNS = ("section", "time", "type", "symbol", "side", "qty", "price", "rule",
               "outcome", "detail")


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(section: str, **kw: Any) -> None:
        rows.append({c: kw.get(c, "") if kw.get(c) is not None else "" for c in CSV_COLUMNS}
                    | {"section": section})

    for t in report["timeline"]:
        row("timeline", time=t["time"], type=t["type"], outcome=t["level"], detail=t["text"])
    for s in report["scans"]:
        for c in s["candidates"]:
            row("scan", time=s["time"], type=f"scan {s['scan_number']}", symbol=c["symbol"],
                price=c["price"], outcome=f"rank {c['rank']}",
                detail=json.dumps({k: c[k] for k in ("composite", "catalyst", "momentum",
                                                     "volume", "technical", "penalty")}))
    for g in report["signals"]:
        d = g["decision"] or {}
        row("signal", time=g["time"], type=g["source"], symbol=g["symbol"], side=g["side"],
            price=g["entry"], qty=d.get("qty"), rule=d.get("rule"), outcome=d.get("outcome"),
            detail=json.dumps({"stop_loss": g["stop_loss"], "take_profit": g["take_profit"],
                               "score": g["score"], "scores": g["scores"]}))
    for d in report["risk_decisions"]:
        row("risk", time=d["time"], type=d["outcome"], symbol=d["symbol"], side=d["side"],
            qty=d["qty"], rule=d["rule"], outcome=d["outcome"],
            detail=d["detail"] + " " + json.dumps(d["figures"]))
    for o in report["orders"]:
        row("order", time=o["approved_at"] or o["submitted_at"], type="order",
            symbol=o["symbol"], side=o["side"], qty=o["qty"], outcome=o["status"],
            detail=f"order {o['order_id']} broker {o['broker_order_id']}")
        for f in o["fills"]:
            row("fill", time=f["time"], type=f["leg"], symbol=o["symbol"], side=f["side"],
                qty=f["qty"], price=f["price"],
                outcome="partial" if f["partial"] else "filled",
                detail=f"order {o['order_id']} fee {f['fee']}")
    for p in report["pnl_curve"]:
        row("pnl", time=p["time"], price=p["total"],
            detail=f"realized {p['realized']} unrealized {p['unrealized']}")
    for a in report["alerts"]:
        row("alert", time=a["time"], type=a["kind"], outcome=a["outcome"],
            detail=f"{a['severity']} {a['title'] or ''} {a['detail']}".strip())
    for k, v in report["config"]["in_force"].items():
        row("config", type="in_force", rule=k, detail=str(v))
    for c in report["config"]["changes"]:
        row("config", time=c["time"], type="changed" if c["accepted"] else "rejected",
            detail=json.dumps(c["changes"]) if c["accepted"] else c.get("error", ""))
    for s in report["emergency_stops"]:
        row("emergency_stop", time=s.get("triggered_at"), type="triggered",
            price=s.get("pnl"), detail=s.get("reason", ""))
        if s.get("completed"):
            c = s["completed"]
            row("emergency_stop", time=c["at"], type="completed",
                detail=f"{c['orders_canceled']} orders canceled, "
                f"{len(c['positions_closed'])} positions closed, realized after "
                f"{c['realized_pnl_after']}")
    return rows


def render_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(csv_rows(report))
    return buf.getvalue()


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=False) + "\n"
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        return render_html(report)
    raise ValueError(f"unknown format {fmt!r} (html, json or csv)")
