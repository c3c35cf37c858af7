"""The session handler, told as a trading day: who may start a session, and how the day is
paced from the open to the close.

Events are hand-made; the calendar is the real XNYS adapter (half-days, holidays, DST), so
the dates below are real NYSE dates. Every `trading_session` / `workflow` key the session
handler reads has a test showing that changing it changes what the handler emits.
(`max_hold_time_minutes` and `execute_top_n` act in the executor and the strategy; their
effect is shown end to end in tests/e2e/test_backtest_cli.py.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any
from uuid import NAMESPACE_URL, uuid5
from zoneinfo import ZoneInfo

import pytest

from adapters.runtime.simulation import XnysCalendar
from config.settings import (
    EmergencyActions,
    RiskParameters,
    Settings,
    TradingConfig,
    TradingSession,
    Workflow,
)
from domain.events import (
    ClockTicked,
    EmergencyStopTriggered,
    EntriesStopped,
    Event,
    FlattenRequested,
    OrderFilled,
    ScanRequested,
    SessionEnded,
    SessionStarted,
    SessionStartRejected,
    SessionStartRequested,
    TradingResumed,
)
from domain.values import Side
from handlers.session import SessionHandler
from tests.builders import make

NY = ZoneInfo("America/New_York")
CAL = XnysCalendar()

MONDAY = date(2026, 3, 2)  # EST: 09:30-16:00 New York is 14:30-21:00 UTC
OPEN = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
CLOSE = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
HALF_DAY = date(2025, 11, 28)  # the Friday after Thanksgiving: 13:00 New York close
HALF_OPEN = datetime(2025, 11, 28, 14, 30, tzinfo=UTC)
HALF_CLOSE = datetime(2025, 11, 28, 18, 0, tzinfo=UTC)


def settings(*, emergency: dict[str, Any] | None = None, workflow: dict[str, Any] | None = None,
             **session: Any) -> Settings:
    return Settings(
        risk=RiskParameters(emergency_actions=EmergencyActions(**(emergency or {}))),
        trading=TradingConfig(trading_session=TradingSession(**session),
                              workflow=Workflow(**(workflow or {}))),
    )


DEFAULT = settings()


def request(at: datetime, label: str = "start", day: date | None = None
            ) -> SessionStartRequested:
    return make(SessionStartRequested, f"{label}:{at.isoformat()}", at, requested_by="test",
                session_date=day)


def tick(at: datetime, day: date | None = None) -> ClockTicked:
    return make(ClockTicked, f"tick:{at.isoformat()}", at,
                session_date=day or at.astimezone(NY).date())


def fill(label: str, symbol: str, side: Side, qty: str, price: str, at: datetime,
         fee: str = "0") -> OrderFilled:
    return make(OrderFilled, f"fill:{label}", at, order_id=f"o-{label}",
                client_order_id=f"c-{label}", broker_order_id=f"b-{label}",
                fill_id=f"f-{label}", symbol=symbol, side=side, qty=D(qty), price=D(price),
                filled_qty=D(qty), fee=D(fee))


def stop_triggered(day: date, at: datetime, *, manual: bool = True) -> EmergencyStopTriggered:
    """A stop as the risk guard records it: with the emergency actions of that moment."""
    return make(EmergencyStopTriggered, f"stop:{day}", at, session_date=day, pnl=D("-2000"),
                limit=D("2000"), reason="daily loss limit",
                actions={"halt_new_trades": True, "require_manual_restart": manual})


def started(h: SessionHandler, at: datetime = OPEN, s: Settings = DEFAULT) -> SessionStarted:
    [out] = h.handle(request(at), s)
    assert isinstance(out, SessionStarted), out
    return out


def run_ticks(h: SessionHandler, s: Settings, times: Iterable[datetime]) -> list[Event]:
    out: list[Event] = []
    for t in times:
        out += h.handle(tick(t), s)
    return out


def minutes(first: datetime, last: datetime) -> list[datetime]:
    """A tick every minute from `first` to `last` inclusive, like the simulated clock."""
    n = int((last - first) / timedelta(minutes=1))
    return [first + timedelta(minutes=i) for i in range(n + 1)]


def day_of_ticks(h: SessionHandler, s: Settings, open_: datetime = OPEN,
                 close: datetime = CLOSE) -> list[Event]:
    return run_ticks(h, s, minutes(open_, close))


def times_of(events: list[Event], cls: type[Event]) -> list[datetime]:
    return [e.occurred_at for e in events if isinstance(e, cls)]


# --- starting a session -----------------------------------------------------------------------


def test_autonomous_start_on_a_trading_day_starts_the_session_with_the_market_hours() -> None:
    h = SessionHandler(CAL, broker_name="sim")
    req = request(OPEN)

    [ev] = h.handle(req, DEFAULT)

    assert isinstance(ev, SessionStarted)
    assert ev.session_date == MONDAY
    assert (ev.market_open, ev.market_close) == (OPEN, CLOSE)
    assert ev.early_close is False
    assert (ev.mode, ev.broker) == ("autonomous", "sim")
    assert ev.causation_id == req.event_id
    assert ev.limits == {"max_daily_loss_usd": "2000", "max_positions": "5",
                         "max_position_size_usd": "10000", "warning_threshold_pct": "0.75"}


def test_the_half_day_after_thanksgiving_closes_at_1300_new_york() -> None:
    ev = started(SessionHandler(CAL), HALF_OPEN)

    assert ev.session_date == HALF_DAY
    assert ev.market_close == HALF_CLOSE == datetime(2025, 11, 28, 13, 0, tzinfo=NY)
    assert ev.early_close is True


def test_market_hours_follow_daylight_saving_in_new_york() -> None:
    # The Monday after clocks go forward: 09:30 New York is 13:30 UTC.
    ev = started(SessionHandler(CAL), datetime(2026, 3, 9, 13, 30, tzinfo=UTC))

    assert ev.market_open == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)
    assert ev.market_close == datetime(2026, 3, 9, 20, 0, tzinfo=UTC)


def test_a_start_requested_before_the_open_starts_the_days_session() -> None:
    ev = started(SessionHandler(CAL), datetime(2026, 3, 2, 13, 0, tzinfo=UTC))  # 08:00 NY

    assert (ev.session_date, ev.market_open) == (MONDAY, OPEN)


def test_supervised_mode_is_refused_like_the_originals_http_400() -> None:
    [ev] = SessionHandler(CAL).handle(request(OPEN), settings(mode="supervised"))

    assert isinstance(ev, SessionStartRejected)
    assert ev.reason == "supervised mode not supported"
    assert ev.session_date == MONDAY


@pytest.mark.parametrize(
    ("at", "day"),
    [
        (datetime(2026, 3, 7, 15, 0, tzinfo=UTC), date(2026, 3, 7)),  # Saturday
        (datetime(2026, 3, 8, 15, 0, tzinfo=UTC), date(2026, 3, 8)),  # Sunday
        (datetime(2025, 11, 27, 15, 0, tzinfo=UTC), date(2025, 11, 27)),  # Thanksgiving
        (datetime(2025, 12, 25, 15, 0, tzinfo=UTC), date(2025, 12, 25)),  # Christmas
    ],
)
def test_no_session_on_weekends_and_holidays(at: datetime, day: date) -> None:
    [ev] = SessionHandler(CAL).handle(request(at), DEFAULT)

    assert isinstance(ev, SessionStartRejected)
    assert ev.reason == f"market closed on {day.isoformat()} (not an NYSE trading day)"
    assert ev.session_date == day


@pytest.mark.parametrize("at", [CLOSE, CLOSE + timedelta(minutes=5),
                                HALF_CLOSE + timedelta(minutes=1)])
def test_no_session_after_the_close(at: datetime) -> None:
    [ev] = SessionHandler(CAL).handle(request(at), DEFAULT)

    assert isinstance(ev, SessionStartRejected)
    assert "market already closed" in ev.reason


def test_the_day_is_the_new_york_date_not_the_utc_date() -> None:
    # 01:00 UTC on Tuesday is 20:00 on Monday in New York: Monday's market has closed.
    [ev] = SessionHandler(CAL).handle(request(datetime(2026, 3, 3, 1, 0, tzinfo=UTC)), DEFAULT)

    assert isinstance(ev, SessionStartRejected)
    assert ev.session_date == MONDAY
    assert ev.reason == "market already closed for 2026-03-02"


def test_an_explicit_session_date_wins_over_the_request_time() -> None:
    # The scheduler names the date it means; a weekend date is refused even at a weekday time.
    h = SessionHandler(CAL)
    [ev] = h.handle(request(OPEN, day=date(2026, 3, 7)), DEFAULT)

    assert isinstance(ev, SessionStartRejected)
    assert ev.session_date == date(2026, 3, 7)


def test_a_second_start_the_same_day_is_refused_while_the_session_runs() -> None:
    h = SessionHandler(CAL)
    first = started(h)

    [ev] = h.handle(request(OPEN + timedelta(minutes=10), label="again"), DEFAULT)

    assert isinstance(ev, SessionStartRejected)
    assert ev.reason == f"session {first.session_id} already running"


def test_a_redelivered_start_request_emits_nothing_twice() -> None:
    h = SessionHandler(CAL)
    req = request(OPEN)

    assert len(h.handle(req, DEFAULT)) == 1
    assert h.handle(req, DEFAULT) == []  # same event id: already applied


def test_the_next_trading_day_starts_a_new_session() -> None:
    h = SessionHandler(CAL)
    monday = started(h)
    day_of_ticks(h, DEFAULT)

    tuesday = started(h, OPEN + timedelta(days=1))

    assert tuesday.session_date == date(2026, 3, 3)
    assert tuesday.session_id != monday.session_id


# --- halted by an emergency stop ----------------------------------------------------------------


def test_a_halted_day_does_not_start() -> None:
    h = SessionHandler(CAL)
    h.handle(stop_triggered(MONDAY, OPEN - timedelta(hours=1)), DEFAULT)

    [ev] = h.handle(request(OPEN), DEFAULT)

    assert isinstance(ev, SessionStartRejected)
    assert ev.reason.startswith("trading halted by emergency stop")


def test_with_manual_restart_the_halt_outlasts_the_date_until_trading_resumes() -> None:
    s = settings(emergency={"require_manual_restart": True})
    h = SessionHandler(CAL)
    started(h)
    h.handle(stop_triggered(MONDAY, OPEN + timedelta(hours=3)), s)
    day_of_ticks(h, s)

    [tuesday] = h.handle(request(OPEN + timedelta(days=1)), s)
    [wednesday] = h.handle(request(OPEN + timedelta(days=2)), s)
    assert isinstance(tuesday, SessionStartRejected)
    assert isinstance(wednesday, SessionStartRejected)

    h.handle(make(TradingResumed, "resume", OPEN + timedelta(days=2, minutes=5),
                  resumed_by="trader", reason="limits reviewed"), s)
    [ev] = h.handle(request(OPEN + timedelta(days=2, minutes=10), label="after-resume"), s)
    assert isinstance(ev, SessionStarted)


def test_without_manual_restart_the_halt_ends_with_its_session_date() -> None:
    s = settings(emergency={"require_manual_restart": False})
    h = SessionHandler(CAL)
    h.handle(stop_triggered(MONDAY, OPEN - timedelta(hours=1), manual=False), s)

    [monday] = h.handle(request(OPEN), s)
    [tuesday] = h.handle(request(OPEN + timedelta(days=1)), s)

    assert isinstance(monday, SessionStartRejected)
    assert isinstance(tuesday, SessionStarted)
    assert tuesday.session_date == date(2026, 3, 3)


def test_the_halt_follows_the_actions_the_stop_recorded_not_the_current_config() -> None:
    h = SessionHandler(CAL)
    h.handle(stop_triggered(MONDAY, OPEN - timedelta(hours=1), manual=False), DEFAULT)
    now_manual = settings(emergency={"require_manual_restart": True})  # changed since

    [monday] = h.handle(request(OPEN), now_manual)
    [tuesday] = h.handle(request(OPEN + timedelta(days=1)), now_manual)

    assert isinstance(monday, SessionStartRejected)
    assert isinstance(tuesday, SessionStarted)


def test_a_stop_recorded_with_manual_restart_outlasts_a_config_without_it() -> None:
    h = SessionHandler(CAL)
    h.handle(stop_triggered(MONDAY, OPEN - timedelta(hours=1), manual=True), DEFAULT)
    now_auto = settings(emergency={"require_manual_restart": False})

    [tuesday] = h.handle(request(OPEN + timedelta(days=1)), now_auto)

    assert isinstance(tuesday, SessionStartRejected)


# --- pacing the day -----------------------------------------------------------------------------


def test_no_ticks_act_before_a_session_started() -> None:
    h = SessionHandler(CAL)
    assert day_of_ticks(h, DEFAULT) == []


def test_ticks_of_another_date_are_ignored() -> None:
    h = SessionHandler(CAL)
    started(h)
    tuesday_tick = tick(OPEN + timedelta(days=1, minutes=30))

    assert h.handle(tuesday_tick, DEFAULT) == []


def test_scans_at_the_open_then_every_scan_frequency_minutes_until_entries_stop() -> None:
    h = SessionHandler(CAL)
    sid = started(h).session_id

    out = day_of_ticks(h, DEFAULT)

    scans = [e for e in out if isinstance(e, ScanRequested)]
    # 09:30, 10:00, ... 15:30 New York; 15:45 is the entry cut-off, so no scan after it.
    assert [e.occurred_at for e in scans] == [OPEN + timedelta(minutes=30 * i)
                                              for i in range(13)]
    assert [e.scan_number for e in scans] == list(range(1, 14))
    assert {e.session_id for e in scans} == {sid}


def test_scan_frequency_minutes_sets_the_scan_times() -> None:
    s = settings(workflow={"scan_frequency_minutes": 45})
    h = SessionHandler(CAL)
    started(h, s=s)

    out = day_of_ticks(h, s)

    assert times_of(out, ScanRequested) == [OPEN + timedelta(minutes=45 * i) for i in range(9)]


def test_the_first_tick_after_the_open_brings_scan_one() -> None:
    # The simulated clock ticks when a minute closes: its first tick is 09:31.
    h = SessionHandler(CAL)
    started(h)

    [ev] = h.handle(tick(OPEN + timedelta(minutes=1)), DEFAULT)

    assert isinstance(ev, ScanRequested) and ev.scan_number == 1
    assert h.handle(tick(OPEN + timedelta(minutes=2)), DEFAULT) == []


def test_sparse_ticks_request_one_scan_each_not_the_missed_ones() -> None:
    h = SessionHandler(CAL)
    started(h)

    out = run_ticks(h, DEFAULT, [OPEN, OPEN + timedelta(minutes=95)])

    assert [e.scan_number for e in out if isinstance(e, ScanRequested)] == [1, 4]


def test_a_handler_rebuilt_from_the_log_does_not_repeat_a_scan() -> None:
    h = SessionHandler(CAL)
    log: list[Event] = [request(OPEN)]
    log += h.handle(log[0], DEFAULT)
    for t in minutes(OPEN, OPEN + timedelta(minutes=40)):
        ev = tick(t)
        log += [ev, *h.handle(ev, DEFAULT)]

    again = SessionHandler(CAL)
    again.rebuild(log)
    out = again.handle(tick(OPEN + timedelta(minutes=60)), DEFAULT)

    assert [e.scan_number for e in out if isinstance(e, ScanRequested)] == [3]


def test_entries_stop_stop_new_entries_minutes_before_the_close() -> None:
    h = SessionHandler(CAL)
    started(h)

    out = day_of_ticks(h, DEFAULT)

    [stopped] = [e for e in out if isinstance(e, EntriesStopped)]
    assert stopped.occurred_at == CLOSE - timedelta(minutes=15)
    assert stopped.reason == "15 min before the close"
    assert max(times_of(out, ScanRequested)) < stopped.occurred_at


def test_stop_new_entries_minutes_before_close_moves_the_cut_off_and_the_last_scan() -> None:
    s = settings(stop_new_entries_minutes_before_close=60)
    h = SessionHandler(CAL)
    started(h, s=s)

    out = day_of_ticks(h, s)

    assert times_of(out, EntriesStopped) == [CLOSE - timedelta(minutes=60)]
    # 15:00 New York is the cut-off now, so the last scan is 14:30 New York.
    assert max(times_of(out, ScanRequested)) == CLOSE - timedelta(minutes=90)


def test_auto_close_flattens_flatten_minutes_before_the_close() -> None:
    h = SessionHandler(CAL)
    started(h)

    out = day_of_ticks(h, DEFAULT)

    [flatten] = [e for e in out if isinstance(e, FlattenRequested)]
    assert flatten.occurred_at == CLOSE - timedelta(minutes=5)
    assert flatten.reason == "auto close 5 min before the close"


def test_flatten_minutes_before_close_moves_the_flatten() -> None:
    s = settings(flatten_minutes_before_close=10)
    h = SessionHandler(CAL)
    started(h, s=s)

    assert times_of(day_of_ticks(h, s), FlattenRequested) == [CLOSE - timedelta(minutes=10)]


def test_without_auto_close_nothing_is_flattened() -> None:
    s = settings(auto_close_at_market_close=False)
    h = SessionHandler(CAL)
    started(h, s=s)

    out = day_of_ticks(h, s)

    assert times_of(out, FlattenRequested) == []
    assert times_of(out, SessionEnded) == [CLOSE]  # the day still ends


def test_no_entry_opens_after_the_flatten_when_it_comes_before_the_entry_cut_off() -> None:
    # Flattening at 15:30 while entries run until 15:45 would leave the 15:30-15:45 entries
    # open over the close: entries stop at the flatten at the latest.
    s = settings(flatten_minutes_before_close=30, stop_new_entries_minutes_before_close=15)
    h = SessionHandler(CAL)
    started(h, s=s)

    out = day_of_ticks(h, s)

    flatten_at = CLOSE - timedelta(minutes=30)
    assert times_of(out, FlattenRequested) == [flatten_at]
    assert times_of(out, EntriesStopped) == [flatten_at]
    assert max(times_of(out, ScanRequested)) < flatten_at


def test_the_half_day_is_paced_to_its_1300_close() -> None:
    h = SessionHandler(CAL)
    started(h, HALF_OPEN)

    out = day_of_ticks(h, DEFAULT, HALF_OPEN, HALF_CLOSE)

    assert times_of(out, EntriesStopped) == [HALF_CLOSE - timedelta(minutes=15)]
    assert times_of(out, FlattenRequested) == [HALF_CLOSE - timedelta(minutes=5)]
    assert times_of(out, SessionEnded) == [HALF_CLOSE]
    assert max(times_of(out, ScanRequested)) == datetime(2025, 11, 28, 17, 30, tzinfo=UTC)


def test_the_session_ends_once_at_the_close_and_then_goes_quiet() -> None:
    h = SessionHandler(CAL)
    sid = started(h).session_id

    out = day_of_ticks(h, DEFAULT)
    later = run_ticks(h, DEFAULT, [CLOSE + timedelta(minutes=1), CLOSE + timedelta(minutes=2)])

    [ended] = [e for e in out if isinstance(e, SessionEnded)]
    assert (ended.occurred_at, ended.session_id, ended.session_date) == (CLOSE, sid, MONDAY)
    assert later == []


def test_session_ended_counts_round_trips_wins_losses_and_realized_pnl() -> None:
    h = SessionHandler(CAL)
    started(h)
    t = OPEN + timedelta(minutes=10)
    fills = [
        # AAA: bought 10 at 100, sold at 103: a win of +30.
        fill("a1", "AAA", Side.BUY, "10", "100", t),
        fill("a2", "AAA", Side.SELL, "10", "103", t + timedelta(minutes=5)),
        # BBB: bought 5 at 50, sold in two pieces at 49 and 48: one losing trade, -2 - 6.
        fill("b1", "BBB", Side.BUY, "5", "50", t),
        fill("b2", "BBB", Side.SELL, "2", "49", t + timedelta(minutes=6)),
        fill("b3", "BBB", Side.SELL, "3", "48", t + timedelta(minutes=7)),
        # CCC: +0.50 on price, $1 fee each way: a loss of -1.50 after fees.
        fill("c1", "CCC", Side.BUY, "10", "20", t, fee="1"),
        fill("c2", "CCC", Side.SELL, "10", "20.05", t + timedelta(minutes=8), fee="1"),
        # DDD: a short covered lower: +12.
        fill("d1", "DDD", Side.SELL, "4", "30", t),
        fill("d2", "DDD", Side.BUY, "4", "27", t + timedelta(minutes=9)),
        # EEE: still open at the close: no trade yet.
        fill("e1", "EEE", Side.BUY, "7", "10", t),
    ]
    for f in fills:
        assert h.handle(f, DEFAULT) == []
    h.handle(fills[1], DEFAULT)  # a redelivered fill is not counted twice

    [ended] = [e for e in day_of_ticks(h, DEFAULT) if isinstance(e, SessionEnded)]

    assert (ended.trades, ended.wins, ended.losses) == (4, 2, 2)
    assert ended.realized_pnl == D("30") - D("8") - D("1.50") + D("12")


def test_a_position_opened_yesterday_counts_when_it_closes_today() -> None:
    h = SessionHandler(CAL)
    started(h)
    h.handle(fill("x1", "XXX", Side.BUY, "10", "50", OPEN + timedelta(minutes=5)), DEFAULT)
    [monday] = [e for e in day_of_ticks(h, DEFAULT) if isinstance(e, SessionEnded)]

    tuesday_open = OPEN + timedelta(days=1)
    started(h, tuesday_open)
    h.handle(fill("x2", "XXX", Side.SELL, "10", "49", tuesday_open + timedelta(minutes=5)),
             DEFAULT)
    [tuesday] = [e for e in day_of_ticks(h, DEFAULT, tuesday_open, CLOSE + timedelta(days=1))
                 if isinstance(e, SessionEnded)]

    assert (monday.trades, monday.realized_pnl) == (0, D(0))
    assert (tuesday.trades, tuesday.losses, tuesday.realized_pnl) == (1, 1, D("-10"))


def test_partial_fills_and_a_fill_translated_twice_make_one_round_trip() -> None:
    # Issue 14, item 8: the trade count follows the same fills as every other P&L: partial
    # fills count, and a fill seen again under another event id (same order and fill id)
    # does not.
    from domain.events import OrderPartiallyFilled

    h = SessionHandler(CAL)
    started(h)
    t = OPEN + timedelta(minutes=10)
    part = make(OrderPartiallyFilled, "fill:p1", t, order_id="o-p", client_order_id="c-p",
                broker_order_id="b-p", fill_id="f-p1", symbol="PPP", side=Side.BUY,
                qty=D("4"), price=D("10"), filled_qty=D("4"))
    rest = fill("p2", "PPP", Side.BUY, "6", "10", t + timedelta(minutes=1))
    out = fill("p3", "PPP", Side.SELL, "10", "11", t + timedelta(minutes=2))
    copy = out.model_copy(update={"event_id": uuid5(NAMESPACE_URL, "another-translation")})
    for ev in (part, rest, out, copy):
        h.handle(ev, DEFAULT)
    [ended] = [e for e in day_of_ticks(h, DEFAULT) if isinstance(e, SessionEnded)]
    assert (ended.trades, ended.wins, ended.realized_pnl) == (1, 1, D("10"))
