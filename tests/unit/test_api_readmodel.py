"""The API's read model keeps what a dashboard needs, and no more, however long it runs."""

from __future__ import annotations

from decimal import Decimal

from adapters.api import readmodel
from domain.events import OrderApproved, OrderCanceled
from tests.builders import T0, make


def test_the_read_model_forgets_old_closed_orders_but_never_an_open_one() -> None:
    model = readmodel.ReadModel()
    n = readmodel.KEEP + 10
    for i in range(n):
        model.apply(i * 2 + 1, "catalyst.order.approved", make(
            OrderApproved, f"a{i}", T0, order_id=f"o{i}", client_order_id=f"c{i}",
            signal_id=f"s{i}", symbol="AAPL", side="buy", qty=Decimal(1), entry=Decimal(1)))
        if i:  # the first one stays open
            model.apply(i * 2 + 2, "catalyst.order.canceled", make(
                OrderCanceled, f"x{i}", T0, order_id=f"o{i}", client_order_id=f"c{i}",
                broker_order_id="", symbol="AAPL"))
    assert len(model.orders) <= readmodel.KEEP and "c0" in model.orders
    assert f"c{n - 1}" in model.orders
