"""The manual kill switch (POST /api/v1/emergency-stop) as the pure handlers see it: the
same EmergencyStopTriggered as the limit's, reason `manual`; it halts and the executor closes
everything, and it does not disarm the limit's own stop for the rest of the date."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from adapters.api.commands import manual_stop
from domain.events import EmergencyStopTriggered, OrderDenied
from handlers.executor import EmergencyClose, Executor
from handlers.risk_guard import RiskGuard
from tests.unit.risk_builders import D0, T0, at, pnl_changed, resumed, settings, signal

S = settings()


def stop_at(pnl: str) -> EmergencyStopTriggered:
    return manual_stop(at(5), "api:alice", S, Decimal(pnl), D0)


def test_a_manual_stop_is_the_limit_stop_with_reason_manual() -> None:
    ev = stop_at("12.50")
    assert (ev.reason, ev.triggered_by, ev.session_date, ev.causation_id) == (
        "manual", "api:alice", D0, None)
    assert ev.actions == S.emergency.model_dump()  # cancel all, close all, halt
    [cmd] = Executor().commands_for(ev, S)
    assert isinstance(cmd, EmergencyClose) and cmd.cancel_orders and cmd.close_positions


def test_it_halts_until_resumed() -> None:
    guard = RiskGuard()
    guard.handle(stop_at("0"), S)
    [denied] = guard.handle(signal("AAPL", "buy", 100, 98, 104, when=at(6)), S)
    assert isinstance(denied, OrderDenied) and denied.rule == "halted"


def test_the_limit_still_stops_after_a_manual_stop_and_a_resume() -> None:
    guard = RiskGuard()
    guard.handle(stop_at("-100"), S)
    guard.handle(resumed(at(10)), S)
    out = guard.handle(pnl_changed("-2000", when=at(20)), S)
    [limit_stop] = [e for e in out if isinstance(e, EmergencyStopTriggered)]
    assert limit_stop.reason != "manual" and limit_stop.pnl == Decimal("-2000")


def test_a_manual_stop_past_the_limit_is_the_days_stop() -> None:
    guard = RiskGuard()
    guard.handle(stop_at("-2100"), S)
    out = guard.handle(pnl_changed("-2200", when=at(20)), S)
    assert not [e for e in out if isinstance(e, EmergencyStopTriggered)]


def test_its_time_is_the_callers() -> None:
    now = datetime(2025, 11, 26, 15, 0, tzinfo=UTC)
    assert manual_stop(now, "api:bob", S, Decimal(0)).session_date.isoformat() == "2025-11-26"
    assert T0.tzinfo is UTC
