"""The Order and TradingDay aggregates: their life cycles, the transitions they refuse,
that their events replay and serialise (pure: no I/O, no clock), and the mapping from our
domain events that makes them the risk guard's state."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from domain.aggregate_state import Orders, TradingDays
from domain.aggregates import (
    InvalidOrderFill,
    InvalidTransition,
    Order,
    OrderStatus,
    TradingDay,
    TradingStatus,
    session_date_of,
)
from domain.errors import CatalystError
from domain.events import (
    DailyLossWarningIssued,
    EmergencyStopTriggered,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderSubmitted,
    TradingResumed,
)
from domain.values import Side

T0 = datetime(2025, 3, 3, 14, 31, tzinfo=UTC)  # 09:31 in New York
SESSION = date(2025, 3, 3)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def approved(qty: str = "10") -> Order:
    return Order.approve(order_id="ord-1", client_order_id="cid-1", symbol="AAPL",
                         side=Side.BUY, qty=Decimal(qty), price=Decimal("100.50"),
                         stop_loss=Decimal("98"), at=T0)


def submitted(qty: str = "10") -> Order:
    order = approved(qty)
    order.submit(broker_order_id="brk-1", legs=["brk-1-sl", "brk-1-tp"], at=at(1))
    return order


def replay(events: Any) -> Any:
    aggregate = None
    for e in events:
        aggregate = e.mutate(aggregate)
    return aggregate


def mapper() -> Mapper[Any]:
    transcoder = JSONTranscoder()
    for t in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):  # as an Application registers
        transcoder.register(t)
    return Mapper(transcoder=transcoder)


# --- order -------------------------------------------------------------------------------


class TestOrderLifeCycle:
    def test_an_approved_order_carries_our_ids_and_the_instant_of_approval(self) -> None:
        order = approved()
        assert order.status is OrderStatus.APPROVED
        assert (order.order_id, order.client_order_id) == ("ord-1", "cid-1")
        assert order.broker_order_id is None
        assert order.side is Side.BUY and order.qty == Decimal(10)
        assert order.version == 1 and order.created_on == T0
        assert order.id == Order.id_for("ord-1")  # found again without a lookup table

    def test_submission_records_the_brokers_ids(self) -> None:
        order = submitted()
        assert order.status is OrderStatus.SUBMITTED
        assert order.broker_order_id == "brk-1"
        assert order.legs == ["brk-1-sl", "brk-1-tp"]
        assert order.modified_on == at(1)

    def test_fills_go_partially_filled_then_filled_with_an_average_price(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(4), price=Decimal("100.00"), at=at(2))
        assert order.status is OrderStatus.PARTIALLY_FILLED
        assert order.remaining_qty == Decimal(6)
        order.fill(fill_id="f-2", qty=Decimal(6), price=Decimal("101.00"), at=at(3),
                   fee=Decimal("0.02"))
        assert order.status is OrderStatus.FILLED and order.is_terminal
        assert order.filled_qty == Decimal(10)
        assert order.avg_fill_price == Decimal("100.60")
        assert order.fees == Decimal("0.02")
        assert order.fill_ids == {"f-1", "f-2"}

    def test_a_redelivered_fill_changes_nothing(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(4), price=Decimal(100), at=at(2))
        version = order.version
        order.fill(fill_id="f-1", qty=Decimal(4), price=Decimal(100), at=at(2))
        assert order.version == version and order.filled_qty == Decimal(4)

    def test_a_fill_beyond_the_ordered_quantity_is_refused(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(8), price=Decimal(100), at=at(2))
        with pytest.raises(InvalidOrderFill, match="would fill 11 of 10"):
            order.fill(fill_id="f-2", qty=Decimal(3), price=Decimal(100), at=at(3))
        assert order.filled_qty == Decimal(8)

    @pytest.mark.parametrize("field", ["qty", "price"])
    def test_fills_need_a_positive_quantity_and_price(self, field: str) -> None:
        kwargs = {"qty": Decimal(1), "price": Decimal(100), field: Decimal(0)}
        with pytest.raises(ValueError, match="must be positive"):
            submitted().fill(fill_id="f-1", at=at(2), **kwargs)

    def test_cancel_keeps_what_was_filled(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(4), price=Decimal(100), at=at(2))
        order.cancel(reason="end of day", at=at(3))
        assert order.status is OrderStatus.CANCELED and order.is_terminal
        assert order.filled_qty == Decimal(4) and order.reason == "end of day"

    def test_an_approved_order_can_be_canceled_before_it_is_sent(self) -> None:
        order = approved()
        order.cancel(reason="emergency stop", at=at(1))
        assert order.status is OrderStatus.CANCELED

    @pytest.mark.parametrize("make", [approved, submitted])
    def test_the_broker_can_reject_before_or_after_accepting(self, make: Any) -> None:
        order = make()
        order.reject(code="40310000", message="insufficient buying power", at=at(2))
        assert order.status is OrderStatus.REJECTED
        assert order.reason == "40310000: insufficient buying power"


class TestOrderRefusals:
    def test_a_fill_of_a_rejected_order_is_refused_with_a_clear_message(self) -> None:
        order = approved()
        order.reject(code="40310000", message="insufficient buying power", at=at(1))
        with pytest.raises(InvalidTransition) as e:
            order.fill(fill_id="f-1", qty=Decimal(1), price=Decimal(100), at=at(2))
        assert str(e.value) == (
            "order ord-1: cannot fill when rejected "
            "(allowed when approved or submitted or partially_filled)"
        )
        assert isinstance(e.value, CatalystError)

    def test_a_fill_recorded_before_its_submission_is_taken(self) -> None:
        # The submit call and the update stream are two sources; the log may hold the
        # stream's fill first. The late submission then only adds the broker's ids.
        order = approved()
        order.fill(fill_id="f-1", qty=Decimal(10), price=Decimal(100), at=at(1),
                   complete=True)
        order.submit(broker_order_id="brk-1", at=at(2))
        assert order.status is OrderStatus.FILLED and order.broker_order_id == "brk-1"

    def test_an_order_is_submitted_once(self) -> None:
        order = submitted()
        order.submit(broker_order_id="brk-1", at=at(2))  # the same submission: nothing
        assert order.version == 2
        with pytest.raises(InvalidTransition, match="already at the broker as brk-1"):
            order.submit(broker_order_id="brk-2", at=at(2))

    def test_a_partially_filled_order_is_not_rejected(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(1), price=Decimal(100), at=at(2))
        with pytest.raises(InvalidTransition, match="cannot reject when partially_filled"):
            order.reject(code="x", message="y", at=at(3))

    @pytest.mark.parametrize("end", ["filled", "canceled", "expired", "rejected"])
    @pytest.mark.parametrize("command", ["fill", "cancel", "reject"])
    def test_finished_orders_refuse_every_change(self, end: str, command: str) -> None:
        order = submitted("1")
        if end == "filled":
            order.fill(fill_id="f-1", qty=Decimal(1), price=Decimal(100), at=at(2))
        elif end in ("canceled", "expired"):
            order.cancel(reason=end, at=at(2))
        else:
            order.reject(code="c", message="m", at=at(2))
        assert order.status == end and order.is_terminal
        calls = {
            "fill": lambda: order.fill(fill_id="f-9", qty=Decimal(1), price=Decimal(1),
                                       at=at(3)),
            "cancel": lambda: order.cancel(reason="r", at=at(3)),
            "reject": lambda: order.reject(code="c", message="m", at=at(3)),
        }
        with pytest.raises(InvalidTransition, match=f"cannot {command} when {end}"):
            calls[command]()

    def test_time_must_carry_a_timezone(self) -> None:
        with pytest.raises(ValueError, match="timezone"):
            approved().submit(broker_order_id="b", at=datetime(2025, 3, 3, 9, 31))

    def test_an_order_needs_a_positive_quantity(self) -> None:
        with pytest.raises(ValueError, match="qty must be positive"):
            approved("0")


class TestOrderEvents:
    def test_replaying_the_events_rebuilds_the_same_order(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(4), price=Decimal("100.10"), at=at(2))
        events = order.collect_events()
        assert [type(e).__name__ for e in events] == ["Approved", "Submitted", "Filled"]
        assert [e.timestamp for e in events] == [T0, at(1), at(2)]
        assert replay(events) == order

    def test_every_event_survives_the_default_transcoder(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(4), price=Decimal("100.10"), at=at(2))
        order.cancel(reason="r", at=at(3))
        other = approved()
        other.reject(code="c", message="m", at=at(1))
        m = mapper()
        for e in [*order.collect_events(), *other.collect_events()]:
            assert m.to_domain_event(m.to_stored_event(e)) == e


# --- trading day -------------------------------------------------------------------------


def opened() -> TradingDay:
    return TradingDay.open(session_date=SESSION, at=T0)


def stop(day: TradingDay, minutes: int, *, reason: str = "limit", pnl: str = "-2000",
         at_limit: bool = True, halts: bool = True, until_resumed: bool = True) -> None:
    day.stop(reason=reason, pnl=Decimal(pnl), limit=Decimal(2000), at=at(minutes),
             at_limit=at_limit, halts=halts, until_resumed=until_resumed)


class TestTradingDay:
    def test_the_session_date_is_new_yorks(self) -> None:
        # 01:00 UTC on the 4th is still the evening of the 3rd in New York.
        assert session_date_of(datetime(2025, 3, 4, 1, 0, tzinfo=UTC)) == date(2025, 3, 3)
        assert session_date_of(datetime(2025, 3, 4, 5, 0, tzinfo=UTC)) == date(2025, 3, 4)

    def test_a_day_opens_active_under_an_id_derived_from_its_date(self) -> None:
        day = opened()
        assert day.status is TradingStatus.ACTIVE and not day.halted
        assert day.session_date == SESSION
        assert day.id == TradingDay.id_for(SESSION) != TradingDay.id_for(date(2025, 3, 4))

    def test_warned_then_halted_then_resumed(self) -> None:
        day = opened()
        day.warn(pnl=Decimal("-1500"), limit=Decimal("2000"), at=at(60))
        assert day.status is TradingStatus.WARNED and not day.halted
        stop(day, 90, reason="daily loss limit", pnl="-2001")
        assert day.status is TradingStatus.HALTED and day.halted and day.limit_stopped
        assert day.halt_reason == "daily loss limit"
        day.resume(resumed_by="ops@desk", reason="limit raised", at=at(120))
        assert day.status is TradingStatus.RESUMED and not day.until_resumed
        assert day.limit_stopped  # the limit's stop stays fired for the date
        stop(day, 150, reason="manual", at_limit=False)
        assert day.stops == 2 and day.halted

    def test_a_stop_that_does_not_halt_still_counts_as_the_limits_stop(self) -> None:
        day = opened()
        stop(day, 10, halts=False)
        assert day.limit_stopped and not day.halted and day.status is TradingStatus.ACTIVE

    def test_the_warning_is_issued_once_a_day(self) -> None:
        day = opened()
        day.warn(pnl=Decimal("-1500"), limit=Decimal("2000"), at=at(60))
        with pytest.raises(InvalidTransition, match="cannot warn when warned"):
            day.warn(pnl=Decimal("-1600"), limit=Decimal("2000"), at=at(61))
        stop(day, 90)
        day.resume(resumed_by="ops@desk", reason="r", at=at(100))
        with pytest.raises(InvalidTransition, match="already issued today"):
            day.warn(pnl=Decimal("-1600"), limit=Decimal("2000"), at=at(101))

    def test_a_halted_day_can_still_be_warned(self) -> None:
        # the kill switch first, then the loss reaches the warning threshold
        day = opened()
        stop(day, 10, reason="manual", pnl="0", at_limit=False)
        day.warn(pnl=Decimal("-1500"), limit=Decimal("2000"), at=at(30))
        assert day.warned and day.status is TradingStatus.HALTED

    def test_only_a_halted_day_resumes(self) -> None:
        day = opened()
        with pytest.raises(InvalidTransition) as e:
            day.resume(resumed_by="ops@desk", reason="r", at=at(1))
        assert str(e.value) == (
            "trading day 2025-03-03: cannot resume when active (allowed when halted)"
        )

    def test_a_session_date_is_a_date_not_an_instant(self) -> None:
        with pytest.raises(TypeError, match="session_date_of"):
            TradingDay.open(session_date=T0, at=T0)  # type: ignore[arg-type]

    def test_events_replay_and_survive_the_default_transcoder(self) -> None:
        day = opened()
        day.warn(pnl=Decimal("-1500"), limit=Decimal("2000"), at=at(60))
        stop(day, 90)
        day.resume(resumed_by="ops@desk", reason="r", at=at(100))
        events = day.collect_events()
        assert replay(events) == day
        m = mapper()
        for e in events:
            assert m.to_domain_event(m.to_stored_event(e)) == e


# --- the mapping from the log --------------------------------------------------------------


def _ev(cls: Any, minutes: int, **fields: Any) -> Any:
    return cls(event_id=uuid4(), type=cls.__name__, occurred_at=at(minutes),
               correlation_id="c", **fields)


def approval(cid: str = "cid-1", qty: str = "10") -> OrderApproved:
    return _ev(OrderApproved, 0, order_id="ord-1", client_order_id=cid, signal_id="s",
               symbol="AAPL", side=Side.BUY, qty=Decimal(qty), entry=Decimal(100),
               limit_price=Decimal(101), stop_loss=Decimal(98))


def fill_event(qty: str, fill_id: str, *, complete: bool = False, leg: str | None = None,
               cid: str = "cid-1") -> Any:
    cls = OrderFilled if complete else OrderPartiallyFilled
    return _ev(cls, 5, order_id="ord-1", client_order_id=cid, broker_order_id="b",
               fill_id=fill_id, symbol="AAPL", side=Side.BUY, qty=Decimal(qty),
               price=Decimal(100), filled_qty=Decimal(qty), leg=leg)


def cancel_event(reason: str = "canceled", cid: str = "cid-1") -> OrderCanceled:
    return _ev(OrderCanceled, 9, order_id="ord-1", client_order_id=cid, broker_order_id="b",
               symbol="AAPL", reason=reason)


class TestOrdersFromTheLog:
    def test_an_approval_opens_an_order_at_its_limit_with_its_stop(self) -> None:
        orders = Orders()
        orders.apply(approval())
        [order] = orders.working()
        assert (order.price, order.stop_loss, order.created_on) == (
            Decimal(101), Decimal(98), T0)
        assert order.stop_risk == Decimal(30)

    def test_fills_then_an_expiry_end_it(self) -> None:
        orders = Orders()
        orders.apply(approval())
        orders.apply(_ev(OrderSubmitted, 1, order_id="ord-1", client_order_id="cid-1",
                         broker_order_id="b", symbol="AAPL", side=Side.BUY,
                         qty=Decimal(10), order_type="limit"))
        orders.apply(fill_event("4", "f-1"))
        order = orders.get("cid-1")
        assert order is not None and order.at_broker
        assert order.status is OrderStatus.PARTIALLY_FILLED and order.remaining_qty == 6
        orders.apply(cancel_event("expired"))
        assert order.status is OrderStatus.EXPIRED and list(orders.working()) == []

    def test_legs_and_orders_never_approved_are_not_ours(self) -> None:
        orders = Orders()
        orders.apply(approval())
        orders.apply(fill_event("10", "f-1", complete=True))
        assert orders.apply(fill_event("10", "leg-f", complete=True, leg="take_profit")) is None
        assert orders.apply(fill_event("5", "x", cid="a-close-order")) is None
        assert orders.refusals.count == 0

    def test_a_bad_broker_update_is_refused_counted_and_the_state_kept(self) -> None:
        orders = Orders()
        orders.apply(approval())
        orders.apply(cancel_event())
        bad = fill_event("3", "late")
        assert orders.apply(bad) is None
        order = orders.get("cid-1")
        assert order is not None and order.status is OrderStatus.CANCELED
        assert order.filled_qty == 0
        assert orders.refusals.count == 1
        assert orders.refusals.latest[-1] == (
            f"OrderPartiallyFilled {bad.event_id}: order ord-1: cannot fill when canceled "
            "(allowed when approved or submitted or partially_filled)")


def risk_event(cls: Any, minutes: int, **fields: Any) -> Any:
    return _ev(cls, minutes, session_date=SESSION, pnl=Decimal("-2000"),
               limit=Decimal(2000), **fields)


class TestTradingDaysFromTheLog:
    def test_a_halt_until_resumed_holds_later_dates_until_trading_resumes(self) -> None:
        days = TradingDays()
        days.apply(risk_event(EmergencyStopTriggered, 5, reason="limit", actions={}))
        assert days.limit_stopped(SESSION) and days.until_resumed()
        assert days.halted_on(SESSION + timedelta(days=3))
        assert days.halted_since() == SESSION
        days.apply(_ev(TradingResumed, 9, resumed_by="ops", reason="reviewed"))
        assert not days.halted_on(SESSION) and days.halted_since() is None
        assert days.limit_stopped(SESSION)

    def test_a_halt_for_the_date_ends_with_it(self) -> None:
        days = TradingDays()
        days.apply(risk_event(EmergencyStopTriggered, 5, reason="limit",
                              actions={"require_manual_restart": False}))
        assert days.halted_on(SESSION) and not days.until_resumed()
        assert not days.halted_on(SESSION + timedelta(days=1))

    def test_a_second_warning_for_a_date_is_refused_and_counted(self) -> None:
        days = TradingDays()
        warning = {"pct_used": 0.8}
        days.apply(risk_event(DailyLossWarningIssued, 1, **warning))
        days.apply(risk_event(DailyLossWarningIssued, 2, **warning))
        assert days.warned(SESSION) and days.refusals.count == 1
