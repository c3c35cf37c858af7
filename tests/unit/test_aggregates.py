"""The Order and TradingDay aggregates: their life cycles, the transitions they refuse,
and that their events replay and serialise (pure: no I/O, no clock)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

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
from domain.values import Side

T0 = datetime(2025, 3, 3, 14, 31, tzinfo=UTC)  # 09:31 in New York
SESSION = date(2025, 3, 3)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def approved(qty: str = "10") -> Order:
    return Order.approve(order_id="ord-1", client_order_id="cid-1", symbol="AAPL",
                         side=Side.BUY, qty=Decimal(qty), at=T0)


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
        assert order.fill_ids == ["f-1", "f-2"]

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
    def test_a_fill_before_submission_is_refused_with_a_clear_message(self) -> None:
        with pytest.raises(InvalidTransition) as e:
            approved().fill(fill_id="f-1", qty=Decimal(1), price=Decimal(100), at=at(1))
        assert str(e.value) == (
            "order ord-1: cannot fill when approved "
            "(allowed when submitted or partially_filled)"
        )
        assert isinstance(e.value, CatalystError)

    def test_an_order_is_submitted_once(self) -> None:
        with pytest.raises(InvalidTransition, match="cannot submit when submitted"):
            submitted().submit(broker_order_id="brk-2", at=at(2))

    def test_a_partially_filled_order_is_not_rejected(self) -> None:
        order = submitted()
        order.fill(fill_id="f-1", qty=Decimal(1), price=Decimal(100), at=at(2))
        with pytest.raises(InvalidTransition, match="cannot reject when partially_filled"):
            order.reject(code="x", message="y", at=at(3))

    @pytest.mark.parametrize("end", ["filled", "canceled", "rejected"])
    @pytest.mark.parametrize("command", ["submit", "fill", "cancel", "reject"])
    def test_terminal_orders_refuse_everything(self, end: str, command: str) -> None:
        order = submitted("1")
        if end == "filled":
            order.fill(fill_id="f-1", qty=Decimal(1), price=Decimal(100), at=at(2))
        elif end == "canceled":
            order.cancel(reason="r", at=at(2))
        else:
            order.reject(code="c", message="m", at=at(2))
        calls = {
            "submit": lambda: order.submit(broker_order_id="b", at=at(3)),
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


class TestTradingDay:
    def test_the_session_date_is_new_yorks(self) -> None:
        # 01:00 UTC on the 4th is still the evening of the 3rd in New York.
        assert session_date_of(datetime(2025, 3, 4, 1, 0, tzinfo=UTC)) == date(2025, 3, 3)
        assert session_date_of(datetime(2025, 3, 4, 5, 0, tzinfo=UTC)) == date(2025, 3, 4)

    def test_a_day_opens_active_under_an_id_derived_from_its_date(self) -> None:
        day = opened()
        assert day.status is TradingStatus.ACTIVE and day.accepts_new_orders
        assert day.session_date == SESSION
        assert day.id == TradingDay.id_for(SESSION) != TradingDay.id_for(date(2025, 3, 4))

    def test_warned_then_halted_then_resumed(self) -> None:
        day = opened()
        day.warn(pnl=Decimal("-1500"), limit=Decimal("-2000"), at=at(60))
        assert day.status is TradingStatus.WARNED and day.accepts_new_orders
        day.halt(reason="daily loss limit", pnl=Decimal("-2001"), limit=Decimal("-2000"),
                 at=at(90))
        assert day.status is TradingStatus.HALTED and not day.accepts_new_orders
        assert day.halt_reason == "daily loss limit" and day.last_pnl == Decimal("-2001")
        day.resume(resumed_by="ops@desk", reason="limit raised", at=at(120))
        assert day.status is TradingStatus.RESUMED and day.accepts_new_orders
        day.halt(reason="again", pnl=Decimal("-2500"), limit=Decimal("-2000"), at=at(150))
        assert day.halts == 2

    def test_the_warning_is_issued_once_a_day(self) -> None:
        day = opened()
        day.warn(pnl=Decimal("-1500"), limit=Decimal("-2000"), at=at(60))
        with pytest.raises(InvalidTransition, match="cannot warn when warned"):
            day.warn(pnl=Decimal("-1600"), limit=Decimal("-2000"), at=at(61))
        day.halt(reason="limit", pnl=Decimal("-2000"), limit=Decimal("-2000"), at=at(90))
        day.resume(resumed_by="ops@desk", reason="r", at=at(100))
        with pytest.raises(InvalidTransition, match="already issued today"):
            day.warn(pnl=Decimal("-1600"), limit=Decimal("-2000"), at=at(101))

    def test_a_day_halted_without_a_warning_can_still_be_warned_after_resuming(self) -> None:
        day = opened()
        day.halt(reason="manual", pnl=Decimal(0), limit=Decimal("-2000"), at=at(10))
        day.resume(resumed_by="ops@desk", reason="r", at=at(20))
        day.warn(pnl=Decimal("-1500"), limit=Decimal("-2000"), at=at(30))
        assert day.status is TradingStatus.WARNED

    def test_refused_transitions(self) -> None:
        day = opened()
        with pytest.raises(InvalidTransition) as e:
            day.resume(resumed_by="ops@desk", reason="r", at=at(1))
        assert str(e.value) == (
            "trading day 2025-03-03: cannot resume when active (allowed when halted)"
        )
        day.halt(reason="limit", pnl=Decimal(-1), limit=Decimal(-1), at=at(2))
        with pytest.raises(InvalidTransition, match="cannot halt when halted"):
            day.halt(reason="limit", pnl=Decimal(-1), limit=Decimal(-1), at=at(3))
        with pytest.raises(InvalidTransition, match="cannot warn when halted"):
            day.warn(pnl=Decimal(-1), limit=Decimal(-1), at=at(3))
        with pytest.raises(ValueError, match="a person decides"):
            day.resume(resumed_by="", reason="r", at=at(4))

    def test_a_session_date_is_a_date_not_an_instant(self) -> None:
        with pytest.raises(TypeError, match="session_date_of"):
            TradingDay.open(session_date=T0, at=T0)  # type: ignore[arg-type]

    def test_events_replay_and_survive_the_default_transcoder(self) -> None:
        day = opened()
        day.warn(pnl=Decimal("-1500"), limit=Decimal("-2000"), at=at(60))
        day.halt(reason="limit", pnl=Decimal("-2000"), limit=Decimal("-2000"), at=at(90))
        day.resume(resumed_by="ops@desk", reason="r", at=at(100))
        events = day.collect_events()
        assert replay(events) == day
        m = mapper()
        for e in events:
            assert m.to_domain_event(m.to_stored_event(e)) == e
