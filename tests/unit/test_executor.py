"""The executor's pure decisions: commands from events, max-hold exits from fills."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any
from uuid import uuid4

from config.settings import OrderExecution, Settings, TradingConfig, TradingSession
from domain.events import (
    BarReceived,
    EmergencyStopTriggered,
    Event,
    FlattenRequested,
    OrderApproved,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionCloseRequested,
    ScanRequested,
)
from domain.values import Bar, Side
from handlers.executor import (
    CloseAll,
    ClosePosition,
    DropOrder,
    EmergencyClose,
    Executor,
    SubmitOrder,
)

T0 = datetime(2025, 1, 6, 14, 30, tzinfo=UTC)  # 09:30 New York
SETTINGS = Settings()


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def envelope(cls: type[Event], minute: int = 0, **payload: Any) -> Any:
    return cls(
        event_id=uuid4(), type=cls.__name__, occurred_at=at(minute), correlation_id="s1",
        **payload,
    )


def approval(**kw: Any) -> OrderApproved:
    fields: dict[str, Any] = dict(
        order_id="o1", client_order_id="coid-1", signal_id="sig1", symbol="AAPL",
        side=Side.BUY, qty=D(10), entry=D(100), stop_loss=D(95), take_profit=D(110),
    )
    fields.update(kw)
    return envelope(OrderApproved, **fields)


def fill(minute: int, side: Side, qty: str, price: str, symbol: str = "AAPL",
         fee: str = "0") -> OrderFilled:
    return envelope(
        OrderFilled, minute, order_id="o1", client_order_id="coid-1", broker_order_id="b1",
        fill_id=str(uuid4()), symbol=symbol, side=side, qty=D(qty), price=D(price),
        filled_qty=D(qty), fee=D(fee),
    )


def scan(minute: int) -> ScanRequested:
    return envelope(ScanRequested, minute, session_id="s1", scan_number=minute)


def bar_event(minute: int) -> BarReceived:
    b = Bar(symbol="MSFT", timestamp=at(minute), open=D(1), high=D(1), low=D(1), close=D(1),
            volume=1)
    return envelope(BarReceived, minute, symbol="MSFT", bar=b)


def settings(max_hold: int = 180, brackets: bool = True) -> Settings:
    return Settings(
        trading=TradingConfig(
            trading_session=TradingSession(max_hold_time_minutes=max_hold),
            order_execution=OrderExecution(use_bracket_orders=brackets),
        )
    )


# --- commands ------------------------------------------------------------------------------


def test_an_approval_becomes_a_bracket_order_with_the_approvals_client_order_id() -> None:
    ev = approval()
    [cmd] = Executor().commands_for(ev, SETTINGS)
    assert cmd == SubmitOrder(
        cause=ev, order_id="o1", client_order_id="coid-1", symbol="AAPL", side=Side.BUY,
        qty=D(10), order_type="market", limit_price=None, stop_loss=D(95),
        take_profit=D(110),
    )


def test_no_bracket_when_the_approval_or_the_config_says_so() -> None:
    [cmd] = Executor().commands_for(approval(use_bracket=False), SETTINGS)
    assert (cmd.stop_loss, cmd.take_profit) == (None, None)  # type: ignore[union-attr]
    [cmd] = Executor().commands_for(approval(), settings(brackets=False))
    assert (cmd.stop_loss, cmd.take_profit) == (None, None)  # type: ignore[union-attr]


def test_a_limit_approval_is_a_limit_order_at_the_entry() -> None:
    [cmd] = Executor().commands_for(approval(order_type="limit", entry=D("99.5")), SETTINGS)
    assert (cmd.order_type, cmd.limit_price) == ("limit", D("99.5"))  # type: ignore[union-attr]


def stop(minute: int) -> EmergencyStopTriggered:
    return envelope(EmergencyStopTriggered, minute, session_date=date(2025, 1, 6),
                    pnl=D(-2000), limit=D(-2000), reason="daily loss limit")


def submitted(a: OrderApproved) -> OrderSubmitted:
    return envelope(OrderSubmitted, 1, order_id=a.order_id, client_order_id=a.client_order_id,
                    broker_order_id="b1", symbol=a.symbol, side=a.side, qty=a.qty,
                    order_type="market")


def test_an_approval_still_unsent_when_a_stop_is_recorded_is_dropped_not_sent() -> None:
    """The broker effect reads the log behind the handlers: by the time it reaches an
    approval, the executor may already have seen the emergency stop recorded after it."""
    ex = Executor()
    sent, unsent = approval(), approval(order_id="o2", client_order_id="coid-2")
    for ev in (sent, unsent, submitted(sent), stop(2)):
        ex.handle(ev, SETTINGS)
    assert ex.commands_for(unsent, SETTINGS) == [DropOrder(
        unsent, "an emergency stop was triggered before it was sent",
        Executor().commands_for(unsent, SETTINGS)[0])]  # type: ignore[arg-type]
    assert isinstance(ex.commands_for(sent, SETTINGS)[0], SubmitOrder)  # a redelivery: sent
    ex.handle(envelope(OrderRejected, 3, order_id="o2", client_order_id="coid-2",
                       symbol="AAPL", code="emergency_stop", message="x"), SETTINGS)
    assert ex.state.unsent == set() and ex.state.overtaken == set()


def test_an_approval_after_the_stop_is_the_risk_guards_to_refuse_not_the_executors() -> None:
    ex = Executor()
    later = approval()
    for ev in (stop(0), later):
        ex.handle(ev, SETTINGS)
    assert isinstance(ex.commands_for(later, SETTINGS)[0], SubmitOrder)


def test_close_and_flatten_requests_become_close_commands() -> None:
    ex = Executor()
    req = envelope(PositionCloseRequested, symbol="AAPL", reason="manual")
    assert ex.commands_for(req, SETTINGS) == [ClosePosition(req, "AAPL", "manual")]
    flat = envelope(FlattenRequested, session_id="s1", reason="market_close")
    assert ex.commands_for(flat, SETTINGS) == [CloseAll(flat, "market_close")]
    assert ex.commands_for(scan(0), SETTINGS) == []


def test_emergency_stop_follows_the_events_actions_and_carries_the_realized_pnl() -> None:
    ex = Executor()
    ex.handle(fill(0, Side.BUY, "10", "100"), SETTINGS)
    ex.handle(fill(5, Side.SELL, "10", "90"), SETTINGS)
    stop = envelope(
        EmergencyStopTriggered, 6, session_date=date(2025, 1, 6), pnl=D(-100),
        limit=D(-100), reason="daily loss limit",
        actions={"cancel_all_orders": False, "close_all_positions": True},
    )
    assert ex.commands_for(stop, SETTINGS) == [
        EmergencyClose(stop, date(2025, 1, 6), cancel_orders=False, close_positions=True,
                       realized_pnl_before=D(-100))
    ]
    bare = envelope(EmergencyStopTriggered, 6, session_date=date(2025, 1, 6), pnl=D(-1),
                    limit=D(-1), reason="x")
    [cmd] = ex.commands_for(bare, SETTINGS)
    assert (cmd.cancel_orders, cmd.close_positions) == (True, True)  # type: ignore[union-attr]


# --- positions and max hold ----------------------------------------------------------------


def test_positions_follow_fills_with_average_entry_and_realized_pnl_net_of_fees() -> None:
    ex = Executor()
    ex.handle(fill(0, Side.BUY, "10", "100", fee="1"), SETTINGS)
    ex.handle(fill(1, Side.BUY, "10", "110", fee="1"), SETTINGS)
    pos = ex.state.positions["AAPL"]
    assert (pos.qty, pos.avg_entry_price, pos.opened_at) == (D(20), D(105), at(0))
    ex.handle(fill(2, Side.SELL, "5", "120", fee="1"), SETTINGS)
    assert ex.state.positions["AAPL"].qty == D(15)
    assert ex.realized_pnl(date(2025, 1, 6)) == D(75) - 3


def test_the_session_date_is_new_yorks() -> None:
    ex = Executor()
    late = datetime(2025, 1, 7, 0, 30, tzinfo=UTC)  # 19:30 on the 6th in New York
    ex.handle(fill(0, Side.BUY, "1", "100", fee="1").model_copy(update={"occurred_at": late}),
              SETTINGS)
    assert ex.realized_pnl(date(2025, 1, 6)) == D(-1)


def test_max_hold_time_closes_a_position_once() -> None:
    ex = Executor()
    s = settings(max_hold=60)
    ex.handle(fill(0, Side.BUY, "10", "100"), s)
    assert ex.handle(scan(59), s) == []
    due = scan(60)
    [req] = ex.handle(due, s)
    assert isinstance(req, PositionCloseRequested)
    assert (req.symbol, req.reason, req.causation_id) == ("AAPL", "max_hold_time", due.event_id)
    assert req == ex_again_emits(due, s)  # same cause, same id
    assert ex.handle(scan(61), s) == []  # once per position
    assert ex.handle(bar_event(90), s) == []
    # Its ClosePosition comes when the request is read back from the log.
    assert ex.commands_for(req, s) == [ClosePosition(req, "AAPL", "max_hold_time")]


def ex_again_emits(cause: Event, s: Settings) -> Event:
    ex = Executor()
    ex.handle(fill(0, Side.BUY, "10", "100"), s)
    [out] = ex.handle(cause, s)
    return out


def test_bars_also_drive_max_hold_and_a_reopened_position_gets_a_new_clock() -> None:
    ex = Executor()
    s = settings(max_hold=30)
    ex.handle(fill(0, Side.BUY, "10", "100"), s)
    assert [e.symbol for e in ex.handle(bar_event(30), s)] == ["AAPL"]  # type: ignore[attr-defined]
    ex.handle(fill(31, Side.SELL, "10", "101"), s)
    assert "AAPL" not in ex.state.positions
    ex.handle(fill(40, Side.SELL, "5", "100"), s)  # a new (short) position
    assert ex.handle(bar_event(69), s) == []
    [again] = ex.handle(bar_event(70), s)
    assert again.symbol == "AAPL"  # type: ignore[attr-defined]


def test_flatten_and_emergency_mark_positions_as_being_closed() -> None:
    ex = Executor()
    s = settings(max_hold=30)
    ex.handle(fill(0, Side.BUY, "10", "100"), s)
    ex.handle(envelope(FlattenRequested, 10, session_id="s1", reason="market_close"), s)
    assert ex.handle(scan(40), s) == []


def test_a_rebuilt_executor_decides_like_the_original() -> None:
    s = settings(max_hold=30)
    history = [fill(0, Side.BUY, "10", "100", symbol="MSFT"), fill(1, Side.BUY, "5", "50")]
    live = Executor()
    for ev in history:
        live.handle(ev, s)
    rebuilt = Executor()
    rebuilt.rebuild(history)
    due = scan(31)
    out = live.handle(due, s)
    assert out == rebuilt.handle(due, s)
    assert [e.symbol for e in out] == ["AAPL", "MSFT"]  # type: ignore[attr-defined]
