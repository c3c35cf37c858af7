"""What the API and the dashboard show, folded from the log as it grows.

One reader per API process follows the record stream from its first message (an ephemeral
pull consumer, no acks), and the market-data stream from the last bar of each symbol (marks
for unrealized P&L). Every event goes through the same evolve-only fold `catalyst status`
uses (session, risk guard, positions), plus the views a dashboard needs: orders with their
bracket legs, the day's fills and round trips, alerts, the P&L curve, a tail of the log.
Reading the log (rather than the in-process pipeline) is what lets the same API run beside a
simulated run, a paper run, or on its own against a live store.

Subscribers (server-sent event streams) get every record event as it is applied. The
readers that feed it are in follow.py.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from adapters.audit.render import event_fields
from adapters.audit.status import StatusFold
from adapters.runtime.metrics import Metrics
from domain.calendar import NEW_YORK, session_date
from domain.events import (
    AlertFailed,
    AlertRaised,
    AlertSent,
    AlertSuppressed,
    DailyPnLChanged,
    Event,
    OrderApproved,
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    SessionStarted,
    SessionStartRequested,
)
from domain.pnl import Position, apply_fill

TAIL = 500
KEEP = 2000  # orders and alerts remembered (open orders always)


@dataclass(frozen=True)
class _Entry:
    """What StatusFold.add reads of a log entry."""

    event: Event


def _t(ts: datetime | None) -> str | None:
    return ts.astimezone(NEW_YORK).isoformat(timespec="seconds") if ts else None


def _s(v: Decimal | None) -> str | None:
    return None if v is None else format(v, "f")


@dataclass
class Published:
    """One record event as the stream carries it to subscribers."""

    seq: int
    subject: str
    type: str
    occurred_at: str
    data: dict[str, Any]
    text: str = ""  # one line, as `catalyst replay` prints the fields

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "subject": self.subject, "type": self.type,
                "occurred_at": self.occurred_at, "text": self.text, "event": self.data}


@dataclass
class OrderView:
    client_order_id: str
    symbol: str
    side: str
    qty: str
    status: str  # approved, submitted, partially_filled, filled, canceled, rejected
    created_at: datetime
    entry: str | None = None
    filled_qty: str = "0"
    avg_price: str | None = None
    legs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status in ("approved", "submitted", "partially_filled") or any(
            leg["status"] == "open" for leg in self.legs.values())

    def as_dict(self) -> dict[str, Any]:
        return {"client_order_id": self.client_order_id, "symbol": self.symbol,
                "side": self.side, "qty": self.qty, "status": self.status,
                "created_at": _t(self.created_at), "entry": self.entry,
                "filled_qty": self.filled_qty, "avg_price": self.avg_price,
                "legs": [{"leg": k, **v} for k, v in self.legs.items()]}


class Subscriber:
    """A server-sent event stream's queue. A client that falls this far behind is dropped
    (it reconnects and starts from a fresh state) rather than holding the log in memory."""

    def __init__(self, maxsize: int = 5000) -> None:
        self.queue: asyncio.Queue[Published | None] = asyncio.Queue(maxsize)
        self.dropped = False

    def put(self, item: Published | None) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True


class ReadModel:
    def __init__(self, broker_name: str = "sim", metrics: Metrics | None = None) -> None:
        self.fold = StatusFold(broker_name=broker_name)
        self.metrics = metrics or Metrics()
        self.orders: OrderedDict[str, OrderView] = OrderedDict()
        self.fills: dict[date, list[dict[str, Any]]] = {}
        self.trades: dict[date, list[dict[str, Any]]] = {}
        self._trips: dict[str, tuple[Position, Decimal, datetime]] = {}
        self.alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # P&L curve per date: the last total of each minute (a chart needs no more).
        self.pnl_points: dict[date, OrderedDict[str, str]] = {}
        self.limits: dict[str, str] = {}
        self.marks: dict[str, Decimal] = {}
        self.published: deque[Published] = deque(maxlen=TAIL)  # the stream's backlog
        self.start_requests: set[UUID] = set()
        self.record_seq = 0
        self.version = 0  # bumped on every change: the dashboard stream sends state then
        self.subscribers: set[Subscriber] = set()
        self.caught_up = asyncio.Event()
        self.connected = False

    # --- the fold --------------------------------------------------------------------------

    def apply(self, seq: int, subject: str, ev: Event) -> None:
        self.record_seq = seq
        self.fold.add(_Entry(ev))  # type: ignore[arg-type]
        self.metrics.observe_event(ev)
        self._track(ev)
        if len(self.orders) > KEEP or len(self.alerts) > KEEP:
            self._trim()
        self.version += 1
        item = Published(seq, subject, ev.type, _t(ev.occurred_at) or "",
                         ev.model_dump(mode="json"), event_fields(ev)[:300])
        self.published.append(item)
        for s in list(self.subscribers):
            s.put(item)

    def mark(self, symbol: str, close: Decimal) -> None:
        if self.marks.get(symbol) != close:
            self.marks[symbol] = close
            if any(p.symbol == symbol for p in self.fold.positions.snapshot()):
                self.version += 1

    def _trim(self) -> None:
        """A long-lived API keeps every open order and the latest of the rest (down to three
        quarters of KEEP at once, so trimming is rare)."""
        target = KEEP * 3 // 4
        closed = [c for c, o in self.orders.items() if not o.open]
        for coid in closed[:max(0, len(self.orders) - target)]:
            del self.orders[coid]
        while len(self.alerts) > target:
            self.alerts.popitem(last=False)

    def _track(self, ev: Event) -> None:
        if isinstance(ev, SessionStartRequested):
            self.start_requests.add(ev.event_id)
        elif isinstance(ev, SessionStarted):
            self.limits = dict(ev.limits)
        elif isinstance(ev, DailyPnLChanged):
            at = ev.occurred_at.astimezone(NEW_YORK).strftime("%H:%M")
            self.pnl_points.setdefault(ev.session_date, OrderedDict())[at] = format(ev.total, "f")
        elif isinstance(ev, OrderApproved):
            self.orders[ev.client_order_id] = OrderView(
                ev.client_order_id, ev.symbol, str(ev.side), _s(ev.qty) or "", "approved",
                ev.occurred_at, entry=_s(ev.entry))
            legs = self.orders[ev.client_order_id].legs
            if ev.use_bracket and ev.stop_loss is not None:
                legs["stop_loss"] = {"status": "pending", "price": _s(ev.stop_loss)}
            if ev.use_bracket and ev.take_profit is not None:
                legs["take_profit"] = {"status": "pending", "price": _s(ev.take_profit)}
        elif isinstance(ev, OrderSubmitted):
            o = self._order(ev.client_order_id, ev.symbol, str(ev.side), _s(ev.qty), ev)
            o.status = "submitted"
            for leg, price in (("stop_loss", ev.stop_loss), ("take_profit", ev.take_profit)):
                if price is not None:
                    o.legs.setdefault(leg, {"status": "pending", "price": _s(price)})
        elif isinstance(ev, OrderFilled | OrderPartiallyFilled):
            self._fill(ev)
        elif isinstance(ev, OrderCanceled):
            o = self.orders.get(ev.client_order_id)
            if o is not None:
                if ev.leg:
                    o.legs.setdefault(ev.leg, {"price": None})["status"] = "canceled"
                else:
                    o.status = "canceled" if o.status != "filled" else o.status
                    for leg in o.legs.values():
                        if leg["status"] in ("pending", "open"):
                            leg["status"] = "canceled"
        elif isinstance(ev, OrderRejected):
            o = self._order(ev.client_order_id, ev.symbol, "", None, ev)
            o.status = "rejected"
            for leg in o.legs.values():
                leg["status"] = "canceled"
        elif isinstance(ev, AlertRaised):
            self.alerts[ev.alert_id] = {
                "alert_id": ev.alert_id, "at": _t(ev.occurred_at), "kind": ev.kind,
                "severity": str(ev.severity), "title": ev.title, "status": "pending"}
        elif isinstance(ev, AlertSent | AlertFailed | AlertSuppressed):
            a = self.alerts.setdefault(ev.alert_id, {
                "alert_id": ev.alert_id, "at": _t(ev.occurred_at), "kind": ev.kind,
                "severity": str(ev.severity), "title": ev.kind})
            if isinstance(ev, AlertSent):
                a.update(status="sent", channel=ev.channel, sent_at=_t(ev.occurred_at),
                         subject_line=ev.subject_line)
            elif isinstance(ev, AlertFailed):
                a.update(status="pending (retrying)" if ev.will_retry else "failed",
                         error=ev.reason[:200])
            else:
                a.update(status="suppressed", rule=ev.rule)

    def _order(self, coid: str, symbol: str, side: str, qty: str | None, ev: Event) -> OrderView:
        o = self.orders.get(coid)
        if o is None:  # an order no approval announced (a close, a reconciliation)
            o = self.orders[coid] = OrderView(coid, symbol, side, qty or "", "submitted",
                                              ev.occurred_at)
        return o

    def _fill(self, ev: OrderFilled | OrderPartiallyFilled) -> None:
        day = session_date(ev.occurred_at)
        self.fills.setdefault(day, []).append({
            "at": _t(ev.occurred_at), "symbol": ev.symbol, "side": str(ev.side),
            "qty": _s(ev.qty), "price": _s(ev.price), "leg": ev.leg,
            "client_order_id": ev.client_order_id})
        o = self._order(ev.client_order_id, ev.symbol, str(ev.side), _s(ev.qty), ev)
        if ev.leg:
            o.legs.setdefault(ev.leg, {"price": None}).update(status="filled",
                                                              fill_price=_s(ev.price))
        else:
            o.status = "filled" if isinstance(ev, OrderFilled) else "partially_filled"
            o.filled_qty, o.avg_price = _s(ev.filled_qty) or "0", _s(ev.price)
            for leg in o.legs.values():
                if leg["status"] == "pending":
                    leg["status"] = "open"
        # Round trips, as the session handler counts them: closed when back to flat.
        pos, trip, opened = self._trips.get(ev.symbol, (Position(), Decimal(0), ev.occurred_at))
        if pos.is_flat:
            opened = ev.occurred_at
        result = apply_fill(pos, ev.side, ev.qty, ev.price, ev.fee)
        trip += result.realized - ev.fee
        if result.position.is_flat:
            self._trips.pop(ev.symbol, None)
            self.trades.setdefault(day, []).append({
                "symbol": ev.symbol, "opened_at": _t(opened), "closed_at": _t(ev.occurred_at),
                "pnl": format(trip.quantize(Decimal("0.01")), "f")})
        else:
            self._trips[ev.symbol] = (result.position, trip, opened)

    # --- views -----------------------------------------------------------------------------

    @property
    def today(self) -> date | None:
        at = self.fold.last_event_at
        return session_date(at) if at else None

    def positions(self) -> list[dict[str, Any]]:
        out = []
        latest = self.fold.pnl[max(self.fold.pnl)] if self.fold.pnl else None
        for p in self.fold.positions.snapshot():
            mark = self.marks.get(p.symbol, p.last_fill_price)
            unreal = ((mark - p.avg_entry_price) * p.qty).quantize(Decimal("0.01")) \
                if p.avg_entry_price is not None else None
            row = p.as_dict()
            row.update(mark=_s(mark), unrealized_pnl=_s(unreal),
                       day_pnl=latest.by_symbol.get(p.symbol) if latest else None)
            out.append(row)
        return out

    def open_orders(self) -> list[dict[str, Any]]:
        return [o.as_dict() for o in self.orders.values() if o.open]

    def pnl(self, day: date | None = None) -> dict[str, Any]:
        day = day or (max(self.fold.pnl) if self.fold.pnl else self.today)
        latest = self.fold.pnl.get(day) if day else None
        limit = Decimal(self.limits.get("max_daily_loss_usd", "0") or "0")
        pct = Decimal(self.limits.get("warning_threshold_pct", "0") or "0")
        points = self.pnl_points.get(day, {}) if day else {}
        return {
            "session_date": day.isoformat() if day else None,
            "total": _s(latest.total) if latest else "0",
            "realized": _s(latest.realized) if latest else "0",
            "unrealized": _s(latest.unrealized) if latest else "0",
            "fees": _s(latest.fees) if latest else "0",
            "intraday_low": _s(latest.intraday_low) if latest else "0",
            "by_symbol": dict(latest.by_symbol) if latest else {},
            "loss_limit": _s(-limit) if limit else None,
            "warning_line": _s((-limit * pct).quantize(Decimal("0.01"))) if limit else None,
            "points": [[t, v] for t, v in points.items()],
        }

    def alert_list(self) -> list[dict[str, Any]]:
        return list(self.alerts.values())

    def status(self) -> dict[str, Any]:
        view = self.fold.view()
        view["log"] = {"record_seq": self.record_seq, "caught_up": self.caught_up.is_set(),
                       "connected": self.connected}
        return view

    def dashboard(self) -> dict[str, Any]:
        view = self.status()
        pnl = self.pnl()
        day = date.fromisoformat(pnl["session_date"]) if pnl["session_date"] else None
        return {
            "version": self.version, "as_of": view["as_of"], "run": view["run"],
            "session": view["session"], "trading": view["trading"], "pnl": pnl,
            "positions": self.positions(), "orders": self.open_orders(),
            "fills": self.fills.get(day, [])[-200:] if day else [],
            "trades": self.trades.get(day, []) if day else [],
            "alerts": self.alert_list()[-100:],
        }
