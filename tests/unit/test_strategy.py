"""Strategy handler: ranked candidates -> bracket entry signals."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from config.settings import Settings
from domain.events import (
    CandidateScore,
    EntriesStopped,
    OrderFilled,
    PositionClosed,
    ScanCompleted,
    SignalGenerated,
)
from domain.values import Side, derive_id
from handlers.strategy import Strategy, bracket_prices
from tests.unit.scan_builders import OPEN, SESSION, D, eid, make_settings, session_started


def cand(symbol: str, rank: int, composite: float, price: str = "100", atr: str = "0.5",
         **kw: object) -> CandidateScore:
    return CandidateScore(
        symbol=symbol, rank=rank, price=D(price), catalyst=0.8, momentum=0.5, volume=0.4,
        technical=0.6, composite=composite, atr=D(atr),
        details={"catalysts": ["fda"], "momentum_pct": 1.5, "volume_ratio": 2.2, "rsi": 61.3,
                 "macd": {"line": 0.2, "signal": 0.1, "histogram": 0.1},
                 "patterns_detected": ["breakout"]},
        **kw,  # type: ignore[arg-type]
    )


def scan(*cands: CandidateScore, number: int = 1, session: str = SESSION) -> ScanCompleted:
    return ScanCompleted(
        event_id=eid(f"scan-completed:{session}:{number}"),
        occurred_at=OPEN + timedelta(minutes=30 * number), correlation_id=session,
        session_id=session, scan_number=number, universe_size=len(cands), candidates=cands,
    )


FIVE = (cand("AAA", 1, 0.9), cand("BBB", 2, 0.8), cand("CCC", 3, 0.7), cand("DDD", 4, 0.6),
        cand("EEE", 5, 0.5))


def started(settings: Settings | None = None, session: str = SESSION) -> Strategy:
    s = Strategy()
    s.handle(session_started(session), settings or make_settings())
    return s


def symbols(out: list) -> list[str]:
    return [e.symbol for e in out]


def test_top_three_get_bracket_signals() -> None:
    settings = make_settings()
    out = started(settings).handle(scan(*FIVE), settings)
    assert symbols(out) == ["AAA", "BBB", "CCC"]
    sig = out[0]
    assert isinstance(sig, SignalGenerated) and sig.side is Side.BUY
    # entry 100; stop 100 - 2 x 0.5 = 99.00; target 100 + 3 x 0.5 = 101.50
    assert (sig.entry, sig.stop_loss, sig.take_profit) == (D("100.00"), D("99.00"), D("101.50"))
    assert sig.use_bracket is True and sig.score == 0.9


def test_prices_are_rounded_to_cents() -> None:
    # ATR 0.3333: stop 100 - 0.6666 = 99.3334 -> 99.34 (up: less risk); target
    # 100 + 0.9999 = 100.9999 -> 101.00 (up: more reward). Reward/risk 1.00 / 0.66 = 1.52,
    # never under the configured 3:2 because of rounding.
    assert bracket_prices(D("100"), D("0.3333"), 2.0, 3.0) == (
        D("100.00"), D("99.34"), D("101.00"),
    )
    assert bracket_prices(D("12.345"), D("0.1"), 2.0, 3.0) == (D("12.34"), D("12.14"),
                                                               D("12.64"))


def test_ids_derive_from_the_scan() -> None:
    settings = make_settings()
    ev = scan(*FIVE)
    a = started(settings).handle(ev, settings)
    b = started(settings).handle(ev, settings)
    assert a == b
    assert a[0].event_id == derive_id(ev.event_id, "strategy:0")
    assert a[1].event_id == derive_id(ev.event_id, "strategy:1")
    assert all(s.causation_id == ev.event_id and s.correlation_id == SESSION for s in a)
    assert len({s.signal_id for s in a}) == 3


def test_reason_names_the_components() -> None:
    settings = make_settings()
    penalised = cand("AAA", 1, 0.6, penalty=0.2)
    reason = started(settings).handle(scan(penalised), settings)[0].reason
    for part in ("rank 1", "composite 0.60", "catalyst 0.80 (fda)", "momentum 0.50 (+1.50%)",
                 "volume 0.40 (2.20x)", "technical 0.60", "RSI 61.3", "breakout",
                 "climax volume penalty -0.20"):
        assert part in reason


def test_a_handled_scan_is_not_decided_twice() -> None:
    settings = make_settings()
    s = started(settings)
    ev = scan(*FIVE)
    assert len(s.handle(ev, settings)) == 3
    assert s.handle(ev, settings) == []


# --- config keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "expected"), [(0, []), (1, ["AAA"]), (5, ["AAA", "BBB", "CCC",
                                                                          "DDD", "EEE"])])
def test_execute_top_n(n: int, expected: list[str]) -> None:
    settings = make_settings(execute_top_n=n)
    assert symbols(started(settings).handle(scan(*FIVE), settings)) == expected


def test_min_composite_score() -> None:
    settings = make_settings(execute_top_n=5, min_composite_score=0.7)
    assert symbols(started(settings).handle(scan(*FIVE), settings)) == ["AAA", "BBB", "CCC"]
    settings = make_settings(min_composite_score=0.95)
    assert started(settings).handle(scan(*FIVE), settings) == []


def test_atr_multiples() -> None:
    settings = make_settings(execution={"bracket_stop_loss_atr": 1.5,
                                        "bracket_take_profit_atr": 4.0})
    sig = started(settings).handle(scan(cand("AAA", 1, 0.9)), settings)[0]
    # 100 - 1.5 x 0.5 = 99.25; 100 + 4 x 0.5 = 102.00
    assert (sig.stop_loss, sig.take_profit) == (D("99.25"), D("102.00"))


def test_use_bracket_orders() -> None:
    settings = make_settings(execution={"use_bracket_orders": False})
    assert started(settings).handle(scan(cand("AAA", 1, 0.9)), settings)[0].use_bracket is False


# --- what is skipped -----------------------------------------------------------------------


def test_a_symbol_is_signalled_once_per_session() -> None:
    settings = make_settings()
    s = started(settings)
    assert symbols(s.handle(scan(*FIVE, number=1), settings)) == ["AAA", "BBB", "CCC"]
    # the next scan ranks the same symbols: the skipped ones do not use up slots
    assert symbols(s.handle(scan(*FIVE, number=2), settings)) == ["DDD", "EEE"]
    s.handle(session_started("2024-03-05"), settings)
    again = s.handle(scan(*FIVE, number=1, session="2024-03-05"), settings)
    assert symbols(again) == ["AAA", "BBB", "CCC"]


def test_held_symbols_are_skipped_until_closed() -> None:
    settings = make_settings()
    s = started(settings)
    fill = OrderFilled(
        event_id=eid("fill"), occurred_at=OPEN, correlation_id="old", order_id="o1",
        client_order_id="c1", broker_order_id="b1", fill_id="f1", symbol="AAA", side=Side.BUY,
        qty=Decimal(10), price=D(100), filled_qty=Decimal(10),
    )
    s.handle(fill, settings)
    assert symbols(s.handle(scan(*FIVE), settings)) == ["BBB", "CCC", "DDD"]
    s.handle(PositionClosed(event_id=eid("closed"), occurred_at=OPEN, correlation_id="old",
                            symbol="AAA", qty=Decimal(10), reason="manual"), settings)
    assert symbols(s.handle(scan(*FIVE, number=2), settings)) == ["AAA", "EEE"]


def test_a_sell_fill_releases_the_symbol() -> None:
    settings = make_settings()
    s = started(settings)
    base = dict(occurred_at=OPEN, correlation_id="x", order_id="o", client_order_id="c",
                broker_order_id="b", symbol="ZZZ", qty=Decimal(5), price=D(10),
                filled_qty=Decimal(5))
    s.handle(OrderFilled(event_id=eid("buy"), fill_id="f1", side=Side.BUY, **base), settings)
    assert "ZZZ" in s.held
    s.handle(OrderFilled(event_id=eid("sell"), fill_id="f2", side=Side.SELL, leg="stop_loss",
                         **base), settings)
    assert "ZZZ" not in s.held


def test_entries_stop_until_the_next_session() -> None:
    settings = make_settings()
    s = started(settings)
    s.handle(EntriesStopped(event_id=eid("stop"), occurred_at=OPEN, correlation_id=SESSION,
                            session_id=SESSION, reason="15 minutes before close"), settings)
    assert s.handle(scan(*FIVE), settings) == []
    s.handle(session_started("2024-03-05"), settings)
    assert len(s.handle(scan(*FIVE, session="2024-03-05"), settings)) == 3


def test_no_signals_outside_a_started_session() -> None:
    settings = make_settings()
    assert Strategy().handle(scan(*FIVE), settings) == []
    assert started(settings).handle(scan(*FIVE, session="2024-01-01"), settings) == []


def test_candidates_without_a_usable_stop_are_skipped() -> None:
    settings = make_settings()
    tiny_atr = cand("AAA", 1, 0.9, atr="0.001")  # stop rounds to the entry
    huge_atr = cand("BBB", 2, 0.8, price="5", atr="3")  # stop below zero
    out = started(settings).handle(scan(tiny_atr, huge_atr, cand("CCC", 3, 0.7)), settings)
    assert symbols(out) == ["CCC"]


def test_rebuild_from_the_log_remembers_signals() -> None:
    settings = make_settings()
    live = started(settings)
    emitted = live.handle(scan(*FIVE), settings)
    restarted = Strategy()
    restarted.rebuild([session_started(), *emitted])
    assert symbols(restarted.handle(scan(*FIVE, number=2), settings)) == ["DDD", "EEE"]
