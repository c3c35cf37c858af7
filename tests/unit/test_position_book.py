"""Issue 14, item 8: one position book (domain/book.py) for every handler that needs
positions or P&L: it applies fills (a fill seen twice, by order and fill id, counts once),
takes marks, and keys realized P&L by New York session date, carrying an open position into
a new date at its last mark, exactly as the daily P&L projection does. The risk guard and the
executor read it, so the emergency command's "realized before" and the DailyPnLChanged that
triggered it agree to the cent."""

from __future__ import annotations

from decimal import Decimal

from adapters.runtime.composition import build_handlers
from config.settings import Settings
from domain.book import PositionBook
from domain.events import DailyPnLChanged, EmergencyStopTriggered, Event
from handlers.executor import EmergencyClose, Executor
from handlers.risk_guard import RiskGuard
from projections.daily_pnl import DailyPnLProjection
from tests.unit.risk_builders import D0, D, at, bar, fill

S = Settings()


def test_fills_make_positions_and_realized_pnl_net_of_fees():
    book = PositionBook()
    book.apply(fill("AAPL", "buy", 10, "100", fee="1", when=at(1)))
    book.apply(fill("AAPL", "buy", 10, "110", fee="1", when=at(2)))
    pos = book.position("AAPL")
    assert (pos.qty, pos.avg_price) == (D(20), D(105))
    book.apply(fill("AAPL", "sell", 5, "120", fee="1", when=at(3)))
    assert book.realized(D0) == 5 * (D(120) - D(105)) - 3
    assert book.opened_at("AAPL") == at(1)
    assert book.last_price("AAPL") == D(120)


def test_a_fill_seen_twice_counts_once():
    book = PositionBook()
    f = fill("AAPL", "buy", 10, "100", order_id="o1", fill_id="x1")
    again = fill("AAPL", "buy", 10, "100", order_id="o1", fill_id="x1")  # another event id
    assert book.apply(f) is not None
    assert book.apply(again) is None
    assert book.position("AAPL").qty == D(10)


def test_a_position_carried_overnight_enters_the_new_date_at_its_last_mark():
    book = PositionBook()
    book.apply(fill("AAPL", "buy", 10, "100", when=at(1)))
    book.mark("AAPL", D(95), at(300))  # the last price of 4 March
    book.apply(fill("AAPL", "sell", 10, "90", when=at(1, days=1)))
    # 5 March realizes only its own move: 10 x (90 - 95); the lifetime loss is 10 x 10
    assert book.realized(D0) == 0
    assert book.realized(at(1, days=1).date()) == D(-50)
    assert book.position("AAPL").is_flat


def _run(handlers: list, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    queue = list(events)
    while queue:
        ev = queue.pop(0)
        out.append(ev)
        for h in handlers:
            queue.extend(h.handle(ev, S))
    return out


def test_the_emergency_commands_realized_pnl_is_the_daily_pnl_projections():
    # A position carried into 5 March, then a loss that trips the stop: the executor's
    # realized P&L for the date (which the stop's completion reports) must be the
    # projection's, measured from the 4 March close, not from the entry on 4 March.
    handlers = [h for h in build_handlers(S, "sim", scanner=False)
                if isinstance(h, DailyPnLProjection | RiskGuard | Executor)]
    executor = next(h for h in handlers if isinstance(h, Executor))
    day2 = at(0, days=1)
    events = [
        fill("AAPL", "buy", 200, "100", when=at(1)),
        fill("MSFT", "buy", 100, "50", when=at(1)),
        bar("AAPL", "95", at(300)),
        bar("MSFT", "50", at(300)),
        # 5 March: AAPL sold at 90 (from the 95 mark: -1,000), MSFT falls 10 (-1,000)
        fill("AAPL", "sell", 200, "90", fee="2", when=day2),
        bar("MSFT", "40", day2.replace(minute=31)),
    ]
    out = _run(handlers, events)
    changes = [e for e in out if isinstance(e, DailyPnLChanged)
               and e.session_date == day2.date()]
    (stop,) = [e for e in out if isinstance(e, EmergencyStopTriggered)]
    assert stop.pnl == changes[-1].total == D("-2002.00")
    (cmd,) = executor.commands_for(stop, S)
    assert isinstance(cmd, EmergencyClose)
    assert cmd.realized_pnl_before == changes[-1].realized == D("-1002.00")
    assert Decimal(changes[-1].realized) == executor.realized_pnl(day2.date())
