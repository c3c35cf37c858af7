"""The dashboard page: rendered on the server with the state of the moment (it reads without
a script), then kept live by static/dashboard.js over the event stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

_ENV = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "static"),
                   autoescape=select_autoescape(["html"]))


def _when(iso: str | None) -> str:
    """'2025-11-26T14:03:00-05:00' -> '2025-11-26 14:03 ET' (the API's times are New York's)."""
    return f"{iso[:10]} {iso[11:16]} ET" if iso else "?"


def banner(trading: dict[str, Any]) -> tuple[str, str]:
    """(css class, text) of the trading-state banner; the script builds the same text."""
    if trading.get("state") == "halted":
        text = f"HALTED since {_when(trading.get('since'))}: {trading.get('reason') or ''}"
        if trading.get("require_manual_restart"):
            text += " (a person must resume trading)"
        return "halted", text
    text = "ACTIVE"
    last = trading.get("last_resumed")
    if last:
        text += f" (resumed {_when(last['at'])} by {last['by']}: {last['reason']})"
    return "active", text


def render_page(state: dict[str, Any], mode: str, kind: str, token_configured: bool) -> str:
    css, text = banner(state.get("trading") or {})
    # Inert JSON for the script; "<" escaped so no "</script>" in the data can end the tag.
    blob = Markup(json.dumps(state, default=str).replace("<", "\\u003c"))
    return _ENV.get_template("dashboard.html").render(
        state=state, banner_class=css, banner_text=text, mode=mode, kind=kind,
        token_configured=token_configured, initial=blob)
