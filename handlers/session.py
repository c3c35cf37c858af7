"""The session handler: starts a session when allowed and paces it through the day.

    SessionStartRequested -> SessionStarted | SessionStartRejected
    ClockTicked           -> ScanRequested (every scan_frequency_minutes),
                             EntriesStopped (N minutes before the close),
                             FlattenRequested (before the close, when auto_close is on),
                             SessionEnded (at the close, with the day's numbers)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from domain.calendar import MarketCalendar, MarketSession, session_date
from domain.events import (
    ClockTicked,
    EmergencyStopTriggered,
    EntriesStopped,
    Event,
    FlattenRequested,
    OrderFilled,
    OrderPartiallyFilled,
    ScanRequested,
    SessionEnded,
    SessionStarted,
    SessionStartRejected,
    SessionStartRequested,
    TradingResumed,
)
from domain.pnl import Position, apply_fill
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings


@dataclass
class DayTally:
    trades: int = 0
    wins: int = 0
    losses: int = 0
    realized: Decimal = Decimal(0)


@dataclass
class SessionState:
    session_id: str | None = None
    market: MarketSession | None = None
    scans: int = 0
    entries_stopped: bool = False
    flattened: bool = False
    ended: bool = False
    halted: bool = False
    halted_on: date | None = None
    # as recorded in the stop's actions, so a replay decides the same as the live run did
    halt_manual: bool = False
    tally: DayTally = field(default_factory=DayTally)
    # Per symbol: the open position and the P&L its round trip has realized so far.
    trips: dict[str, tuple[Position, Decimal]] = field(default_factory=dict)


class SessionHandler(Handler):
    name = "session"
    emits: ClassVar[frozenset[str]] = frozenset({
        "SessionStarted", "SessionStartRejected", "ScanRequested", "EntriesStopped",
        "FlattenRequested", "SessionEnded"})
    subjects = ("catalyst.session.>", "catalyst.order.filled",
                "catalyst.order.partially_filled", "catalyst.risk.>")
    accepts = frozenset({
        "SessionStartRequested", "SessionStarted", "ClockTicked", "ScanRequested",
        "EntriesStopped", "FlattenRequested", "SessionEnded", "OrderFilled",
        "OrderPartiallyFilled", "EmergencyStopTriggered", "TradingResumed",
    })

    def __init__(self, calendar: MarketCalendar, broker_name: str = "sim") -> None:
        super().__init__()
        self.calendar = calendar
        self.broker_name = broker_name
        self.state = SessionState()
        # Fills applied (order id, fill id): a fill translated again under another event id
        # (a reconnect, a REST backfill) is counted once, as in the position book.
        self._fill_keys: OrderedDict[tuple[str, str], None] = OrderedDict()

    # --- state -----------------------------------------------------------------------------

    def evolve(self, event: Event) -> None:
        st = self.state
        if isinstance(event, SessionStarted):
            self.state = SessionState(
                session_id=event.session_id, halted=st.halted, halted_on=st.halted_on,
                halt_manual=st.halt_manual, trips=st.trips,
                market=MarketSession(event.session_date, event.market_open, event.market_close,
                                     event.early_close),
            )
        elif isinstance(event, ScanRequested):
            st.scans = max(st.scans, event.scan_number)
        elif isinstance(event, EntriesStopped):
            st.entries_stopped = True
        elif isinstance(event, FlattenRequested):
            st.flattened = True
        elif isinstance(event, SessionEnded):
            st.ended = True
        elif isinstance(event, EmergencyStopTriggered):
            manual = event.actions.get("require_manual_restart", True)
            st.halt_manual = (st.halted and st.halt_manual) or manual
            st.halted, st.halted_on = True, event.session_date
        elif isinstance(event, TradingResumed):
            st.halted, st.halted_on, st.halt_manual = False, None, False
        elif isinstance(event, OrderFilled | OrderPartiallyFilled):
            self._count_trade(event)

    def _count_trade(self, fill: OrderFilled | OrderPartiallyFilled) -> None:
        """A trade is a round trip: counted, won or lost when the position returns to flat."""
        if fill.fill_id:
            key = (fill.order_id, fill.fill_id)
            if key in self._fill_keys:
                return
            self._fill_keys[key] = None
            if len(self._fill_keys) > 10_000:
                self._fill_keys.popitem(last=False)
        st = self.state
        pos, trip = st.trips.get(fill.symbol, (Position(), Decimal(0)))
        result = apply_fill(pos, fill.side, fill.qty, fill.price, fill.fee)
        trip += result.realized - fill.fee
        if result.position.is_flat:
            st.trips.pop(fill.symbol, None)
            if st.session_id is not None and not st.ended:
                t = st.tally
                t.trades += 1
                t.realized += trip
                t.wins += trip > 0
                t.losses += trip < 0
        else:
            st.trips[fill.symbol] = (result.position, trip)

    # --- decisions -------------------------------------------------------------------------

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, SessionStartRequested):
            return [self._start(event, settings)]
        if isinstance(event, ClockTicked):
            return self._tick(event, settings)
        return []

    def _halted_today(self, day: date) -> bool:
        st = self.state
        if not st.halted:
            return False
        # Without manual restart (as the stop recorded it) a halt ends with its session date.
        return st.halt_manual or st.halted_on == day

    def _start(self, ev: SessionStartRequested, settings: Settings) -> Event:
        day = ev.session_date or session_date(ev.occurred_at)

        def reject(reason: str) -> Event:
            return SessionStartRejected.caused_by(ev, 0, self.name, reason=reason,
                                                  session_date=day)

        if settings.session.mode != "autonomous":
            return reject("supervised mode not supported")
        market = self.calendar.session(day)
        if market is None:
            return reject(f"market closed on {day.isoformat()} (not an NYSE trading day)")
        if ev.occurred_at >= market.close:
            return reject(f"market already closed for {day.isoformat()}")
        if self._halted_today(day):
            return reject("trading halted by emergency stop; run `catalyst resume --reason ...`")
        st = self.state
        if st.session_id and st.market and st.market.session_date == day and not st.ended:
            return reject(f"session {st.session_id} already running")
        limits = settings.limits
        return SessionStarted.caused_by(
            ev, 0, self.name,
            session_id=f"session-{day.isoformat()}-{str(ev.event_id)[:8]}",
            session_date=day,
            mode=settings.session.mode,
            broker=self.broker_name,
            market_open=market.open,
            market_close=market.close,
            early_close=market.early_close,
            symbols=settings.trading.market_data.symbols,
            limits={
                "max_daily_loss_usd": str(limits.max_daily_loss_usd),
                "max_positions": str(limits.max_positions),
                "max_position_size_usd": str(limits.max_position_size_usd),
                "warning_threshold_pct": str(limits.warning_threshold_pct),
            },
        )

    def _tick(self, ev: ClockTicked, settings: Settings) -> list[Event]:
        st = self.state
        market = st.market
        if st.session_id is None or market is None or st.ended:
            return []
        if ev.session_date != market.session_date:
            return []
        out: list[Event] = []
        now = ev.occurred_at
        sid = st.session_id
        cfg = settings.session
        stop_at = market.close - timedelta(minutes=cfg.stop_new_entries_minutes_before_close)
        flatten_at = market.close - timedelta(minutes=cfg.flatten_minutes_before_close)
        if cfg.auto_close_at_market_close and flatten_at < stop_at:
            # An entry opened after the flatten would stay open over the close.
            stop_at = flatten_at
        if now >= stop_at and not st.entries_stopped:
            before = int((market.close - stop_at).total_seconds() // 60)
            out.append(EntriesStopped.caused_by(
                ev, len(out), self.name, session_id=sid,
                reason=f"{before} min before the close"))
        elif not st.entries_stopped and now < market.close:
            minutes = int((now - market.open).total_seconds() // 60)
            freq = settings.workflow.scan_frequency_minutes
            due = minutes // freq + 1  # scan 1 at the open, then every `freq` minutes
            if minutes >= 0 and due > st.scans:
                out.append(ScanRequested.caused_by(ev, len(out), self.name, session_id=sid,
                                                   scan_number=due))
        if cfg.auto_close_at_market_close and now >= flatten_at and not st.flattened:
            out.append(FlattenRequested.caused_by(
                ev, len(out), self.name, session_id=sid,
                reason=f"auto close {cfg.flatten_minutes_before_close} min before the close"))
        if now >= market.close:
            t = st.tally
            out.append(SessionEnded.caused_by(
                ev, len(out), self.name, session_id=sid, session_date=market.session_date,
                trades=t.trades, wins=t.wins, losses=t.losses, realized_pnl=t.realized))
        return out
