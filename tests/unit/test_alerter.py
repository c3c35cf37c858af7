"""The alerter decides what a trader hears about, and rate-limits it on event time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import count
from typing import Any
from uuid import UUID, uuid4

import pytest

from config.settings import (
    Alerts,
    EmergencyActions,
    RiskParameters,
    Settings,
    TradingConfig,
)
from domain.events import (
    AlertFailed,
    AlertRaised,
    AlertSuppressed,
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
    RoleClaimed,
    SessionEnded,
    SessionStarted,
    SignalGenerated,
    TradingResumed,
    decode_event,
)
from domain.values import Severity, Side, derive_id
from handlers.alerter import Alerter

DAY = date(2025, 3, 14)
T0 = datetime(2025, 3, 14, 14, 30, tzinfo=UTC)  # 09:30 New York
_ids = count()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make(cls: type[Event], minutes: float = 0, **payload: Any) -> Any:
    return cls(
        event_id=derive_id(UUID(int=0), f"test:{next(_ids)}"),
        type=cls.__name__,
        occurred_at=at(minutes),
        correlation_id="session-2025-03-14",
        **payload,
    )


def settings(
    cooldown: int = 15, cap: int = 20, enabled: bool = True, notify: bool = True
) -> Settings:
    return Settings(
        risk=RiskParameters(emergency_actions=EmergencyActions(notify_via_email=notify)),
        trading=TradingConfig(
            alerts=Alerts(enabled=enabled, cooldown_minutes=cooldown, hourly_cap=cap)
        ),
    )


def warning(minutes: float, pct: float = 0.78) -> DailyLossWarningIssued:
    return make(
        DailyLossWarningIssued, minutes, session_date=DAY,
        pnl=Decimal(-2000) * Decimal(str(pct)), limit=Decimal(2000), pct_used=pct,
        open_positions=2,
    )


def crash(minutes: float) -> HandlerCrashLooping:
    return make(HandlerCrashLooping, minutes, handler="executor", failures=5, error="boom")


def session_started(minutes: float = 0) -> SessionStarted:
    return make(
        SessionStarted, minutes, session_id="s1", session_date=DAY, mode="autonomous",
        broker="paper", market_open=at(0), market_close=at(390), symbols=("AAPL", "MSFT"),
        limits={"max_daily_loss_usd": "2000", "max_positions": "5"},
    )


def entry(
    symbol: str, minutes: float, price: str, qty: int = 10, reason: str = "breakout"
) -> list[Event]:
    """A signal through approval, submission and fill of its entry order."""
    n = next(_ids)
    sig, oid = f"sig-{n}", f"ord-{n}"
    common = {"order_id": oid, "client_order_id": f"c-{n}", "symbol": symbol}
    return [
        make(SignalGenerated, minutes, signal_id=sig, symbol=symbol, side=Side.BUY,
             entry=Decimal(price), stop_loss=Decimal(price) - 2,
             take_profit=Decimal(price) + 3, reason=reason),
        make(OrderApproved, minutes, signal_id=sig, side=Side.BUY, qty=Decimal(qty),
             entry=Decimal(price), stop_loss=Decimal(price) - 2,
             take_profit=Decimal(price) + 3, reason="approved: size 10", **common),
        make(OrderSubmitted, minutes, broker_order_id=f"b-{n}", side=Side.BUY,
             qty=Decimal(qty), order_type="market", stop_loss=Decimal(price) - 2,
             take_profit=Decimal(price) + 3, **common),
        make(OrderFilled, minutes, broker_order_id=f"b-{n}", fill_id=f"f-{n}",
             side=Side.BUY, qty=Decimal(qty), price=Decimal(price),
             filled_qty=Decimal(qty), **common),
    ]


def exit_fill(symbol: str, minutes: float, price: str, qty: int = 10) -> OrderFilled:
    n = next(_ids)
    return make(
        OrderFilled, minutes, order_id=f"exit-{n}", client_order_id=f"c-{n}",
        broker_order_id=f"b-{n}", fill_id=f"f-{n}", symbol=symbol, side=Side.SELL,
        qty=Decimal(qty), price=Decimal(price), filled_qty=Decimal(qty), leg="take_profit",
    )


def pnl(minutes: float, total: str) -> DailyPnLChanged:
    return make(
        DailyPnLChanged, minutes, session_date=DAY, realized=Decimal(0),
        unrealized=Decimal(total), total=Decimal(total), intraday_low=Decimal(total),
    )


def run(alerter: Alerter, events: list[Event], cfg: Settings | None = None) -> list[Event]:
    cfg = cfg or settings()
    return [out for ev in events for out in alerter.handle(ev, cfg)]


def only(outputs: list[Event]) -> Event:
    assert len(outputs) == 1, outputs
    return outputs[0]


# --- each trigger --------------------------------------------------------------------------


def test_emergency_stop_says_what_it_did_and_how_to_resume() -> None:
    trig = make(
        EmergencyStopTriggered, 100, session_date=DAY, pnl=Decimal("-2050.00"),
        limit=Decimal(2000), reason="Daily loss limit exceeded",
        actions={"cancel_all_orders": True, "close_all_positions": True},
    )
    done = make(
        EmergencyStopCompleted, 100.2, session_date=DAY, orders_canceled=3,
        positions_closed=(
            ClosedPosition(symbol="AAPL", qty=Decimal(10), price=Decimal("148.10"),
                           realized_pnl=Decimal("-19.00")),
        ),
        realized_pnl_after=Decimal("-2069.00"),
    )
    alerter = Alerter()
    assert run(alerter, [trig]) == []  # one email, once the executor reports what it did
    alert = only(run(alerter, [done]))
    assert isinstance(alert, AlertRaised)
    assert alert.severity == Severity.CRITICAL
    assert alert.kind == "emergency_stop"
    assert alert.title == "Emergency stop: trading halted"
    ctx = alert.context
    assert ctx["reason"] == "Daily loss limit exceeded"
    assert ctx["pnl_at_trigger"] == "-2050.00"
    assert ctx["orders_canceled"] == 3
    assert ctx["positions_closed"][0]["symbol"] == "AAPL"
    assert ctx["positions_closed"][0]["price"] == "148.10"
    assert ctx["realized_pnl_after"] == "-2069.00"
    assert ctx["resume_command"] == 'catalyst resume --reason "..."'
    assert alert.causation_id == done.event_id


def test_emergency_stop_failure_is_critical() -> None:
    failed = make(
        EmergencyStopFailed, 101, session_date=DAY, attempt=2, error="connection refused",
        remaining_orders=1, remaining_positions=4,
    )
    alert = only(run(Alerter(), [failed]))
    assert isinstance(alert, AlertRaised) and alert.severity == Severity.CRITICAL
    assert alert.context["remaining_positions"] == 4
    assert "broker unreachable" in alert.title


def test_a_warning_past_the_limit_does_not_show_negative_room() -> None:
    """One gap through both thresholds: the warning and the stop in the same minute."""
    alert = only(run(Alerter(), [warning(60, 1.13)]))
    assert alert.context["past_limit"] is True
    assert only(run(Alerter(), [warning(60, 0.78)])).context["past_limit"] is False


def test_the_stop_email_lists_the_losses_that_caused_it() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=0)
    events: list[Event] = [session_started(0), *entry("AAPL", 5, "150.00")]
    events.append(exit_fill("AAPL", 20, "100.00").model_copy(update={"leg": "stop_loss"}))
    events += entry("MSFT", 30, "400.00", qty=5)
    tick = pnl(60, "-1900").model_copy(update={"by_symbol": {"AAPL": "-500.00",
                                                             "MSFT": "-1400.00"}})
    trig = make(EmergencyStopTriggered, 60, session_date=DAY, pnl=Decimal("-1900"),
                limit=Decimal(1800), reason="Daily loss limit exceeded")
    done = make(EmergencyStopCompleted, 61, session_date=DAY, orders_canceled=0,
                realized_pnl_after=Decimal("-1900"))
    outs = run(alerter, [*events, tick, trig, done], cfg)
    stop = next(o for o in outs if getattr(o, "kind", "") == "emergency_stop")
    [loss] = stop.context["losses_before"]
    assert (loss["symbol"], loss["pnl"], loss["reason"]) == ("AAPL", "-500.00", "stop-loss")
    assert stop.context["pnl_by_symbol_at_trigger"] == {"MSFT": "-1400.00", "AAPL": "-500.00"}


def test_fills_before_the_stop_say_so_when_their_email_comes_after_it() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=15)
    run(alerter, [session_started(0), *entry("AAPL", 1, "150.00")], cfg)
    run(alerter, entry("MSFT", 5, "400.00"), cfg)  # held by the cooldown
    trig = make(EmergencyStopTriggered, 6, session_date=DAY, pnl=Decimal("-2100"),
                limit=Decimal(2000), reason="Daily loss limit exceeded")
    run(alerter, [trig], cfg)
    batch = only(run(alerter, [pnl(17, "-2100")], cfg))
    assert batch.context["trades"][0]["before_stop"] is True
    assert batch.context["stopped_at"] == trig.occurred_at.isoformat()


def test_alerts_of_a_simulated_session_say_so() -> None:
    sim = session_started(0).model_copy(update={"broker": "sim"})
    alerter = Alerter()
    assert only(run(alerter, [sim])).context["simulated"] is True
    assert only(run(alerter, [crash(1)])).context["simulated"] is True
    assert "simulated" not in only(run(Alerter(), [session_started(0)])).context


def test_a_role_claimed_under_catalyst_ops_is_passed_by() -> None:
    # The alerter consumes catalyst.ops.>, where every takeover of a role records its
    # RoleClaimed (adapters/nats/fence.py): nothing to tell a trader, nothing to fail on.
    claimed = make(RoleClaimed, 1, role="execution", instance="host-2:4711",
                   lease_epoch=1.7e9, lease_revision=12)
    alerter = Alerter()
    assert len(run(alerter, [session_started(0)])) == 1
    assert run(alerter, [claimed]) == []


def failed(alert_id: str, channel: str, retry: bool, kind: str = "daily_loss_warning",
           minutes: float = 1) -> AlertFailed:
    return make(AlertFailed, minutes, alert_id=alert_id, kind=kind, severity=Severity.WARNING,
                channel=channel, reason="530 5.7.0 Must issue a STARTTLS command first",
                attempt=1, will_retry=retry)


def test_a_channel_failing_for_good_raises_one_critical_through_the_others() -> None:
    alerter = Alerter()
    assert run(alerter, [failed("a1", "smtp", retry=True)]) == []  # may pass: no noise
    ops = only(run(alerter, [failed("a2", "smtp", retry=False)]))
    assert isinstance(ops, AlertRaised) and ops.severity == Severity.CRITICAL
    assert ops.kind == "alert_channel_failed"
    assert ops.context["exclude_channels"] == ["smtp"]
    assert "STARTTLS" in ops.context["reason"]
    assert run(alerter, [failed("a3", "smtp", retry=False, minutes=2)]) == []  # said once
    # and its own failure does not raise another
    assert run(alerter, [failed(ops.alert_id, "webhook", False, "alert_channel_failed")]) == []


def test_daily_loss_warning() -> None:
    alert = only(run(Alerter(), [warning(60, 0.78)]))
    assert isinstance(alert, AlertRaised)
    assert (alert.kind, alert.severity) == ("daily_loss_warning", Severity.WARNING)
    assert alert.title == "Daily loss at 78% of the limit"
    assert alert.context["limit"] == "2000"
    assert alert.context["open_positions"] == 2
    assert alert.context["remaining"] == "440.00"


def test_session_started() -> None:
    alert = only(run(Alerter(), [session_started()]))
    assert isinstance(alert, AlertRaised) and alert.severity == Severity.INFO
    assert alert.context["mode"] == "autonomous"
    assert alert.context["broker"] == "paper"
    assert alert.context["symbols"] == ["AAPL", "MSFT"]
    assert alert.context["limits"]["max_daily_loss_usd"] == "2000"


def test_entry_fill_is_a_trade_with_the_signal_reason() -> None:
    alert = only(run(Alerter(), entry("AAPL", 5, "150.00", reason="gap up on FDA news")))
    assert isinstance(alert, AlertRaised)
    assert alert.kind == "trades_executed"
    assert alert.title == "Trade executed: BUY 10 AAPL @ 150.00"
    trade = alert.context["trades"][0]
    assert trade["reason"] == "gap up on FDA news"
    assert (trade["entry"], trade["stop_loss"], trade["take_profit"]) == (
        "150.00", "148.00", "153.00",
    )


def test_an_exit_is_a_trade_closed_alert_with_its_reason_and_pnl() -> None:
    alerter = Alerter()
    run(alerter, entry("AAPL", 5, "150.00"))
    alert = only(run(alerter, [exit_fill("AAPL", 60, "153.00")]))
    assert isinstance(alert, AlertRaised)
    assert (alert.kind, alert.severity) == ("trade_closed", Severity.INFO)
    assert alert.title == "Trade closed: AAPL take-profit, +$30.00"
    close = alert.context["closes"][0]
    assert (close["reason"], close["pnl"], close["entry"], close["exit"], close["qty"]) == (
        "take-profit", "30.00", "150.00", "153.00", "10")


def test_a_flatten_close_says_why_and_the_summary_lists_every_close() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=0)
    run(alerter, [session_started(0), *entry("AAPL", 5, "150.00")], cfg)
    flat = make(PositionClosed, 380, symbol="AAPL", qty=Decimal(10), reason="market_close")
    fill = exit_fill("AAPL", 381, "149.00").model_copy(update={"leg": None})
    alert = only(run(alerter, [flat, fill], cfg))
    assert alert.context["closes"][0]["reason"] == "market close"
    assert alert.title == "Trade closed: AAPL market close, -$10.00"
    ended = make(SessionEnded, 390, session_id="s1", session_date=DAY, trades=1, wins=0,
                 losses=1, realized_pnl=Decimal("-10.00"))
    summary = only(run(alerter, [ended], cfg))
    assert [(c["symbol"], c["pnl"]) for c in summary.context["close_list"]] == [
        ("AAPL", "-10.00")]


def test_daily_summary_has_win_rate_extremes_and_the_pnl_curve() -> None:
    alerter = Alerter()
    events: list[Event] = [session_started()]
    events += entry("AAPL", 5, "150.00") + [pnl(6, "0"), pnl(30, "-12.50")]
    events += [exit_fill("AAPL", 40, "153.00")]  # +30
    events += entry("MSFT", 50, "400.00", qty=5) + [pnl(55, "10.00")]
    events += [exit_fill("MSFT", 70, "396.00", qty=5)]  # -20
    events += [pnl(70.5, "10.00")]
    run(alerter, events, settings(cooldown=0))
    ended = make(
        SessionEnded, 390, session_id="s1", session_date=DAY, trades=2, wins=1, losses=1,
        realized_pnl=Decimal("10.00"),
    )
    alert = only(run(alerter, [ended]))
    assert isinstance(alert, AlertRaised) and alert.kind == "daily_summary"
    ctx = alert.context
    assert (ctx["trades"], ctx["win_rate"], ctx["realized_pnl"]) == (2, 0.5, "10.00")
    assert (ctx["largest_win"], ctx["largest_loss"]) == ("30.00", "-20.00")
    assert [t["symbol"] for t in ctx["trade_list"]] == ["AAPL", "MSFT"]
    # one point per minute: the 70.5 tick replaces the 70 minute's value
    assert [p[1] for p in ctx["pnl_curve"]] == ["0", "-12.50", "10.00", "10.00"]
    assert ctx["pnl_low"] == "-12.50"


@pytest.mark.parametrize(
    "trigger",
    [
        lambda: make(ReconciliationDiscrepancyFound, 3, kind="position", symbol="AAPL",
                     broker="10", recorded="0", resolution="halted; please check"),
        lambda: crash(3),
    ],
)
def test_operational_failures_are_critical(trigger: Any) -> None:
    alert = only(run(Alerter(), [trigger()]))
    assert isinstance(alert, AlertRaised) and alert.severity == Severity.CRITICAL


# --- rate limits ---------------------------------------------------------------------------


def test_cooldown_per_kind_by_event_time() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=15)
    first, again, other_kind, later = run(
        alerter, [warning(0), warning(10), session_started(11), warning(15)], cfg
    )
    assert isinstance(first, AlertRaised)
    assert isinstance(again, AlertSuppressed) and again.rule == "cooldown"
    assert isinstance(other_kind, AlertRaised)  # the cooldown is per kind
    assert isinstance(later, AlertRaised)
    assert later.context["suppressed_before"] == 0  # reset by the session alert


def resumed(minutes: float) -> TradingResumed:
    return make(TradingResumed, minutes, resumed_by="ops", reason="checked")


def test_hourly_cap_over_a_sliding_hour() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=0, cap=2)
    outs = run(alerter, [resumed(0), resumed(10), resumed(20), resumed(60.5)], cfg)
    assert [type(o).__name__ for o in outs] == [
        "AlertRaised", "AlertRaised", "AlertSuppressed", "AlertRaised",
    ]
    assert outs[2].rule == "hourly_cap"
    assert outs[3].context["suppressed_before"] == 1


def test_the_hourly_cap_never_holds_back_a_warning() -> None:
    """Trade emails used up the hour; the daily-loss warning still goes out."""
    alerter = Alerter()
    cfg = settings(cooldown=0, cap=3)
    outs = run(alerter, [*entry("AAPL", 1, "1"), *entry("MSFT", 2, "1"), *entry("AMD", 3, "1"),
                         *entry("NVDA", 4, "1"), warning(5)], cfg)
    assert [o.kind for o in outs if isinstance(o, AlertSuppressed)] == ["trades_executed"]
    warn = outs[-1]
    assert isinstance(warn, AlertRaised) and warn.kind == "daily_loss_warning"


def test_a_catch_up_email_does_not_call_its_own_trades_held_back() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=15)
    run(alerter, entry("AAPL", 0, "150.00") + entry("MSFT", 5, "400.00")
        + entry("AMD", 6, "100.00"), cfg)
    batch = only(run(alerter, [pnl(16, "-4")], cfg))
    assert [t["symbol"] for t in batch.context["trades"]] == ["MSFT", "AMD"]
    assert batch.context["suppressed_before"] == 0


def test_critical_is_never_dropped_by_the_limits() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=60, cap=1)
    outs = run(alerter, [warning(0), crash(1), crash(2), crash(3)], cfg)
    assert all(isinstance(o, AlertRaised) for o in outs)


def test_trades_held_by_the_cooldown_go_out_together_later() -> None:
    alerter = Alerter()
    cfg = settings(cooldown=15)
    first = run(alerter, entry("AAPL", 0, "150.00"), cfg)
    held = run(alerter, entry("MSFT", 5, "400.00"), cfg)
    assert isinstance(only(first), AlertRaised)
    assert isinstance(only(held), AlertSuppressed) and held[0].rule == "cooldown"
    assert run(alerter, [pnl(10, "-3")], cfg) == []  # still cooling down: no noise
    batch = only(run(alerter, [pnl(16, "-4")], cfg))
    assert isinstance(batch, AlertRaised) and batch.kind == "trades_executed"
    assert [t["symbol"] for t in batch.context["trades"]] == ["MSFT"]
    assert run(alerter, [pnl(40, "-5")], cfg) == []  # nothing left pending


def test_alerts_disabled() -> None:
    out = only(run(Alerter(), [crash(0)], settings(enabled=False)))
    assert isinstance(out, AlertSuppressed) and out.rule == "disabled"


def test_stop_alert_respects_notify_via_email() -> None:
    done = make(EmergencyStopCompleted, 1, session_date=DAY, orders_canceled=0,
                realized_pnl_after=Decimal(-2000))
    alerter = Alerter()
    cfg = settings(notify=False)
    out = only(run(alerter, [done], cfg))
    assert isinstance(out, AlertSuppressed) and out.rule == "disabled"
    assert isinstance(only(run(alerter, [crash(2)], cfg)), AlertRaised)


# --- restart -------------------------------------------------------------------------------


def test_limits_rebuild_from_the_log_after_a_restart() -> None:
    cfg = settings(cooldown=15, cap=3)
    before = Alerter()
    history: list[Event] = []
    for ev in [session_started(0), warning(1), warning(2), crash(3), *entry("AAPL", 4, "1")]:
        history.append(ev)
        history += before.handle(ev, cfg)
    assert any(isinstance(e, AlertSuppressed) for e in history)

    # What the log hands back: JSON on the wire, decoded.
    replayed = [decode_event(e.to_json()) for e in history]
    assert replayed == history
    after = Alerter()
    after.rebuild(replayed)

    for ev in [warning(10), session_started(30), pnl(30, "1"), warning(61.5)]:
        assert after.handle(ev, cfg) == before.handle(ev, cfg)


def test_a_redelivered_trigger_decides_nothing_new() -> None:
    cfg = settings()
    alerter = Alerter()
    w = warning(0)
    assert isinstance(only(alerter.handle(w, cfg)), AlertRaised)
    assert alerter.handle(w, cfg) == []
    # And a fresh process deciding the same trigger emits the same ids (the log dedupes).
    assert Alerter().handle(w, cfg) == Alerter().handle(w, cfg)


def test_an_alert_in_the_log_is_not_decided_again_even_without_its_trigger() -> None:
    cfg = settings()
    w = warning(0)
    decided = Alerter().handle(w, cfg)
    # A restart that rebuilt from the alert stream only, then sees the trigger again.
    after = Alerter()
    after.rebuild(decided)
    assert after.handle(w, cfg) == []


def test_a_fill_translated_twice_counts_once_in_the_round_trips() -> None:
    # Issue 14, item 8: the alerter's round trips follow the shared P&L maths and drop a fill
    # already seen (same order id and fill id, another event id: a reconnect's translation).
    alerter = Alerter()
    events: list[Event] = [session_started(), *entry("AAPL", 5, "150.00")]
    exit_ = exit_fill("AAPL", 40, "153.00")
    again = exit_.model_copy(update={"event_id": uuid4()})
    later = [*entry("AAPL", 60, "150.00"), exit_fill("AAPL", 70, "151.00")]
    run(alerter, [*events, exit_, again, *later], settings(cooldown=0))
    # counted twice, the copy would open a phantom short that the next entry "closes"
    assert alerter.day.round_trips == [Decimal("30.00"), Decimal("10.00")]
