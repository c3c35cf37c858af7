"""Positions read model: per symbol quantity, average entry, realized P&L, open since.

Built from fills only (`OrderFilled`, `OrderPartiallyFilled`, bracket legs included) under
average cost (domain/pnl.py). Lifetime figures: the daily view is projections/daily_pnl.py.
A fill seen twice under different event ids (e.g. the broker stream and a reconciliation)
is counted once, keyed by (order_id, fill_id).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from domain.events import Event, OrderFilled, OrderPartiallyFilled
from domain.pnl import Position, apply_fill
from handlers.base import Handler

_FILL_KEYS_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class PositionView:
    """One row of `catalyst status`."""

    symbol: str
    qty: Decimal  # signed: > 0 long, < 0 short, 0 closed
    side: str  # "long" / "short" / "flat"
    avg_entry_price: Decimal | None
    realized_pnl: Decimal  # closing fills' price P&L minus every fee on the symbol
    fees: Decimal
    opened_at: datetime | None  # time of the fill that opened it (from flat or a flip)
    last_fill_price: Decimal
    last_fill_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "qty": str(self.qty),
            "side": self.side,
            "avg_entry_price": None if self.avg_entry_price is None
            else str(self.avg_entry_price.quantize(Decimal("0.0001"))),
            "realized_pnl": str(self.realized_pnl.quantize(Decimal("0.01"))),
            "fees": str(self.fees),
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
            "last_fill_price": str(self.last_fill_price),
            "last_fill_at": self.last_fill_at.isoformat(),
        }


@dataclass(slots=True)
class _Entry:
    position: Position
    opened_at: datetime | None
    last_price: Decimal
    last_at: datetime


class PositionsProjection(Handler):
    name: ClassVar[str] = "positions"
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.order.filled", "catalyst.order.partially_filled",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset({"OrderFilled", "OrderPartiallyFilled"})

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[str, _Entry] = {}
        self._fill_keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    def evolve(self, event: Event) -> None:
        if not isinstance(event, OrderFilled | OrderPartiallyFilled):
            return
        key = (event.order_id, event.fill_id)
        if event.fill_id:
            if key in self._fill_keys:
                return
            self._fill_keys[key] = None
            if len(self._fill_keys) > _FILL_KEYS_LIMIT:
                self._fill_keys.popitem(last=False)
        entry = self._entries.get(event.symbol)
        pos = entry.position if entry else Position()
        result = apply_fill(pos, event.side, event.qty, event.price, event.fee)
        new = result.position
        if new.is_flat:
            opened_at = None
        elif result.opened:
            opened_at = event.occurred_at
        else:
            opened_at = entry.opened_at if entry else event.occurred_at
        self._entries[event.symbol] = _Entry(new, opened_at, event.price, event.occurred_at)

    # --- queries ---------------------------------------------------------------------------

    def position(self, symbol: str) -> Position:
        entry = self._entries.get(symbol)
        return entry.position if entry else Position()

    def open_symbols(self) -> tuple[str, ...]:
        return tuple(sorted(s for s, e in self._entries.items() if not e.position.is_flat))

    def realized_total(self) -> Decimal:
        return sum((e.position.net_realized for e in self._entries.values()), Decimal(0))

    def snapshot(self, include_closed: bool = False) -> tuple[PositionView, ...]:
        """Open positions (and closed ones with their realized P&L if asked), by symbol."""
        rows = []
        for symbol in sorted(self._entries):
            e = self._entries[symbol]
            p = e.position
            if p.is_flat and not include_closed:
                continue
            rows.append(PositionView(
                symbol=symbol, qty=p.qty, side=p.side, avg_entry_price=p.avg_price,
                realized_pnl=p.net_realized, fees=p.fees, opened_at=e.opened_at,
                last_fill_price=e.last_price, last_fill_at=e.last_at,
            ))
        return tuple(rows)
