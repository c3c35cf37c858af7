"""Test-data builders for fills, bars, signals and P&L events (deterministic ids)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from config.settings import (
    EmergencyActions,
    OrderExecution,
    RiskLimits,
    RiskParameters,
    Settings,
    TradingConfig,
)
from domain.events import (
    BarReceived,
    DailyPnLChanged,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    SignalGenerated,
    TradingResumed,
)
from domain.values import Bar, Side

# 2024-03-04 is a Monday; 14:30 UTC is 09:30 in New York (EST, UTC-5).
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
D0 = date(2024, 3, 4)
CORR = "session-test"
_ids = itertools.count(1)


def new_id() -> UUID:
    return uuid5(NAMESPACE_URL, f"catalyst-test:{next(_ids)}")


def D(x: Any) -> Decimal:  # noqa: N802 - reads like a literal
    return Decimal(str(x))


def at(minutes: float = 0, days: int = 0) -> datetime:
    return T0 + timedelta(days=days, minutes=minutes)


def fill(
    symbol: str, side: Side | str, qty: Any, price: Any, *, fee: Any = 0,
    when: datetime = T0, order_id: str | None = None, fill_id: str | None = None,
    partial: bool = False, leg: str | None = None, filled_qty: Any = None,
    client_order_id: str | None = None,
) -> OrderFilled | OrderPartiallyFilled:
    cls = OrderPartiallyFilled if partial else OrderFilled
    eid = new_id()
    order_id = order_id or f"ord-{eid.hex[:8]}"
    return cls(
        event_id=eid, type=cls.__name__, occurred_at=when, correlation_id=CORR,
        order_id=order_id, client_order_id=client_order_id or f"c-{order_id}",
        broker_order_id=f"b-{order_id}",
        fill_id=fill_id or f"f-{eid.hex[:8]}", symbol=symbol, side=Side(side), qty=D(qty),
        price=D(price), filled_qty=D(filled_qty if filled_qty is not None else qty),
        fee=D(fee), leg=leg,
    )


def bar(symbol: str, close: Any, when: datetime = T0) -> BarReceived:
    c = D(close)
    return BarReceived(
        event_id=new_id(), type="BarReceived", occurred_at=when, correlation_id=CORR,
        symbol=symbol,
        bar=Bar(symbol=symbol, timestamp=when, open=c, high=c, low=c, close=c, volume=1000),
    )


def signal(
    symbol: str, side: Side | str, entry: Any, stop: Any, target: Any, *,
    when: datetime = T0, use_bracket: bool = True,
) -> SignalGenerated:
    eid = new_id()
    return SignalGenerated(
        event_id=eid, type="SignalGenerated", occurred_at=when, correlation_id=CORR,
        signal_id=f"sig-{eid.hex[:8]}", symbol=symbol, side=Side(side), entry=D(entry),
        stop_loss=D(stop), take_profit=D(target), use_bracket=use_bracket,
    )


def pnl_changed(
    total: Any, session_date: date = D0, when: datetime | None = None, open_positions: int = 0,
) -> DailyPnLChanged:
    t = D(total)
    return DailyPnLChanged(
        event_id=new_id(), type="DailyPnLChanged",
        occurred_at=when or datetime.combine(session_date, T0.timetz()), correlation_id=CORR,
        session_date=session_date, realized=t, unrealized=Decimal(0), total=t,
        intraday_low=min(t, Decimal(0)), open_positions=open_positions,
    )


def canceled(
    order_id: str, symbol: str, when: datetime = T0, leg: str | None = None,
    client_order_id: str | None = None,
) -> OrderCanceled:
    extra = {"leg": leg} if leg else {}
    return OrderCanceled(
        event_id=new_id(), type="OrderCanceled", occurred_at=when, correlation_id=CORR,
        order_id=order_id, client_order_id=client_order_id or f"c-{order_id}",
        broker_order_id=f"b-{order_id}",
        symbol=symbol, **extra,
    )


def resumed(when: datetime = T0) -> TradingResumed:
    return TradingResumed(
        event_id=new_id(), type="TradingResumed", occurred_at=when, correlation_id=CORR,
        resumed_by="operator", reason="reviewed the stop",
    )


def settings(
    *, use_bracket_orders: bool = True, emergency: dict[str, bool] | None = None,
    entry_limit_slippage_pct: float = 0.0, **limits: Any,
) -> Settings:
    # Slippage 0 unless asked: the entry limit is then the signal's price, which keeps the
    # figures of tests about other rules round (tests/unit/test_limits_at_fill.py covers it).
    return Settings(
        risk=RiskParameters(
            risk_limits=RiskLimits(**limits),
            emergency_actions=EmergencyActions(**(emergency or {})),
        ),
        trading=TradingConfig(
            order_execution=OrderExecution(use_bracket_orders=use_bracket_orders,
                                           entry_limit_slippage_pct=entry_limit_slippage_pct)
        ),
    )
