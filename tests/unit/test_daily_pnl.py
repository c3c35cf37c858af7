"""Daily P&L per New York session date, figures worked by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime

from config.settings import Settings
from domain.events import DailyPnLChanged
from domain.values import derive_id
from projections.daily_pnl import DailyPnLProjection
from tests.unit.risk_builders import D0, D, at, bar, fill

S = Settings()


def one(proj: DailyPnLProjection, ev) -> DailyPnLChanged:
    (out,) = proj.handle(ev, S)
    assert isinstance(out, DailyPnLChanged)
    return out


def test_a_day_of_trading_in_one_symbol():
    proj = DailyPnLProjection()
    # no position: bars change nothing
    assert proj.handle(bar("AAPL", "10", at(0)), S) == []

    # buy 100 @ 10 with a 1.00 fee: total = -1.00 (the fee), unrealized 0 at mark 10
    buy = fill("AAPL", "buy", 100, "10", fee="1.00", when=at(1))
    ev = one(proj, buy)
    assert ev.session_date == D0
    assert (ev.realized, ev.unrealized, ev.total, ev.fees) == (D("-1"), 0, D("-1"), D("1"))
    assert ev.intraday_low == D("-1") and ev.open_positions == 1
    assert ev.by_symbol == {"AAPL": "-1.00"}
    # its id derives from the fill that caused it
    assert ev.event_id == derive_id(buy.event_id, "daily_pnl:0")
    assert ev.causation_id == buy.event_id and ev.occurred_at == buy.occurred_at

    # mark 10.50: unrealized 100 x 0.50 = 50, total 49
    ev = one(proj, bar("AAPL", "10.50", at(2)))
    assert (ev.unrealized, ev.total, ev.intraday_low) == (D(50), D(49), D(-1))

    # another symbol's bar and an unchanged mark: no event
    assert proj.handle(bar("MSFT", "400", at(2)), S) == []
    assert proj.handle(bar("AAPL", "10.50", at(3)), S) == []

    # mark 9.80: unrealized 100 x -0.20 = -20, total -21, the new low
    ev = one(proj, bar("AAPL", "9.80", at(4)))
    assert (ev.total, ev.intraday_low) == (D(-21), D(-21))

    # sell 60 @ 9.90 fee 0.60: realized 60 x (9.90 - 10) = -6, fees 1.60 -> -7.60;
    # 40 left marked at the fill price: 40 x -0.10 = -4; total -11.60, low stays -21
    ev = one(proj, fill("AAPL", "sell", 60, "9.90", fee="0.60", when=at(5)))
    assert (ev.realized, ev.unrealized, ev.total) == (D("-7.60"), D(-4), D("-11.60"))
    assert (ev.fees, ev.intraday_low) == (D("1.60"), D(-21))

    # sell 40 @ 10.20 fee 0.40: realized 40 x 0.20 = +8 -> -6 + 8 - 2.00 fees = 0.00
    # (cash check: -1000 + 594 + 408 = +2, minus 2.00 of fees = 0)
    ev = one(proj, fill("AAPL", "sell", 40, "10.20", fee="0.40", when=at(6)))
    assert (ev.realized, ev.unrealized, ev.total, ev.open_positions) == (0, 0, 0, 0)
    assert ev.by_symbol == {"AAPL": "0.00"} and ev.intraday_low == D(-21)
    # flat again: bars are ignored
    assert proj.handle(bar("AAPL", "50", at(7)), S) == []


def test_shorts_and_several_symbols():
    proj = DailyPnLProjection()
    proj.handle(fill("TSLA", "sell", 10, "200", when=at(1)), S)  # total 0: nothing to say
    # TSLA short 10 @ 200, mark 203: 10 x (200 - 203) = -30
    ev = one(proj, bar("TSLA", "203", at(2)))
    assert ev.total == D(-30)
    # NVDA long 5 @ 100 (fee 0.05), mark 104: 5 x 4 = 20 - 0.05
    proj.handle(fill("NVDA", "buy", 5, "100", fee="0.05", when=at(3)), S)
    ev = one(proj, bar("NVDA", "104", at(4)))
    # total -30 + 20 - 0.05 = -10.05
    assert ev.total == D("-10.05") and ev.open_positions == 2
    assert ev.by_symbol == {"NVDA": "19.95", "TSLA": "-30.00"}


def test_the_session_date_is_new_yorks_not_utcs():
    proj = DailyPnLProjection()
    # 03:00 UTC on 5 March is 22:00 on 4 March in New York
    ev = one(proj, fill("AAPL", "buy", 1, "10", fee="0.01",
                        when=datetime(2024, 3, 5, 3, 0, tzinfo=UTC)))
    assert ev.session_date == date(2024, 3, 4)


def test_positions_carry_over_from_the_previous_days_last_mark():
    proj = DailyPnLProjection()
    # day 1: buy 100 @ 10, last mark 11: day-1 total +100
    proj.handle(fill("AAPL", "buy", 100, "10", when=at(30)), S)
    assert one(proj, bar("AAPL", "11", at(300))).total == D(100)

    # day 2 starts with another symbol's bar: the date rolls, total 0, nothing emitted
    assert proj.handle(bar("MSFT", "400", at(0, days=1)), S) == []
    assert proj.session_date == date(2024, 3, 5) and proj.total == 0
    # mark 10.50 is measured from yesterday's 11: 100 x (10.50 - 11) = -50
    ev = one(proj, bar("AAPL", "10.50", at(1, days=1)))
    assert (ev.session_date, ev.total, ev.realized, ev.intraday_low) == (
        date(2024, 3, 5), D(-50), 0, D(-50))
    # sell 100 @ 12: realized against the carried 11 -> 100 x 1 = 100
    ev = one(proj, fill("AAPL", "sell", 100, "12", when=at(2, days=1)))
    assert (ev.realized, ev.unrealized, ev.total, ev.intraday_low) == (D(100), 0, D(100), D(-50))
    # day 1 + day 2 = 100 + 100 = 200 = 100 x (12 - 10), the lifetime P&L
    assert ev.by_symbol == {"AAPL": "100.00"}


def test_a_late_event_from_an_earlier_date_counts_toward_the_current_date():
    proj = DailyPnLProjection()
    proj.handle(fill("AAPL", "buy", 10, "10", when=at(0, days=1)), S)
    ev = one(proj, bar("AAPL", "9", at(0)))  # a bar stamped the day before
    assert ev.session_date == date(2024, 3, 5) and ev.total == D(-10)


def test_a_fill_seen_twice_counts_once():
    proj = DailyPnLProjection()
    one(proj, fill("AAPL", "buy", 10, "10", fee="0.10", order_id="o1", fill_id="f1"))
    dup = fill("AAPL", "buy", 10, "10", fee="0.10", order_id="o1", fill_id="f1")
    assert proj.handle(dup, S) == []
    assert proj.total == D("-0.10")


def test_a_restarted_projection_continues_exactly_where_it_stopped():
    inputs = [
        fill("AAPL", "buy", 100, "10", fee="1", when=at(1)),
        bar("AAPL", "10.40", at(2)),
        bar("AAPL", "9.70", at(3)),
        fill("AAPL", "sell", 50, "9.80", when=at(4)),
    ]
    live = DailyPnLProjection()
    log = []
    for ev in inputs:
        log.append(ev)
        log.extend(live.handle(ev, S))
    assert sum(isinstance(e, DailyPnLChanged) for e in log) == 4

    restarted = DailyPnLProjection()
    restarted.rebuild(log)
    assert restarted.snapshot() == live.snapshot()
    # an unchanged mark after the restart: still nothing to emit
    assert restarted.handle(bar("AAPL", "9.80", at(5)), S) == []
    # the next change gives the event an uninterrupted run gives
    nxt = bar("AAPL", "9.60", at(6))
    live.handle(bar("AAPL", "9.80", at(5)), S)
    assert restarted.handle(nxt, S) == live.handle(nxt, S)
    # 50 left from avg 10: realized 50 x -0.20 = -10, fee -1, unrealized 50 x -0.40 = -20
    assert restarted.total == D(-31)


def test_daily_history_bars_are_not_prices_for_today() -> None:
    """Regression: daily bars republished at start (60 days of history) once marked
    today's position at a 2-month-old close and tripped a false emergency stop."""
    from datetime import timedelta
    from decimal import Decimal

    from domain.events import BarReceived, OrderFilled
    from domain.values import Bar
    from projections.daily_pnl import DailyPnLProjection
    from tests.builders import T0, make

    proj = DailyPnLProjection()
    fill = make(OrderFilled, "buy", T0, order_id="o", client_order_id="c", broker_order_id="b",
                fill_id="1", symbol="AAPL", side="buy", qty=Decimal(250), price=Decimal(40),
                filled_qty=Decimal(250))
    old = Bar(symbol="AAPL", timestamp=T0 - timedelta(days=60), open=Decimal(30),
              high=Decimal(30), low=Decimal(30), close=Decimal(30), volume=1, timeframe="1Day")
    history = make(BarReceived, "hist", T0 + timedelta(minutes=1), symbol="AAPL", bar=old)
    settings = __import__("config.settings", fromlist=["Settings"]).Settings()
    proj.handle(fill, settings)
    assert proj.handle(history, settings) == []
    assert proj.total == Decimal("0.00")
