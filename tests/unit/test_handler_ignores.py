"""`Handler.ignores`: an event a handler says it ignores, skipped, leaves every decision and
the state exactly as handling it would. A verification relies on this to skip decoding
most bars (adapters.audit.replay)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import Settings
from domain.events import BarReceived, Event, FlattenRequested, PositionCloseRequested
from domain.values import Bar
from handlers.base import Handler
from handlers.executor import Executor
from projections.daily_pnl import DailyPnLProjection
from tests.unit.risk_builders import D, at, bar, fill, new_id

SYMBOLS = ("AAA", "BBB", "CCC")
S = Settings.model_validate({"trading": {"trading_session": {"max_hold_time_minutes": 30}}})


def daily_bar(symbol: str, close: str, when: Any) -> BarReceived:
    c = D(close)
    ev = bar(symbol, close, when)
    return ev.model_copy(update={"bar": Bar(symbol=symbol, timestamp=when, open=c, high=c,
                                            low=c, close=c, volume=10**6, timeframe="1Day")})


step = st.one_of(
    st.tuples(st.just("bar"), st.sampled_from(SYMBOLS), st.integers(90, 110)),
    st.tuples(st.just("daily"), st.sampled_from(SYMBOLS), st.integers(90, 110)),
    st.tuples(st.just("buy"), st.sampled_from(SYMBOLS), st.integers(1, 5)),
    st.tuples(st.just("sell"), st.sampled_from(SYMBOLS), st.integers(1, 5)),
    st.tuples(st.just("again"), st.integers(0, 10**6), st.just(0)),  # a copy, redelivered
    st.tuples(st.just("late"), st.sampled_from(SYMBOLS), st.integers(90, 110)),
    st.tuples(st.just("close"), st.sampled_from(SYMBOLS), st.just(0)),  # asked, not filled
    st.tuples(st.just("flatten"), st.just(""), st.just(0)),
)


def events_of(steps: list[tuple[str, Any, int]], minutes_per_step: int) -> list[Event]:
    """Over several New York dates: every step moves the clock, some across midnight."""
    out: list[Event] = []
    for n, (kind, a, b) in enumerate(steps):
        when = at(n * minutes_per_step)
        if kind == "bar":
            out.append(bar(a, str(b), when))
        elif kind == "daily":
            out.append(daily_bar(a, str(b), when))
        elif kind in ("buy", "sell"):
            out.append(fill(a, kind, b, "100", fee="0.10", when=when))
        elif kind == "late":
            out.append(bar(a, str(b), when - timedelta(days=2)))
        elif kind == "close":
            out.append(PositionCloseRequested(
                event_id=new_id(), type="PositionCloseRequested", occurred_at=when,
                correlation_id="t", symbol=a, reason="manual"))
        elif kind == "flatten":
            out.append(FlattenRequested(
                event_id=new_id(), type="FlattenRequested", occurred_at=when,
                correlation_id="t", session_id="s", reason="market_close"))
        elif out:
            out.append(out[a % len(out)])
    return out


def run(handler: Handler, events: list[Event], skipping: bool) -> list[bytes]:
    decided: list[bytes] = []
    for ev in events:
        symbol = getattr(ev, "symbol", None)
        if skipping and handler.ignores(ev.type, ev.occurred_at, symbol, S):
            handler.skip(ev.event_id)
            continue
        decided.extend(o.to_json() for o in handler.handle(ev, S))
    return decided


# Each handler that ignores events, and what its state looks like from outside.
IGNORING: dict[str, tuple[Callable[[], Handler], Callable[[Any], Any]]] = {
    "daily_pnl": (DailyPnLProjection, lambda h: h.snapshot()),
    "executor": (Executor, lambda h: h.state),
}


@pytest.mark.parametrize("name", sorted(IGNORING))
@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60), st.sampled_from([7, 90, 400]))
def test_a_handler_decides_the_same_skipping_what_it_ignores(name, steps, minutes) -> None:
    make, state = IGNORING[name]
    events = events_of(steps, minutes)
    whole, skipping = make(), make()
    assert run(whole, events, False) == run(skipping, events, True)
    assert state(whole) == state(skipping)


def test_what_the_daily_pnl_ignores() -> None:
    proj = DailyPnLProjection()
    first = bar("AAA", "100", at(0))
    # Nothing known yet: the first bar sets the date.
    assert not proj.ignores("BarReceived", first.occurred_at, "AAA", S)
    proj.handle(first, S)
    assert proj.ignores("BarReceived", at(1), "AAA", S)
    assert proj.ignores("BarReceived", at(1, days=-1), "AAA", S)  # an earlier date: no roll
    assert not proj.ignores("BarReceived", at(1, days=1), "AAA", S)  # may roll the date
    proj.handle(fill("AAA", "buy", 10, "100", when=at(2)), S)
    assert not proj.ignores("BarReceived", at(3), "AAA", S)  # held: its mark moves
    assert proj.ignores("BarReceived", at(3), "BBB", S)
    assert not proj.ignores("OrderFilled", at(3), "BBB", S)


def test_a_skipped_event_delivered_again_is_dropped_as_handle_drops_it() -> None:
    ex = Executor()
    tick = bar("AAA", "100", at(100))
    assert ex.ignores(tick.type, tick.occurred_at, "AAA", S)
    ex.skip(tick.event_id)
    ex.handle(fill("AAA", "buy", 10, "100", when=at(0)), S)
    # Held 100 minutes (max 30): a new bar closes it; the skipped one, seen again, must not.
    assert not ex.ignores("BarReceived", at(100), "AAA", S)
    assert ex.handle(tick, S) == []
    assert len(ex.handle(bar("AAA", "100", at(101)), S)) == 1
    # Its close requested, nothing more is due; but AAA's bars still mark it in the
    # position book (issue 14), so only other symbols' bars are ignored.
    assert not ex.ignores("BarReceived", at(102), "AAA", S)
    assert ex.ignores("BarReceived", at(102), "BBB", S)


def test_what_the_executor_ignores() -> None:
    ex = Executor()
    assert ex.ignores("BarReceived", at(0), "AAA", S)
    ex.handle(fill("AAA", "buy", 10, "100", when=at(0)), S)
    assert ex.ignores("BarReceived", at(29), "BBB", S)  # held under the 30 minutes
    assert not ex.ignores("BarReceived", at(30), "BBB", S)  # due: any bar is the clock
    assert not ex.ignores("ScanRequested", at(1), None, S)


class _FailsOnce(Handler):
    name = "fails_once"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("first try")
        return []


def test_skipping_an_undecided_event_leaves_the_state_handling_it_leaves() -> None:
    tick = bar("AAA", "100", at(0))
    handled, skipped = _FailsOnce(), _FailsOnce()
    for h in (handled, skipped):
        with pytest.raises(RuntimeError):
            h.handle(tick, S)
    assert handled.handle(tick, S) == []  # redelivered: decided again, then forgotten
    skipped.skip(tick.event_id)
    assert handled._undecided == skipped._undecided == set()
    assert handled.handle(tick, S) == skipped.handle(tick, S) == []
