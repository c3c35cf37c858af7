"""Strategy: ranked candidates in, entry signals out.

On `ScanCompleted` it walks the candidates in rank order and signals the first
`execute_top_n` that qualify: composite >= `min_composite_score`, not already signalled this
session, not currently held, and with a stop that lands strictly between 0 and the entry.
A skipped candidate does not use up a slot, so the next qualifying one moves up.

Entry = candidate price; stop = entry - bracket_stop_loss_atr x ATR; target = entry +
bracket_take_profit_atr x ATR; all rounded to cents. Signals are only emitted inside a
started session (`SessionStarted`), and none after `EntriesStopped` until the next
`SessionStarted`. Long only: `side` is always buy.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, ClassVar

from domain.events import (
    CandidateScore,
    EntriesStopped,
    Event,
    OrderFilled,
    OrderPartiallyFilled,
    PositionClosed,
    ScanCompleted,
    SessionStarted,
    SignalGenerated,
)
from domain.values import CENT, Side, derive_id, to_price
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings


def bracket_prices(
    entry: Decimal, atr: Decimal, stop_atr: float, target_atr: float
) -> tuple[Decimal, Decimal, Decimal]:
    """(entry, stop, target) in cents; the multiples are config floats, taken at their
    decimal spelling (2.0 -> Decimal("2.0")) so no binary float touches a price.

    Stop and target round up, in the trade's favour (less risk, more reward): rounding
    the other way would put a 3:2 bracket just under a 1.5 reward/risk minimum and the
    risk guard would refuse it for a fraction of a cent."""
    e = to_price(entry)
    stop = (e - Decimal(str(stop_atr)) * atr).quantize(CENT, rounding=ROUND_CEILING)
    target = (e + Decimal(str(target_atr)) * atr).quantize(CENT, rounding=ROUND_CEILING)
    return e, stop, target


def reason_text(c: CandidateScore) -> str:
    """One line a person can read: why this symbol, in the scanner's own figures."""
    d = c.details
    parts = [
        f"rank {c.rank} composite {c.composite:.2f}",
        f"catalyst {c.catalyst:.2f}"
        + (f" ({', '.join(d['catalysts'])})" if d.get("catalysts") else ""),
        f"momentum {c.momentum:.2f}"
        + (f" ({d['momentum_pct']:+.2f}%)" if d.get("momentum_pct") is not None else ""),
        f"volume {c.volume:.2f}"
        + (f" ({d['volume_ratio']:.2f}x)" if d.get("volume_ratio") is not None else ""),
    ]
    tech = []
    if d.get("rsi") is not None:
        tech.append(f"RSI {d['rsi']:.1f}")
    macd = d.get("macd")
    if macd:
        tech.append(f"MACD hist {macd['histogram']:+.4f}")
    tech.extend(d.get("patterns_detected", []))
    parts.append(f"technical {c.technical:.2f}" + (f" ({', '.join(tech)})" if tech else ""))
    text = "; ".join(parts)
    if c.penalty:
        text += f"; climax volume penalty -{c.penalty:.2f}"
    return text


class Strategy(Handler):
    name: ClassVar[str] = "strategy"
    emits: ClassVar[frozenset[str]] = frozenset({"SignalGenerated"})
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.scan.completed",
        "catalyst.session.started",
        "catalyst.session.entries_stopped",
        "catalyst.signal.generated",
        "catalyst.order.filled",
        "catalyst.order.partially_filled",
        "catalyst.position.closed",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset(
        {
            "ScanCompleted", "SessionStarted", "EntriesStopped", "SignalGenerated",
            "OrderFilled", "OrderPartiallyFilled", "PositionClosed",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.session_id: str | None = None
        self.entries_stopped = False
        # Signalled this session and not yet closed again: a symbol may be traded again
        # once its previous round trip is over, never twice at once.
        self.signalled: set[str] = set()
        self.held: set[str] = set()  # across sessions, from fills

    def evolve(self, event: Event) -> None:
        if isinstance(event, SessionStarted):
            self.session_id = event.session_id
            self.entries_stopped = False
            self.signalled = set()
        elif isinstance(event, EntriesStopped):
            if event.session_id == self.session_id:
                self.entries_stopped = True
        elif isinstance(event, SignalGenerated):
            self.signalled.add(event.symbol)
        elif isinstance(event, OrderFilled | OrderPartiallyFilled):
            if event.side is Side.BUY:
                self.held.add(event.symbol)
            elif isinstance(event, OrderFilled):
                # A completed sell (bracket leg or exit) flattens our long-only position.
                self.held.discard(event.symbol)
                self.signalled.discard(event.symbol)
        elif isinstance(event, PositionClosed):
            self.held.discard(event.symbol)
            self.signalled.discard(event.symbol)

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        if not isinstance(event, ScanCompleted):
            return []
        if self.session_id is None or event.session_id != self.session_id:
            return []
        if self.entries_stopped:
            return []
        wf, ex = settings.workflow, settings.execution
        out: list[Event] = []
        for c in sorted(event.candidates, key=lambda c: (c.rank, c.symbol)):
            if len(out) >= wf.execute_top_n:
                break
            if c.composite < wf.min_composite_score:
                continue
            if c.symbol in self.signalled or c.symbol in self.held:
                continue
            if c.atr <= 0:
                continue
            entry, stop, target = bracket_prices(
                c.price, c.atr, ex.bracket_stop_loss_atr, ex.bracket_take_profit_atr
            )
            if not Decimal(0) < stop < entry < target:
                continue
            index = len(out)
            out.append(
                SignalGenerated.caused_by(
                    event, index, self.name,
                    signal_id=str(derive_id(event.event_id, f"{self.name}:signal:{c.symbol}")),
                    symbol=c.symbol,
                    side=Side.BUY,
                    entry=entry,
                    stop_loss=stop,
                    take_profit=target,
                    use_bracket=ex.use_bracket_orders,
                    score=c.composite,
                    reason=reason_text(c),
                )
            )
        return out
