"""Example alerts from a scripted trading day run through the real Alerter, and a writer
for docs/emails/ (rendered HTML, plain text and the P&L chart of every email).

    .venv/bin/python -m adapters.alerts.examples [docs/emails]

The day (Fri 2025-03-14, paper): a good morning, a slide after lunch into the daily loss
limit, a stop whose first attempt finds the broker unreachable, then the summary.
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from adapters.alerts.render import render_alert
from config.settings import Settings
from domain.events import (
    AlertFailed,
    AlertRaised,
    ClosedPosition,
    DailyLossWarningIssued,
    DailyPnLChanged,
    EmergencyStopCompleted,
    EmergencyStopFailed,
    EmergencyStopTriggered,
    Event,
    HandlerCrashLooping,
    OrderApproved,
    OrderFilled,
    OrderSubmitted,
    PositionClosed,
    ReconciliationDiscrepancyFound,
    SessionEnded,
    SessionStarted,
    SignalGenerated,
    TradingResumed,
)
from domain.values import Severity, Side, derive_id, to_cents
from handlers.alerter import Alerter

DAY = date(2025, 3, 14)
OPEN = datetime(2025, 3, 14, 13, 30, tzinfo=UTC)  # 09:30 New York (EDT)
_NS = UUID("6b1f5c1e-0000-4000-8000-000000000001")


class _Script:
    """Builds the day's events with deterministic ids and New York session times."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.n = 0

    def add(self, cls: type[Event], minutes: float, **payload: Any) -> Any:
        self.n += 1
        ev = cls(
            event_id=derive_id(_NS, f"example:{self.n}"), type=cls.__name__,
            occurred_at=OPEN + timedelta(minutes=minutes), correlation_id="session-2025-03-14",
            **payload,
        )
        self.events.append(ev)
        return ev

    def entry(self, minutes: float, symbol: str, qty: int, price: str, atr: str,
              reason: str) -> str:
        p, a = Decimal(price), Decimal(atr)
        stop, target = to_cents(p - 2 * a), to_cents(p + 3 * a)
        sig, oid = f"sig-{symbol}-{self.n}", f"ord-{symbol}-{self.n}"
        common = {"order_id": oid, "client_order_id": f"cat-{oid}", "symbol": symbol}
        self.add(SignalGenerated, minutes, signal_id=sig, symbol=symbol, side=Side.BUY,
                 entry=p, stop_loss=stop, take_profit=target, reason=reason)
        self.add(OrderApproved, minutes, signal_id=sig, side=Side.BUY, qty=Decimal(qty),
                 entry=p, stop_loss=stop, take_profit=target, **common)
        self.add(OrderSubmitted, minutes, broker_order_id=f"b-{oid}", side=Side.BUY,
                 qty=Decimal(qty), order_type="market", stop_loss=stop, take_profit=target,
                 **common)
        self.add(OrderFilled, minutes + 0.1, broker_order_id=f"b-{oid}", fill_id=f"f-{oid}",
                 side=Side.BUY, qty=Decimal(qty), price=p, filled_qty=Decimal(qty), **common)
        return oid

    def exit(self, minutes: float, symbol: str, qty: int, price: str, leg: str | None) -> None:
        self.n += 1
        oid = f"exit-{symbol}-{self.n}"
        self.add(OrderFilled, minutes, order_id=oid, client_order_id=f"cat-{oid}",
                 broker_order_id=f"b-{oid}", fill_id=f"f-{oid}", symbol=symbol,
                 side=Side.SELL, qty=Decimal(qty), price=Decimal(price),
                 filled_qty=Decimal(qty), leg=leg)

    def pnl(self, minutes: float, total: float, realized: float, open_positions: int,
            by_symbol: dict[str, str] | None = None) -> None:
        t = to_cents(Decimal(str(total)))
        r = to_cents(Decimal(str(realized)))
        self.add(DailyPnLChanged, minutes, session_date=DAY, realized=r, unrealized=t - r,
                 total=t, intraday_low=t, open_positions=open_positions,
                 by_symbol=by_symbol or {})


def _curve(minute: int) -> float:
    """Morning up to about +$450, then a slide after lunch through -$2,000 by 14:02."""
    if minute <= 90:
        base = 450 * minute / 90
    elif minute <= 150:
        base = 450 - 150 * (minute - 90) / 60
    else:
        base = 300 - 2350 * ((minute - 150) / 122) ** 1.4
    return round(base + 35 * math.sin(minute / 4.0) + 18 * math.sin(minute / 1.7), 2)


def scripted_day() -> list[Event]:
    s = _Script()
    s.add(SessionStarted, 0, session_id="2025-03-14", session_date=DAY, mode="autonomous",
          broker="paper", market_open=OPEN, market_close=OPEN + timedelta(minutes=390),
          symbols=("AAPL", "AMD", "NVDA", "TSLA", "MSFT", "META"),
          limits={"max_daily_loss_usd": "2000", "max_positions": "5",
                  "max_position_size_usd": "10000", "warning_threshold_pct": "0.75"})
    realized, open_pos = 0.0, 0
    events_at: dict[int, list[tuple[str, tuple[Any, ...]]]] = {
        12: [("entry", ("AAPL", 50, "187.40", "1.25",
                        "Earnings beat; gap up 4.1% on 3.2x volume, broke the premarket high"))],
        18: [("entry", ("NVDA", 10, "912.15", "9.80",
                        "Analyst upgrade; bull flag on the 5-minute chart, RSI 62"))],
        20: [("entry", ("AMD", 40, "171.05", "2.10",
                        "Sympathy move with NVDA; VWAP reclaim on rising volume"))],
        70: [("exit", ("AAPL", 50, "191.15", "take_profit"))],
        150: [("exit", ("NVDA", 10, "892.55", "stop_loss"))],
        185: [("entry", ("TSLA", 30, "248.30", "3.40",
                         "Delivery numbers headline; opening-range breakout retest"))],
    }
    warned = False
    minute, total = 0, 0.0
    for minute in range(0, 390):
        for what, args in events_at.get(minute, []):
            if what == "entry":
                s.entry(minute, *args)
                open_pos += 1
            else:
                s.exit(minute, *args)
                open_pos -= 1
                realized += {"AAPL": 187.5, "NVDA": -196.0}[args[0]]
        total = _curve(minute)
        s.pnl(minute + 0.5, total, realized, open_pos)
        if minute == 120:
            s.add(ReconciliationDiscrepancyFound, minute + 0.7, kind="position", symbol="AMD",
                  broker="40 shares long", recorded="0 shares (no fill recorded)",
                  resolution="Recorded the broker's position (fill missed while the stream "
                             "reconnected); its stop and target are live at the broker.")
        if not warned and total <= -1500:
            warned = True
            s.add(DailyLossWarningIssued, minute + 0.6, session_date=DAY,
                  pnl=to_cents(Decimal(str(total))), limit=Decimal(2000),
                  pct_used=round(-total / 2000, 4), open_positions=open_pos)
        if total <= -2000:
            break
    stop = minute + 0.6
    # The mark the stop triggers on, per symbol (AAPL and NVDA closed earlier).
    unreal = to_cents(Decimal(str(total))) - to_cents(Decimal(str(realized)))
    amd = Decimal("-298.40")
    s.pnl(stop - 0.05, total, realized, open_pos, {
        "AAPL": "187.50", "AMD": str(amd), "NVDA": "-196.00", "TSLA": str(unreal - amd)})
    s.add(EmergencyStopTriggered, stop, session_date=DAY, pnl=to_cents(Decimal(str(total))),
          limit=Decimal(2000), reason="Daily loss limit exceeded",
          actions={"cancel_all_orders": True, "close_all_positions": True,
                   "halt_new_trades": True})
    s.add(EmergencyStopFailed, stop + 0.1, session_date=DAY, attempt=1,
          error="ConnectionResetError: connection reset by peer (paper-api.alpaca.markets)",
          remaining_orders=4, remaining_positions=2)
    for sym, qty in (("AMD", 40), ("TSLA", 30)):
        s.add(PositionClosed, stop + 0.5, symbol=sym, qty=Decimal(qty), reason="emergency_stop")
    s.exit(stop + 0.6, "AMD", 40, "162.40", None)  # -346.00
    s.exit(stop + 0.6, "TSLA", 30, "192.50", None)  # -1674.00
    closed = (
        ClosedPosition(symbol="AMD", qty=Decimal(40), price=Decimal("162.40"),
                       realized_pnl=Decimal("-346.00")),
        ClosedPosition(symbol="TSLA", qty=Decimal(30), price=Decimal("192.50"),
                       realized_pnl=Decimal("-1674.00")),
    )
    after = Decimal(str(realized)) + sum((p.realized_pnl or 0) for p in closed)
    s.add(EmergencyStopCompleted, stop + 0.7, session_date=DAY, orders_canceled=4,
          positions_closed=closed, realized_pnl_after=to_cents(after))
    s.pnl(stop + 1, float(after), float(after), 0)
    s.add(AlertFailed, 13.2, alert_id="example-smtp", kind="trades_executed",
          severity=Severity.INFO, channel="smtp",
          reason="STARTTLS not offered by smtp.example.com:587 (security: starttls): "
                 "configuration error", attempt=1, will_retry=False)
    s.add(HandlerCrashLooping, 300, handler="scanner", failures=5,
          error="KeyError: 'v' (bar message without volume from the data stream)")
    s.add(SessionEnded, 390, session_id="2025-03-14", session_date=DAY, trades=4, wins=1,
          losses=3, realized_pnl=to_cents(after))
    s.add(TradingResumed, 3 * 24 * 60 - 30, resumed_by="cli:trader",  # Monday 09:00 ET
          reason="Reviewed the stop; TSLA gap-down was news-driven. Resuming with limits.")
    return s.events


def test_alert(severity: Severity = Severity.INFO) -> AlertRaised:
    return AlertRaised(
        event_id=derive_id(_NS, "example:test"), type="AlertRaised",
        occurred_at=OPEN - timedelta(minutes=45), correlation_id="alerts-test",
        alert_id="test-6b1f5c1e", kind="test", severity=severity,
        title=f"Test alert ({severity})", context={},
    )


def sample_alerts(settings: Settings | None = None) -> dict[str, AlertRaised]:
    """The first AlertRaised of each kind the scripted day produces, plus a test alert."""
    settings = settings or Settings()
    alerter = Alerter()
    found: dict[str, AlertRaised] = {}
    for ev in scripted_day():
        for out in alerter.handle(ev, settings):
            if isinstance(out, AlertRaised):
                # Prefer the batch with several trades as the trades example.
                if out.kind not in found or len(out.context.get("trades", ())) > len(
                    found[out.kind].context.get("trades", ())
                ):
                    found[out.kind] = out
    found["test"] = test_alert()
    return found


def write_examples(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = ["# Example alert emails", "",
             "Generated by `.venv/bin/python -m adapters.alerts.examples docs/emails` from a",
             "scripted day run through the real Alerter. Open the `.html` files in a browser",
             "(narrow the window to see the phone layout); `.txt` is the plain-text part.", "",
             "| file | subject |", "| --- | --- |"]
    for kind, alert in sorted(sample_alerts().items()):
        rendered = render_alert(alert)
        html = rendered.html
        for img in rendered.images:
            name = f"{kind}_{img.filename}"
            (directory / name).write_bytes(img.data)
            written.append(directory / name)
            html = html.replace(f"cid:{img.cid}", name)  # browsers do not resolve cid:
        for ext, body in (("html", html), ("txt", rendered.text)):
            path = directory / f"{kind}.{ext}"
            path.write_text(body, encoding="utf-8")
            written.append(path)
        index.append(f"| [{kind}.html]({kind}.html) | {rendered.subject} |")
    (directory / "README.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path("docs/emails")
    for path in write_examples(target):
        print(path)


if __name__ == "__main__":
    main()
