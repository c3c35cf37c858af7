"""Average-cost P&L maths, figures worked by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.pnl import (
    Position,
    SessionDateCache,
    apply_fill,
    ny_day_bounds,
    ny_session_date,
    reward_risk,
)
from domain.values import Side
from tests.unit.risk_builders import D

BUY, SELL = Side.BUY, Side.SELL


def fills(*steps: tuple[Side, str, str] | tuple[Side, str, str, str]) -> Position:
    pos = Position()
    for step in steps:
        side, qty, price, *fee = step
        pos = apply_fill(pos, side, D(qty), D(price), D(fee[0]) if fee else D(0)).position
    return pos


def test_adding_to_a_long_moves_the_average():
    # 100 @ 10 + 100 @ 12: cost 1000 + 1200 = 2200 over 200 shares -> avg 11
    pos = fills((BUY, "100", "10"), (BUY, "100", "12"))
    assert pos.qty == 200
    assert pos.cost == D("2200")
    assert pos.avg_price == D("11")
    assert pos.side == "long"


def test_partial_close_of_a_long_realizes_at_the_average():
    pos = fills((BUY, "100", "10"), (BUY, "100", "12"))
    result = apply_fill(pos, SELL, D(50), D(15))
    # 50 x (15 - 11) = 200 realized; 150 left, cost 2200 - 50 x 11 = 1650, avg still 11
    assert result.realized == D(200)
    assert result.closed_qty == 50
    assert not result.opened
    assert result.position.qty == 150
    assert result.position.cost == D(1650)
    assert result.position.avg_price == D(11)
    # unrealized at 14: 150 x (14 - 11) = 450; total = 200 + 450 = 650
    assert result.position.unrealized(D(14)) == D(450)
    assert result.position.total(D(14)) == D(650)


def test_short_position_gains_when_price_falls():
    # sell 100 @ 50 -> qty -100, cost -5000; buy back 40 @ 45: 40 x (50 - 45) = 200
    pos = fills((SELL, "100", "50"))
    assert pos.side == "short" and pos.avg_price == D(50)
    result = apply_fill(pos, BUY, D(40), D(45))
    assert result.realized == D(200)
    assert result.position.qty == -60
    assert result.position.cost == D(-3000)  # -5000 x 60/100
    assert result.position.avg_price == D(50)
    # unrealized at 48: 60 x (50 - 48) = 120; at 53: 60 x (50 - 53) = -180
    assert result.position.unrealized(D(48)) == D(120)
    assert result.position.unrealized(D(53)) == D(-180)


def test_flip_from_long_to_short_through_zero():
    # long 100 @ 10, sell 150 @ 12: closes 100 for 100 x 2 = 200, opens short 50 @ 12
    pos = fills((BUY, "100", "10"))
    result = apply_fill(pos, SELL, D(150), D(12))
    assert result.realized == D(200)
    assert result.closed_qty == 100
    assert result.opened
    assert result.position.qty == -50
    assert result.position.avg_price == D(12)
    assert result.position.realized == D(200)


def test_flip_from_short_to_long():
    # short 30 @ 20, buy 50 @ 22: closes 30 for 30 x (20 - 22) = -60, opens long 20 @ 22
    result = apply_fill(fills((SELL, "30", "20")), BUY, D(50), D(22))
    assert result.realized == D(-60)
    assert result.position.qty == 20
    assert result.position.avg_price == D(22)


def test_full_close_leaves_a_flat_position_with_its_realized_pnl():
    pos = fills((BUY, "10", "100"), (SELL, "10", "97.5"))
    # 10 x (97.5 - 100) = -25
    assert pos.is_flat and pos.side == "flat"
    assert pos.realized == D(-25)
    assert pos.cost == 0
    assert pos.avg_price is None


def test_fees_are_kept_apart_from_the_average_price():
    # buy 100 @ 10 fee 1.00, sell 100 @ 11 fee 1.00: price P&L 100, fees 2, net 98
    pos = fills((BUY, "100", "10", "1.00"), (SELL, "100", "11", "1.00"))
    assert pos.realized == D(100)
    assert pos.fees == D("2.00")
    assert pos.net_realized == D(98)
    # an open position's fee counts in total at once: 100 @ 10 fee 0.50, mark 10 -> -0.50
    assert fills((BUY, "100", "10", "0.50")).total(D(10)) == D("-0.50")


def test_uneven_partial_closes_add_up_exactly():
    # buy 1 @ 10.00 and 2 @ 10.01: cost 30.02, avg 10.00666...
    pos = fills((BUY, "1", "10.00"), (BUY, "2", "10.01"))
    first = apply_fill(pos, SELL, D(1), D(11))
    # a third of the cost, rounded to 1e-12: 10.006666666667; realized 11 - that
    assert first.realized == D("0.993333333333")
    second = apply_fill(first.position, SELL, D(2), D(11))
    # the rest of the cost (20.013333333333) goes with the last shares
    assert second.realized == D("1.986666666667")
    # together exactly 3 x 11 - 30.02 = 2.98, nothing lost to rounding
    assert second.position.realized == D("2.98")
    assert second.position.cost == 0


def test_fractional_quantities():
    # 0.5 @ 100 + 1.5 @ 104: cost 50 + 156 = 206 over 2 -> avg 103; sell 0.25 @ 107 -> 1.00
    pos = fills((BUY, "0.5", "100"), (BUY, "1.5", "104"))
    assert pos.avg_price == D(103)
    assert apply_fill(pos, SELL, D("0.25"), D(107)).realized == D("1.00")


@pytest.mark.parametrize("qty, price", [("0", "10"), ("-1", "10"), ("1", "0")])
def test_fill_must_have_positive_quantity_and_price(qty, price):
    with pytest.raises(ValueError):
        apply_fill(Position(), BUY, D(qty), D(price))


def test_rebased_position_starts_a_new_day_at_the_mark():
    pos = fills((BUY, "100", "10", "1"), (SELL, "50", "12"))
    day2 = pos.rebased(D("11.5"))
    # 50 shares carried at 11.5: no realized, no fees, unrealized 0 at 11.5
    assert (day2.qty, day2.cost, day2.realized, day2.fees) == (50, D(575), 0, 0)
    assert day2.unrealized(D(12)) == D(25)  # 50 x (12 - 11.5)


def test_reward_risk():
    # long 100, stop 98, target 106: 6 / 2 = 3
    assert reward_risk(BUY, D(100), D(98), D(106)) == 3
    # short 100, stop 102, target 94: 6 / 2 = 3
    assert reward_risk(SELL, D(100), D(102), D(94)) == 3
    # target on the wrong side: negative
    assert reward_risk(BUY, D(100), D(98), D(99)) == D("-0.5")
    # stop on the wrong side: no ratio
    assert reward_risk(BUY, D(100), D(101), D(106)) is None
    assert reward_risk(SELL, D(100), D(100), D(94)) is None


def test_session_date_is_the_new_york_calendar_date():
    # EST (UTC-5): 04:59 UTC on 4 March is 23:59 on 3 March in New York
    assert ny_session_date(datetime(2024, 3, 4, 4, 59, tzinfo=UTC)) == date(2024, 3, 3)
    assert ny_session_date(datetime(2024, 3, 4, 5, 0, tzinfo=UTC)) == date(2024, 3, 4)
    # EDT (UTC-4): 03:59 UTC on 1 July is 23:59 on 30 June
    assert ny_session_date(datetime(2024, 7, 1, 3, 59, tzinfo=UTC)) == date(2024, 6, 30)
    assert ny_session_date(datetime(2024, 7, 1, 4, 0, tzinfo=UTC)) == date(2024, 7, 1)


def test_day_bounds_follow_daylight_saving():
    # 10 March 2024 springs forward: the New York day is 23 hours long
    start, end = ny_day_bounds(date(2024, 3, 10))
    assert start == datetime(2024, 3, 10, 5, 0, tzinfo=UTC)
    assert end == datetime(2024, 3, 11, 4, 0, tzinfo=UTC)
    # 3 November 2024 falls back: 25 hours
    start, end = ny_day_bounds(date(2024, 11, 3))
    assert end - start == timedelta(hours=25)


def test_session_date_cache_agrees_with_the_direct_conversion():
    cache = SessionDateCache()
    t = datetime(2024, 3, 9, 0, 0, tzinfo=UTC)
    for _ in range(24 * 6):  # every 25 minutes over the DST weekend, back and forth
        t += timedelta(minutes=25)
        assert cache.date_of(t) == ny_session_date(t)
        back = t - timedelta(hours=7)
        assert cache.date_of(back) == ny_session_date(back)


def test_session_date_cache_agrees_whatever_utc_tzinfo_the_times_carry() -> None:
    """Times decoded from JSON carry pydantic's own UTC tzinfo, times made in Python carry
    datetime.UTC; the cache keeps its bounds in the events' tzinfo, same dates either way."""
    from domain.pnl import ny_session_date
    from domain.values import Bar

    cache = SessionDateCache()
    start = datetime(2025, 11, 2, 3, 0, tzinfo=UTC)  # around a DST change and midnights
    for i in range(0, 72 * 60, 17):
        t = start + timedelta(minutes=i)
        decoded = Bar.model_validate_json(
            f'{{"symbol":"A","timestamp":"{t.isoformat().replace("+00:00", "Z")}",'
            '"open":"1","high":"1","low":"1","close":"1","volume":1}').timestamp
        assert decoded.tzinfo is not UTC
        for ts in (decoded, t) if i % 2 else (t, decoded):
            assert cache.date_of(ts) == ny_session_date(t)
