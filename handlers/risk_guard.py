"""Risk guard: sizes and approves or denies every signal; trips the daily-loss alarms.

Signals (`SignalGenerated`) are sized, then checked in this order; the first rule that
fails names the denial:

    halted            an emergency stop halted trading (see "Halt" below)
    invalid_signal    entry <= 0, or the stop is not on the losing side of the entry
    position_or_order_open
                      the symbol already has a position or a pending entry order, whatever
                      the signal's side: one position per symbol, and its bracket legs live
                      and die with it (a same-side order would grow it past the cap, an
                      opposite one would net it to zero and leave the old legs working)
    position_size     one share at the limit price costs more than max_position_size_usd
    buying_power      not one share fits the buying power left
    max_positions     the order would open a position beyond max_positions
    reward_risk       (target - entry) / (entry - stop) < min_reward_risk (mirrored for shorts)
    symbol_exposure   |position + pending + this order| x entry > max_symbol_exposure_pct x equity
    daily_loss        today's P&L is at or below -max_daily_loss_usd
    stop_risk         min(today's P&L, today's realized - open positions' stop losses)
                      - pending orders' stop losses - qty x |limit - stop|
                      would go below -max_daily_loss_usd

Entries are marketable limit orders (`entry_limit`): limit = entry x (1 + s) for a buy,
entry x (1 - s) for a sell, s = order_execution.entry_limit_slippage_pct, rounded to the
cent towards the signal's price. A buy fills at the limit or better, so sizing against the
limit makes max_position_size_usd hold at the fill:
    qty = floor((max_position_size_usd - what the symbol already holds or has pending)
                / sizing price), and qty x sizing price <= buying power,
where the sizing price is the buy limit, and for a sell entry x (1 + s) (a short fills at
its limit or higher, so for shorts this is a buffer, not a bound; the strategy is long only).
Stop risk is measured from the worst fill (the limit) to the stop. An open position's stop
risk is |qty| x |average entry - stop| of the approval that opened it; today's P&L is taken
no better than today's realized P&L, so an unrealized gain never pays for a new stop.

Account figures come from the broker: the latest `AccountSnapshotted` (published by the
broker effect at the session start, after every fill and every minute, by the simulated
broker too) gives cash and equity; buying power is its buying power less the notional of
pending entries the broker had not been sent when it was taken (one it had is already
reserved in the broker's figure). Until a first snapshot, the figures follow a starting cash
(constructor) and the fills:
    cash          starting cash - buys x price + sells x price - fees
    equity        cash + sum(qty x last fill price)   (we do not consume bars: hot path)
    buying power  equity - sum(|qty| x last fill price) - pending orders' notional
                  i.e. no leverage: longs and shorts both tie up their full value.
Approved orders that are not yet filled, canceled or rejected ("pending") count toward
max_positions, exposure, buying power and stop risk, so a burst of signals cannot
overshoot a limit before the first fill comes back. Each approval is an `Order` aggregate
(domain/aggregates.py) keyed by client_order_id, which every order event carries (a fill
recorded before its OrderSubmitted has order_id = client_order_id); the working ones are the
pending entries. Bracket-leg fills and cancels (exits) do not touch them. An update the order
cannot take (a fill after its cancel, beyond its quantity) is refused: the order keeps its
state and `refused_transitions` counts it; the guard goes on.

Daily P&L alarms (on `DailyPnLChanged`, per its session date):
    total <= -warning_threshold_pct x limit  -> DailyLossWarningIssued, once per date
    total <= -limit                          -> EmergencyStopTriggered, once per date
"Once" is the date's `TradingDay` aggregate, rebuilt from the log (the handler's own outputs
are evolved), so it holds across restarts. Both fire on the same event if one change crosses
both.

Halt: after `EmergencyStopTriggered` with actions.halt_new_trades (the actions are recorded
in the event, so a replay decides the same way), every signal is denied "halted". With
actions.require_manual_restart the halt lasts, across restarts and dates, until
`TradingResumed`; without it, the next New York session date starts active. With
halt_new_trades false, the daily_loss rule still denies for the rest of that date.

Limits are read from the `settings` argument on every event: a hot reload applies to the
next decision. Figures in denials are strings (Decimal text).

Past ~400 lines (just): most of it is this docstring and the rules in their order, which is
the contract; the state lives in domain/aggregate_state.py and domain/book.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, ClassVar
from uuid import UUID, uuid5

from domain.aggregate_state import Orders, TradingDays
from domain.aggregates import Order
from domain.book import PositionBook
from domain.events import (
    AccountSnapshotted,
    DailyLossWarningIssued,
    DailyPnLChanged,
    EmergencyStopTriggered,
    Event,
    OrderApproved,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    SignalGenerated,
    TradingResumed,
)
from domain.pnl import ZERO, SessionDateCache, reward_risk, signed_qty
from domain.values import Side, derive_id
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings

ONE = Decimal(1)
_CENT = Decimal("0.01")
_SUBCENT = Decimal("0.0001")  # Alpaca's increment for prices under $1


def entry_limit(side: Side, entry: Decimal, slippage: Decimal) -> Decimal:
    """The marketable limit price of an entry at `entry` with at most `slippage` (a fraction).

    Rounded towards the signal's price (down for a buy, up for a sell), so the limit never
    allows more slippage than configured.
    """
    step = _CENT if entry >= ONE else _SUBCENT
    if side is Side.BUY:
        return (entry * (ONE + slippage)).quantize(step, rounding=ROUND_FLOOR)
    return (entry * (ONE - slippage)).quantize(step, rounding=ROUND_CEILING)


def order_ids_for(approval_event_id: UUID) -> tuple[str, str]:
    """(order_id, client_order_id) of an approval: derived, so a re-run sends the same."""
    return (
        str(uuid5(approval_event_id, "order_id")),
        str(uuid5(approval_event_id, "client_order_id")),
    )


def _signed(order: Order) -> Decimal:
    return signed_qty(order.side, order.remaining_qty)


@dataclass(frozen=True, slots=True)
class Account:
    """What the guard knows of the account at a decision."""

    cash: Decimal
    equity: Decimal
    gross_value: Decimal
    pending_notional: Decimal
    pending_stop_risk: Decimal
    broker_buying_power: Decimal | None = None  # the latest AccountSnapshotted's
    unreserved_notional: Decimal = ZERO  # pending entries the broker had not been sent then

    @property
    def buying_power(self) -> Decimal:
        if self.broker_buying_power is not None:
            return self.broker_buying_power - self.unreserved_notional
        return self.equity - self.gross_value - self.pending_notional


class RiskGuard(Handler):
    name: ClassVar[str] = "risk_guard"
    emits: ClassVar[frozenset[str]] = frozenset({
        "OrderApproved", "OrderDenied", "DailyLossWarningIssued", "EmergencyStopTriggered"})
    subjects: ClassVar[tuple[str, ...]] = (
        "catalyst.signal.generated", "catalyst.pnl.daily_changed", "catalyst.order.>",
        "catalyst.risk.>", "catalyst.broker.account_snapshotted",
    )
    accepts: ClassVar[frozenset[str] | None] = frozenset({
        "SignalGenerated", "DailyPnLChanged", "OrderApproved", "OrderFilled",
        "OrderPartiallyFilled", "OrderCanceled", "OrderRejected", "DailyLossWarningIssued",
        "EmergencyStopTriggered", "TradingResumed", "OrderSubmitted", "AccountSnapshotted",
    })

    def __init__(self, starting_cash: Decimal = Decimal("100000")) -> None:
        super().__init__()
        self._dates = SessionDateCache()
        self._cash = Decimal(starting_cash)
        # Positions, last prices and realized P&L per session date: the shared book (fills
        # only, deduplicated by fill id; marks are fill prices: the guard takes no bars).
        self._book = PositionBook()
        # Approved entry orders, as Order aggregates by client_order_id: the working ones
        # are the pending entries.
        self._orders = Orders()
        # The trading state per session date (warned, stopped, halted), as TradingDay
        # aggregates.
        self._days = TradingDays()
        self._pnl: dict[date, Decimal] = {}  # latest DailyPnLChanged total per date
        # client_order_ids of the entries at the broker when the latest snapshot was taken
        self._in_snapshot: set[str] = set()
        self._stops: dict[str, Decimal] = {}  # symbol -> stop of the entry that opened it
        self._snapshot: AccountSnapshotted | None = None  # the broker's latest figures

    # --- state -----------------------------------------------------------------------------

    def evolve(self, event: Event) -> None:
        if isinstance(event, OrderFilled | OrderPartiallyFilled):
            self._on_fill(event)
        elif isinstance(event, OrderApproved | OrderSubmitted | OrderCanceled | OrderRejected):
            self._orders.apply(event)
        elif isinstance(event, AccountSnapshotted):
            self._snapshot = event
            self._in_snapshot = {o.client_order_id for o in self._orders.working()
                                 if o.at_broker}
        elif isinstance(event, DailyPnLChanged):
            self._pnl[event.session_date] = event.total
        elif isinstance(event, DailyLossWarningIssued | EmergencyStopTriggered | TradingResumed):
            self._days.apply(event)

    def _on_fill(self, event: OrderFilled | OrderPartiallyFilled) -> None:
        result = self._book.apply(event)
        if result is None:
            return  # the same fill again
        if result.position.is_flat:
            self._stops.pop(event.symbol, None)
        self._cash -= signed_qty(event.side, event.qty) * event.price + event.fee
        order = self._orders.apply(event)  # None for a bracket exit, or a refused fill
        if order is not None and order.stop_loss is not None and not result.position.is_flat:
            self._stops[event.symbol] = order.stop_loss

    @property
    def refused_transitions(self) -> int:
        """Order and trading-day commands the log asked for and the aggregates refused
        (`domain.aggregates.Refusals`: the latest messages are on `_orders` / `_days`)."""
        return self._orders.refusals.count + self._days.refusals.count

    # --- queries ---------------------------------------------------------------------------

    def account(self) -> Account:
        value = gross = ZERO
        book = self._book
        for symbol, pos in book.open_positions().items():
            if pos.qty:
                mv = pos.qty * (book.last_price(symbol) or ZERO)
                value += mv
                gross += abs(mv)
        notional = risk = unreserved = ZERO
        in_snapshot = self._in_snapshot
        for o in self._orders.working():
            value_left = o.remaining_qty * o.price
            notional += value_left
            risk += o.stop_risk
            if o.client_order_id not in in_snapshot:
                unreserved += value_left
        snap = self._snapshot
        if snap is not None:
            return Account(snap.cash, snap.equity, gross, notional, risk,
                           broker_buying_power=snap.buying_power,
                           unreserved_notional=unreserved)
        return Account(self._cash, self._cash + value, gross, notional, risk)

    def open_stop_risk(self) -> Decimal:
        """What open positions lose from their average entry to their stops (on today's
        basis: a position carried from an earlier date from where it entered today)."""
        risk = ZERO
        for symbol, stop in self._stops.items():
            pos = self._book.day_position(symbol)
            if pos.qty:
                avg = pos.avg_price
                assert avg is not None
                risk += max(ZERO, (avg - stop) * pos.qty)  # qty signed: shorts mirror
        return risk

    def open_symbols(self) -> set[str]:
        """Symbols with a position or a pending entry order."""
        held = set(self._book.open_positions())
        return held | {o.symbol for o in self._orders.working() if o.remaining_qty > 0}

    def pnl_on(self, day: date) -> Decimal:
        return self._pnl.get(day, ZERO)

    def halted_on(self, day: date) -> bool:
        return self._days.halted_on(day)

    # --- decisions -------------------------------------------------------------------------

    def decide(self, event: Event, settings: Settings) -> list[Event]:
        if isinstance(event, SignalGenerated):
            return [self._decide_signal(event, settings)]
        if isinstance(event, DailyPnLChanged):
            return self._decide_pnl(event, settings)
        return []

    def _decide_pnl(self, event: DailyPnLChanged, settings: Settings) -> list[Event]:
        limits = settings.limits
        limit = limits.max_daily_loss_usd
        total = event.total
        day = event.session_date
        out: list[Event] = []
        warn_at = -limit * Decimal(str(limits.warning_threshold_pct))
        if total <= warn_at and not self._days.warned(day):
            out.append(DailyLossWarningIssued.caused_by(
                event, len(out), self.name, session_date=day, pnl=total, limit=limit,
                pct_used=float(-total / limit), open_positions=event.open_positions,
            ))
        if total <= -limit and not self._days.limit_stopped(day):
            out.append(EmergencyStopTriggered.caused_by(
                event, len(out), self.name, session_date=day, pnl=total, limit=limit,
                reason=f"daily P&L {total} reached the daily loss limit -{limit}",
                actions=settings.emergency.model_dump(),
            ))
        return out

    def _decide_signal(self, sig: SignalGenerated, settings: Settings) -> Event:
        limits = settings.limits
        day = self._dates.date_of(sig.occurred_at)
        acct = self.account()
        entry, stop, target = sig.entry, sig.stop_loss, sig.take_profit
        max_size = limits.max_position_size_usd
        bp = acct.buying_power
        figures: dict[str, Decimal | int | str] = {
            "entry": entry, "stop_loss": stop, "take_profit": target,
            "session_date": day.isoformat(),
        }

        def deny(rule: str, detail: str, **extra: Decimal | int | str) -> Event:
            figures.update(extra)
            return OrderDenied.caused_by(
                sig, 0, self.name, signal_id=sig.signal_id, symbol=sig.symbol, rule=rule,
                detail=detail, figures={k: str(v) for k, v in figures.items()},
            )

        if self.halted_on(day):
            days = self._days
            return deny(
                "halted", "trading is halted by an emergency stop"
                + (" until TradingResumed" if days.until_resumed() else " for this session date"),
                halted_since=str(days.halted_since()),
            )
        rr = reward_risk(sig.side, entry, stop, target) if entry > 0 else None
        if rr is None:
            return deny("invalid_signal", f"{sig.side} signal needs entry > 0 and the stop "
                        f"on the losing side of the entry")

        held = self._book.position(sig.symbol).qty
        pending_here = [o for o in self._orders.working()
                        if o.symbol == sig.symbol and o.remaining_qty > 0]
        if held or pending_here:
            pending_qty = sum((_signed(o) for o in pending_here), ZERO)
            return deny("position_or_order_open",
                        f"{sig.symbol} already has a position ({held}) or a pending entry "
                        f"({pending_qty}): one position per symbol",
                        position_qty=held, pending_qty=pending_qty)

        slippage = Decimal(str(settings.execution.entry_limit_slippage_pct))
        limit_price = entry_limit(sig.side, entry, slippage)
        # The price the cap is measured at: the worst a buy can fill at (its limit); for a
        # sell, which fills at its limit or higher, the same distance above the entry.
        size_price = limit_price if sig.side is Side.BUY else (
            entry * (ONE + slippage)).quantize(_CENT if entry >= ONE else _SUBCENT,
                                               rounding=ROUND_CEILING)
        # What the symbol already holds or has pending counts against its cap (zero today:
        # position_or_order_open denies before; kept so the cap stays right if it goes).
        committed = abs(held) * (self._book.last_price(sig.symbol) or entry) + sum(
            (o.remaining_qty * o.price for o in pending_here), ZERO)
        room = max_size - committed
        qty_size = (room / size_price).to_integral_value(rounding=ROUND_FLOOR) \
            if room > 0 else ZERO
        qty_bp = (bp / size_price).to_integral_value(rounding=ROUND_FLOOR) if bp > 0 else ZERO
        qty = min(qty_size, qty_bp)
        figures.update(buying_power=bp, max_position_size_usd=max_size,
                       limit_price=limit_price)
        if qty_size < ONE:
            return deny("position_size", f"one share at {size_price} exceeds "
                        f"max_position_size_usd {max_size}")
        if qty < ONE:
            return deny("buying_power", f"buying power {bp} does not cover one share at "
                        f"{size_price}")
        figures.update(qty=qty, notional=qty * size_price)

        open_syms = self.open_symbols()
        count_after = len(open_syms) + (0 if sig.symbol in open_syms else 1)
        if count_after > limits.max_positions:
            return deny("max_positions", f"{len(open_syms)} positions open or pending; "
                        f"max_positions is {limits.max_positions}",
                        open_positions=len(open_syms), max_positions=limits.max_positions)

        min_rr = Decimal(str(limits.min_reward_risk))
        if rr < min_rr:
            return deny("reward_risk", f"reward/risk {rr:.4f} below min_reward_risk {min_rr}",
                        reward_risk=rr, min_reward_risk=min_rr)

        net_after = held + sum((_signed(o) for o in pending_here), ZERO)
        net_after += signed_qty(sig.side, qty)
        exposure = abs(net_after) * size_price
        pct = Decimal(str(limits.max_symbol_exposure_pct))
        max_exposure = pct * acct.equity
        if exposure > max_exposure:
            return deny("symbol_exposure", f"{sig.symbol} exposure {exposure} would exceed "
                        f"{pct} of equity {acct.equity} ({max_exposure})",
                        exposure=exposure, max_exposure=max_exposure, equity=acct.equity)

        limit = limits.max_daily_loss_usd
        pnl = self.pnl_on(day)
        if pnl <= -limit:
            return deny("daily_loss", f"today's P&L {pnl} is at or below the daily loss "
                        f"limit -{limit}", pnl=pnl, max_daily_loss_usd=limit)

        stop_risk = qty * abs(limit_price - stop)
        open_risk = self.open_stop_risk()
        realized = self._book.realized(day)
        # Every stop hit from here: open positions close at their stops (what they realize
        # then is today's realized less their stop risk), unless today's P&L is already lower
        # (a position through its stop); pending entries and this one fill at their limits.
        worst = min(pnl, realized - open_risk) - acct.pending_stop_risk - stop_risk
        if worst < -limit:
            return deny("stop_risk", f"hitting the stop (-{stop_risk}) with open positions' "
                        f"stops (-{open_risk}) and pending orders' stops "
                        f"(-{acct.pending_stop_risk}) would take today's P&L {pnl} "
                        f"(realized {realized}) to {worst}, below -{limit}",
                        pnl=pnl, realized=realized, stop_risk=stop_risk,
                        open_stop_risk=open_risk, pending_stop_risk=acct.pending_stop_risk,
                        max_daily_loss_usd=limit)

        approval_id = derive_id(sig.event_id, f"{self.name}:0")
        order_id, client_order_id = order_ids_for(approval_id)
        use_bracket = sig.use_bracket and settings.execution.use_bracket_orders
        approval = OrderApproved.caused_by(
            sig, 0, self.name, order_id=order_id, client_order_id=client_order_id,
            signal_id=sig.signal_id, symbol=sig.symbol, side=sig.side, qty=qty, entry=entry,
            stop_loss=stop, take_profit=target, use_bracket=use_bracket,
            order_type="limit", limit_price=limit_price,
            reason=f"reward/risk {rr:.2f}; stop risk {stop_risk}; "
                   f"notional {qty * size_price} at limit {limit_price}",
        )
        return approval  # its event_id == approval_id: caused_by derives it the same way
