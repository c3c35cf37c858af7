"""The hourly cap under a burst of trades, through the alerter and a real SMTP server: the
trade emails use up the hour, and the daily-loss WARNING still goes out."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.alerts.delivery import AlertDelivery
from adapters.runtime.composition import AlertEffect
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.pipeline import Pipeline
from config.settings import Settings
from domain.events import DailyLossWarningIssued, Event, OrderApproved, OrderFilled
from domain.values import Side
from handlers.alerter import Alerter
from tests.builders import T0, make
from tests.integration.test_alert_delivery import Inbox, free_port, start_smtp

pytestmark = pytest.mark.integration


def trade(n: int) -> list[Event]:
    at = T0 + timedelta(minutes=n)
    common: dict[str, Any] = {"order_id": f"o{n}", "client_order_id": f"c{n}",
                              "symbol": f"S{n:02d}"}
    return [
        make(OrderApproved, f"approved-{n}", at, signal_id=f"s{n}", side=Side.BUY,
             qty=Decimal(10), entry=Decimal(50), stop_loss=Decimal(49),
             take_profit=Decimal(52), reason="breakout", **common),
        make(OrderFilled, f"filled-{n}", at, broker_order_id=f"b{n}", fill_id=f"f{n}",
             side=Side.BUY, qty=Decimal(10), price=Decimal(50), filled_qty=Decimal(10),
             **common),
    ]


async def test_a_burst_of_trades_uses_up_the_cap_and_the_warning_still_goes_out() -> None:
    inbox, port = Inbox(), free_port()
    controller = start_smtp(inbox, port)
    settings = Settings.model_validate({"trading": {"alerts": {
        "channels": ["smtp"], "cooldown_minutes": 0, "hourly_cap": 5,
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
        "recipients": {"warning": ["warn@example.com"], "info": ["info@example.com"]},
    }}})
    recorded: list[Event] = []
    pipeline = Pipeline(SettingsHolder(settings), [Alerter()],
                        [AlertEffect(AlertDelivery(settings))], observers=[recorded.append])
    try:
        for n in range(12):  # twelve fills in twelve minutes
            await pipeline.submit_many(trade(n))
        await pipeline.submit(make(
            DailyLossWarningIssued, "warn", T0 + timedelta(minutes=13), session_date=T0.date(),
            pnl=Decimal(-1500), limit=Decimal(2000), pct_used=0.75, open_positions=12))
    finally:
        controller.stop()
    rules = Counter(e.rule for e in recorded if e.type == "AlertSuppressed")
    assert rules["hourly_cap"] >= 5  # the cap did bite the trade emails
    to = Counter(a for env in inbox.envelopes for a in env.rcpt_tos)
    assert to["info@example.com"] == 5
    assert to["warn@example.com"] == 1  # the WARNING went out all the same
    assert not any(e.type == "AlertSuppressed" and e.kind == "daily_loss_warning"
                   for e in recorded)
