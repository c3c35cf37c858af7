"""Positions read model from fills: quantity, average entry, realized P&L, open since."""

from __future__ import annotations

from config.settings import Settings
from projections.positions import PositionsProjection
from tests.unit.risk_builders import D, at, bar, fill

S = Settings()


def feed(proj: PositionsProjection, *events) -> None:
    for ev in events:
        assert proj.handle(ev, S) == []  # a read model decides nothing


def test_partial_fills_build_one_position_with_the_average_entry():
    proj = PositionsProjection()
    feed(
        proj,
        # order of 100: 40 @ 50.00 then 60 @ 50.50 -> cost 2000 + 3030 = 5030, avg 50.30
        fill("AAPL", "buy", 40, "50.00", partial=True, order_id="o1", when=at(1)),
        fill("AAPL", "buy", 60, "50.50", order_id="o1", filled_qty=100, when=at(2)),
    )
    (row,) = proj.snapshot()
    assert row.symbol == "AAPL"
    assert row.qty == 100 and row.side == "long"
    assert row.avg_entry_price == D("50.30")
    assert row.realized_pnl == 0
    assert row.opened_at == at(1)  # the first fill opened it
    assert row.last_fill_price == D("50.50") and row.last_fill_at == at(2)


def test_closing_fills_realize_pnl_and_fees():
    proj = PositionsProjection()
    feed(
        proj,
        fill("MSFT", "buy", 10, "400", fee="0.10", when=at(1)),
        fill("MSFT", "buy", 10, "410", fee="0.10", when=at(2)),  # avg (4000 + 4100)/20 = 405
        fill("MSFT", "sell", 5, "420", fee="0.05", leg="take_profit", when=at(3)),
    )
    # 5 x (420 - 405) = 75 price P&L; fees 0.25 -> realized 74.75
    (row,) = proj.snapshot()
    assert row.qty == 15 and row.avg_entry_price == D(405)
    assert row.realized_pnl == D("74.75")
    assert row.fees == D("0.25")
    assert row.opened_at == at(1)  # adding and partly closing keep "open since"


def test_closed_positions_leave_the_snapshot_but_keep_their_realized_pnl():
    proj = PositionsProjection()
    feed(
        proj,
        fill("TSLA", "sell", 20, "200", when=at(1)),  # short 20 @ 200
        fill("TSLA", "buy", 20, "190", when=at(5)),  # cover: 20 x (200 - 190) = 200
    )
    assert proj.snapshot() == ()
    assert proj.open_symbols() == ()
    (row,) = proj.snapshot(include_closed=True)
    assert row.side == "flat" and row.avg_entry_price is None and row.opened_at is None
    assert row.realized_pnl == D(200)
    assert proj.realized_total() == D(200)
    # reopening starts a new "open since"
    feed(proj, fill("TSLA", "buy", 5, "191", when=at(9)))
    (row,) = proj.snapshot()
    assert row.opened_at == at(9) and row.qty == 5


def test_a_flip_through_zero_restarts_open_since_at_the_flip_price():
    proj = PositionsProjection()
    feed(
        proj,
        fill("NVDA", "buy", 10, "100", when=at(1)),
        fill("NVDA", "sell", 25, "104", when=at(7)),  # closes 10 (+40), opens short 15 @ 104
    )
    (row,) = proj.snapshot()
    assert row.qty == -15 and row.side == "short"
    assert row.avg_entry_price == D(104)
    assert row.realized_pnl == D(40)
    assert row.opened_at == at(7)


def test_the_same_fill_is_counted_once():
    proj = PositionsProjection()
    first = fill("AMD", "buy", 10, "150", order_id="o9", fill_id="f1")
    # the same broker fill arriving again under another event id (e.g. reconciliation)
    again = fill("AMD", "buy", 10, "150", order_id="o9", fill_id="f1")
    feed(proj, first, first, again)
    assert proj.position("AMD").qty == 10


def test_bars_and_unknown_symbols_do_not_matter():
    proj = PositionsProjection()
    assert not proj.wants(bar("AAPL", 10))
    assert proj.position("NOPE").is_flat


def test_snapshot_rows_serialise_for_the_cli():
    proj = PositionsProjection()
    feed(proj, fill("AAPL", "buy", 3, "10.01", when=at(0)),
         fill("AAPL", "buy", 1, "10.02", when=at(1)))
    # avg (30.03 + 10.02) / 4 = 10.0125
    d = proj.snapshot()[0].as_dict()
    assert d == {
        "symbol": "AAPL", "qty": "4", "side": "long", "avg_entry_price": "10.0125",
        "realized_pnl": "0.00", "fees": "0", "opened_at": at(0).isoformat(),
        "last_fill_price": "10.02", "last_fill_at": at(1).isoformat(),
    }


def test_rebuild_from_the_log_gives_the_same_snapshot():
    log = [
        fill("AAPL", "buy", 10, "100", when=at(1)),
        fill("AAPL", "sell", 4, "103", when=at(2)),
        fill("MSFT", "sell", 2, "400", when=at(3)),
    ]
    live = PositionsProjection()
    feed(live, *log)
    rebuilt = PositionsProjection()
    rebuilt.rebuild(log)
    assert rebuilt.snapshot(include_closed=True) == live.snapshot(include_closed=True)
