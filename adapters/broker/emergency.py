"""Flatten an account through any `BrokerPort`: the effect behind the emergency stop.

Order matters. Open orders go first: a bracket's exit legs hold the shares, so on Alpaca a
close before the cancel is refused ("insufficient qty available"), and a resting entry could
reopen what was just closed. Then every position is closed, and the broker is asked again
until nothing is left (close orders fill asynchronously), retrying whatever remains a few
times. The result says what was done and what was not; it never claims a flat book it did
not see.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ConfigDict

from adapters.broker.port import BrokerOrder, BrokerPort, BrokerRejection, BrokerUnavailable

log = logging.getLogger(__name__)

BROKER_ERRORS = (BrokerRejection, BrokerUnavailable)
UNKNOWN = "<unknown: the broker could not be listed>"


class EmergencyCloseResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    orders_canceled: int
    positions_closed: int  # close orders the broker accepted
    close_orders: tuple[BrokerOrder, ...] = ()
    failures: tuple[str, ...] = ()  # every error met on the way, in order
    remaining_orders: tuple[str, ...] = ()  # ids still open at the end
    remaining_positions: tuple[str, ...] = ()  # symbols still held at the end
    attempts: int = 1

    @property
    def flat(self) -> bool:
        return not self.remaining_orders and not self.remaining_positions


async def emergency_close(
    broker: BrokerPort,
    *,
    attempts: int = 3,
    settle_seconds: float = 5.0,
    poll_seconds: float = 0.2,
) -> EmergencyCloseResult:
    """Cancel all open orders, close all positions, verify; retry what is left."""
    canceled = closed = 0
    close_orders: list[BrokerOrder] = []
    failures: list[str] = []
    open_ids: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    attempt = 0
    for attempt in range(1, attempts + 1):
        # 1. Orders first (legs hold the shares the closes need).
        try:
            canceled += await broker.cancel_all_orders()
        except BROKER_ERRORS as exc:
            failures.append(f"cancel_all_orders: {exc}")
        open_ids = await _settle(lambda: _open_order_ids(broker, failures), settle_seconds,
                                 poll_seconds)
        for order_id in (i for i in open_ids if i != UNKNOWN):  # what the bulk cancel missed
            try:
                await broker.cancel_order(order_id)
                canceled += 1
            except BROKER_ERRORS as exc:
                failures.append(f"cancel_order {order_id}: {exc}")

        # 2. Then every position.
        try:
            positions = await broker.list_positions()
        except BROKER_ERRORS as exc:
            failures.append(f"list_positions: {exc}")
            positions = []
        for position in positions:
            try:
                close_orders.append(await broker.close_position(position.symbol))
                closed += 1
            except BrokerRejection as exc:
                if exc.status == 404:
                    continue  # already flat: a stop or target filled meanwhile
                failures.append(f"close_position {position.symbol}: {exc}")
            except BrokerUnavailable as exc:
                failures.append(f"close_position {position.symbol}: {exc}")

        # 3. Verify: close orders fill asynchronously, so give them a moment.
        held = await _settle(lambda: _held_symbols(broker, failures), settle_seconds,
                             poll_seconds)
        open_ids = await _open_order_ids(broker, failures)
        if not held and not open_ids:
            break
        log.warning("emergency close attempt %d left positions %s and %d open order(s)",
                    attempt, list(held), len(open_ids))

    result = EmergencyCloseResult(
        orders_canceled=canceled,
        positions_closed=closed,
        close_orders=tuple(close_orders),
        failures=tuple(failures),
        remaining_orders=open_ids,
        remaining_positions=held,
        attempts=attempt,
    )
    log.log(logging.INFO if result.flat else logging.ERROR,
            "emergency close: %d order(s) canceled, %d position(s) closed, flat=%s, "
            "%d failure(s)", canceled, closed, result.flat, len(failures))
    return result


async def _open_order_ids(broker: BrokerPort, failures: list[str]) -> tuple[str, ...]:
    try:
        return tuple(o.id for o in await broker.list_open_orders())
    except BROKER_ERRORS as exc:
        failures.append(f"list_open_orders: {exc}")
        return (UNKNOWN,)


async def _held_symbols(broker: BrokerPort, failures: list[str]) -> tuple[str, ...]:
    try:
        return tuple(p.symbol for p in await broker.list_positions() if p.qty != 0)
    except BROKER_ERRORS as exc:
        failures.append(f"list_positions: {exc}")
        return (UNKNOWN,)


async def _settle(
    probe: Callable[[], Awaitable[tuple[str, ...]]], settle_seconds: float, poll_seconds: float
) -> tuple[str, ...]:
    """Poll `probe` until it returns nothing or `settle_seconds` pass; return its last answer."""
    deadline = time.monotonic() + settle_seconds
    while True:
        left = await probe()
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(poll_seconds)
