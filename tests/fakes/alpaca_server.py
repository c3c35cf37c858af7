"""A fake Alpaca Trading API: HTTP + the `trade_updates` WebSocket, on 127.0.0.1.

The real alpaca-py clients talk to it through their URL overrides
(`TradingClient(url_override=fake.url)`, `TradingStream(url_override=fake.stream_url)`), so
integration tests exercise the real wire code. It keeps the Alpaca behaviours the adapter
depends on:

- `client_order_id` is unique forever: a reuse is 422 `{"code":40010001,...}`.
- buying power (403 `insufficient buying power`) and held quantity (403 `insufficient qty
  available`: bracket legs hold the shares, so a close before a cancel fails, as on Alpaca).
- bracket legs are `held` until the entry fills; a filled leg cancels its sibling (OCO).
- `GET /v2/orders?after=` filters on `submitted_at`, not on `updated_at` (as documented).
- `trade_updates` frames are binary JSON (msgpack if the client speaks msgpack).

Orders never fill by themselves: a test fills them with `fill()` (or sets
`auto_fill_market`), and moves them to Alpaca's other states with `expire()`,
`done_for_day()`, `reject()` and `trigger_stop_replaced()`. Faults: `fail_next` (with
`after=True`: the request is executed and only its answer is an error), `delay_next`,
`drop_streams` / `stream_outage` (TCP abort, or `clean=True`: a close handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import msgpack
from aiohttp import WSMsgType, web

NEW_YORK = ZoneInfo("America/New_York")
OPEN_STATUSES = frozenset(
    {"new", "accepted", "pending_new", "held", "partially_filled", "pending_cancel",
     "accepted_for_bidding", "calculated", "pending_replace"}
)
ZERO = Decimal(0)

# Alpaca's error codes, as its API returns them.
UNPROCESSABLE = 40010001
FORBIDDEN = 40310000
NOT_FOUND = 40410000
INVALID_ORDER = 42210000
UNAUTHORIZED = 40110000


def _s(value: Decimal | None) -> str | None:
    """Decimals as Alpaca sends them: plain strings, no exponent."""
    if value is None:
        return None
    text = format(value.quantize(Decimal("1e-9")).normalize(), "f")
    return text


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


@dataclass(eq=False)
class FakeOrder:
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    type: str
    time_in_force: str
    order_class: str
    status: str
    submitted_at: datetime
    updated_at: datetime
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    filled_qty: Decimal = ZERO
    filled_avg_price: Decimal | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    legs: list[FakeOrder] = field(default_factory=list)
    parent: FakeOrder | None = field(default=None, repr=False)
    replaces: str | None = None
    replaced_by: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_active(self) -> bool:
        """Can trade now: open, and (for a leg) its entry has filled."""
        return self.is_open and (self.parent is None or self.parent.status == "filled")

    def to_json(self, nested: bool = True) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _ts(self.submitted_at),
            "updated_at": _ts(self.updated_at),
            "submitted_at": _ts(self.submitted_at),
            "filled_at": _ts(self.filled_at),
            "expired_at": None,
            "canceled_at": _ts(self.canceled_at),
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _s(self.qty),
            "filled_qty": _s(self.filled_qty),
            "filled_avg_price": _s(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": _s(self.limit_price),
            "stop_price": _s(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": [leg.to_json() for leg in self.legs] if nested and self.legs else None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


@dataclass
class FakePosition:
    symbol: str
    qty: Decimal  # negative when short
    avg_entry_price: Decimal


@dataclass
class _Fault:
    remaining: int
    status: int | None
    delay: float
    after: bool
    method: str | None
    path: str | None
    body: dict[str, Any] | None

    def matches(self, request: web.Request) -> bool:
        if self.method and request.method != self.method.upper():
            return False
        return not self.path or request.path.startswith(self.path)


@dataclass(eq=False)
class _StreamConn:
    ws: web.WebSocketResponse
    request: web.Request
    msgpack: bool = False
    authorized: bool = False
    listening: bool = False


class FakeAlpaca:
    """Alpaca's trading API in one process. Start with `await start()`; see the module doc."""

    def __init__(
        self,
        *,
        api_key: str = "PKFAKEKEY0000000",
        secret_key: str = "fake-secret-0000000000",
        cash: Decimal = Decimal("100000"),
        multiplier: Decimal = Decimal(1),
        default_price: Decimal = Decimal("100"),
    ) -> None:
        self.api_key, self.secret_key = api_key, secret_key
        self.cash, self.multiplier = cash, multiplier
        self.default_price = default_price
        self.prices: dict[str, Decimal] = {}
        self.orders: dict[str, FakeOrder] = {}
        self.by_client_id: dict[str, FakeOrder] = {}
        self.positions: dict[str, FakePosition] = {}
        self.market_open = True
        self.holidays: set[date] = set()
        self.early_closes: dict[date, str] = {}
        self.auto_fill_market = False
        # Alternatives the docs leave open, that another Alpaca-compatible server may take:
        self.page_cap = 500  # GET /v2/orders' largest page (Alpaca's documented maximum)
        self.price_is_average = False  # a fill update's `price`: the order's running average
        self.legs_by_client_id = True  # GET /v2/orders:by_client_order_id lists the legs
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) as answered
        self.sent_updates: list[dict[str, Any]] = []  # every trade_updates payload emitted
        # Update kinds never sent on the stream (as users report for a bracket leg's cancel
        # after its sibling filled): the order's state changes, the stream stays silent.
        self.mute: set[str] = set()
        self._faults: list[_Fault] = []
        self._conns: set[_StreamConn] = set()
        self._stream_gate = asyncio.Event()
        self._stream_gate.set()
        self._listen_changed = asyncio.Condition()
        self._answered = asyncio.Condition()
        self.listen_count = 0  # how many times a client started listening (reconnects count)
        self._last_now = datetime.min.replace(tzinfo=UTC)
        # The venue's clock; a test replaying a recorded day sets it to the day's time.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/v2/orders", self._submit_order)
        r.add_get("/v2/orders", self._list_orders)
        r.add_delete("/v2/orders", self._cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self._get_by_client_id)
        r.add_get("/v2/orders/{order_id}", self._get_order)
        r.add_delete("/v2/orders/{order_id}", self._cancel_order)
        r.add_get("/v2/positions", self._list_positions)
        r.add_delete("/v2/positions", self._close_all_positions)
        r.add_get("/v2/positions/{symbol}", self._get_position)
        r.add_delete("/v2/positions/{symbol}", self._close_position)
        r.add_get("/v2/account", self._account)
        r.add_get("/v2/clock", self._clock)
        r.add_get("/v2/calendar", self._calendar)
        r.add_get("/stream", self._stream)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stream_gate.set()
        for conn in list(self._conns):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    # --- test controls -------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        self.prices[symbol] = Decimal(price)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        body: dict[str, Any] | None = None,
    ) -> None:
        """The next `n` matching requests answer `status`. `after=True`: the request takes
        effect first and only its response is lost (the retry then meets the duplicate)."""
        self._faults.append(_Fault(n, status, 0.0, after, method, path, body))

    def delay_next(
        self,
        seconds: float,
        n: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        after: bool = True,
    ) -> None:
        """The next `n` matching requests answer late (after doing their work by default)."""
        self._faults.append(_Fault(n, None, seconds, after, method, path, None))

    async def drop_streams(self, *, clean: bool = False) -> None:
        """Cut every trade_updates connection: a TCP abort (no close handshake), or with
        `clean=True` a WebSocket close the client sees as an orderly end."""
        for conn in list(self._conns):
            self._conns.discard(conn)
            transport = conn.request.transport
            if transport is not None and not clean:
                transport.abort()
            else:
                await conn.ws.close()

    @contextlib.asynccontextmanager
    async def stream_outage(self, *, clean: bool = False) -> AsyncIterator[None]:
        """Drop the streams; clients that reconnect meanwhile hang at authentication until
        the block exits. Whatever happens inside is never delivered live."""
        self._stream_gate.clear()
        await self.drop_streams(clean=clean)
        try:
            yield
        finally:
            self._stream_gate.set()

    async def wait_for_listen_count(self, count: int, timeout: float = 10.0) -> None:
        """Wait until clients have started listening `count` times in all."""
        async with asyncio.timeout(timeout), self._listen_changed:
            await self._listen_changed.wait_for(lambda: self.listen_count >= count)

    def count_requests(self, method: str, path: str) -> int:
        return sum(m == method and p == path for m, p, _ in self.requests)

    async def wait_for_requests(self, method: str, path: str, count: int,
                                timeout: float = 10.0) -> None:
        """Wait until `count` requests `method path` have been answered in all."""
        async with asyncio.timeout(timeout), self._answered:
            await self._answered.wait_for(lambda: self.count_requests(method, path) >= count)

    def order(self, order_id: str) -> FakeOrder:
        found = self.orders.get(order_id) or self.by_client_id.get(order_id)
        if found is None:
            raise KeyError(f"no order {order_id!r} at the fake broker")
        return found

    def open_orders(self) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.is_open]

    async def fill(
        self, order_id: str, price: Decimal | str, qty: Decimal | str | None = None
    ) -> FakeOrder:
        """Execute (part of) an order at `price`, emitting `fill` / `partial_fill`."""
        order = self.order(order_id)
        price = Decimal(price)
        if not order.is_active:
            raise ValueError(f"order {order.id} is {order.status} and cannot fill now")
        q = order.remaining if qty is None else Decimal(qty)
        if not ZERO < q <= order.remaining:
            raise ValueError(f"fill qty {q} outside (0, {order.remaining}]")
        if order.type == "limit" and order.limit_price is not None:
            worse = price > order.limit_price if order.side == "buy" else price < order.limit_price
            if worse:
                raise ValueError(f"fill at {price} violates limit {order.limit_price}")
        now = self._now()
        total = order.filled_qty + q
        paid = order.filled_qty * (order.filled_avg_price or ZERO) + q * price
        order.filled_qty, order.filled_avg_price = total, paid / total
        order.status = "filled" if total == order.qty else "partially_filled"
        order.updated_at = now
        if order.status == "filled":
            order.filled_at = now
        position_qty = self._book_fill(order.symbol, order.side, q, price)
        self.prices[order.symbol] = price
        await self._emit(
            "fill" if order.status == "filled" else "partial_fill", order,
            execution_id=str(uuid.uuid4()),
            price=_s(order.filled_avg_price if self.price_is_average else price), qty=_s(q),
            position_qty=_s(position_qty), timestamp=now,
        )
        if order.status == "filled" and order.legs:
            # Entry filled: the take-profit leg goes live, the stop-loss stays `held`
            # until triggered (Alpaca's OCO pair).
            for leg in order.legs:
                leg.updated_at = now
                if leg.type == "limit":
                    leg.status = "new"
                    await self._emit("new", leg, timestamp=now)
        if order.status == "filled" and order.parent is not None:
            for sibling in order.parent.legs:
                if sibling is not order and sibling.is_open:
                    # As at Alpaca, the OCO cancel is its own later event (microseconds).
                    await self._cancel(sibling, self._now())
        return order

    async def expire(self, order_id: str) -> FakeOrder:
        """A day order reaches the end of its time in force unfilled (or part filled)."""
        return await self._end(order_id, "expired")

    async def done_for_day(self, order_id: str) -> FakeOrder:
        """No more executions today; a GTC order works again the next day (not terminal)."""
        order = self.order(order_id)
        now = self._now()
        order.status, order.updated_at = "done_for_day", now
        await self._emit("done_for_day", order, timestamp=now)
        return order

    async def reject(self, order_id: str, reason: str) -> FakeOrder:
        """The venue rejects an order Alpaca had accepted; the event carries `reason`."""
        return await self._end(order_id, "rejected", reason=reason)

    async def trigger_stop_replaced(self, stop_id: str) -> FakeOrder:
        """The stop leg triggers and Alpaca reports it `replaced` by a new order (as users
        see it): the new order takes the old one's place in the bracket. Returns it."""
        old = self.order(stop_id)
        if old.parent is None:
            raise ValueError(f"order {stop_id} is not a bracket leg")
        now = self._now()
        new = FakeOrder(
            id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=old.symbol,
            side=old.side, qty=old.qty, type="market", time_in_force=old.time_in_force,
            order_class=old.order_class, status="new", submitted_at=old.submitted_at,
            updated_at=now, parent=old.parent, replaces=old.id,
        )
        old.status, old.updated_at, old.replaced_by = "replaced", now, new.id
        legs = old.parent.legs
        legs[legs.index(old)] = new
        self.orders[new.id] = new
        self.by_client_id[new.client_order_id] = new
        await self._emit("replaced", old, timestamp=now)
        await self._emit("new", new, timestamp=now)
        return new

    async def _end(self, order_id: str, status: str, **extra: str) -> FakeOrder:
        order = self.order(order_id)
        if not order.is_open and order.status != "done_for_day":
            raise ValueError(f"order {order.id} is {order.status}")
        now = self._now()
        order.status, order.updated_at = status, now
        await self._emit(status, order, timestamp=now, **extra)
        for leg in order.legs:  # an entry that ends unfilled takes its legs with it
            if leg.is_open:
                await self._cancel(leg, now)
        return order

    # --- HTTP plumbing -------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/stream":
            return await handler(request)
        fault = self._take_fault(request)
        response: web.StreamResponse
        if fault is not None and not fault.after:
            await asyncio.sleep(fault.delay)
        if fault is not None and not fault.after and fault.status is not None:
            response = self._fault_response(fault)
        elif (
            request.headers.get("APCA-API-KEY-ID") != self.api_key
            or request.headers.get("APCA-API-SECRET-KEY") != self.secret_key
        ):
            response = ApiError(401, UNAUTHORIZED, "request is not authorized").response()
        else:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            if fault is not None and fault.after:
                await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    response = self._fault_response(fault)
        async with self._answered:
            self.requests.append((request.method, request.path, response.status))
            self._answered.notify_all()
        return response

    def _take_fault(self, request: web.Request) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(request):
                fault.remaining -= 1
                return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> web.Response:
        assert fault.status is not None
        if fault.body is not None:
            return web.json_response(fault.body, status=fault.status)
        if fault.status == 429:
            return web.json_response({"code": 42910000, "message": "rate limit exceeded"},
                                     status=429)
        # Gateways answer 5xx with HTML, not Alpaca's JSON: the client must cope with both.
        return web.Response(status=fault.status, text="<html>upstream error</html>",
                            content_type="text/html")

    def _now(self) -> datetime:
        """UTC now, strictly increasing so `updated_at` orders events."""
        now = self.clock()
        if now <= self._last_now:
            now = self._last_now + timedelta(microseconds=1)
        self._last_now = now
        return now

    # --- orders --------------------------------------------------------------------------

    async def _submit_order(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            raise ApiError(400, UNPROCESSABLE, "request body format is invalid") from exc
        order = self._new_order(body)
        snapshot = order.to_json()
        now = self._now()
        order.status = "new"
        order.updated_at = now
        await self._emit("new", order, timestamp=now)
        if self.auto_fill_market and order.type == "market":
            await self.fill(order.id, self.prices.get(order.symbol, self.default_price))
        return web.json_response(snapshot)

    def _new_order(self, body: dict[str, Any]) -> FakeOrder:
        symbol = str(body.get("symbol") or "").upper()
        side = body.get("side")
        otype = body.get("type") or body.get("order_type")
        tif = body.get("time_in_force")
        order_class = body.get("order_class") or "simple"
        if not symbol:
            raise ApiError(422, UNPROCESSABLE, "symbol is required")
        if side not in ("buy", "sell"):
            raise ApiError(422, UNPROCESSABLE, "invalid side")
        if otype not in ("market", "limit", "stop"):
            raise ApiError(422, UNPROCESSABLE, "invalid order type")
        if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
            raise ApiError(422, UNPROCESSABLE, "invalid time_in_force")
        qty = _decimal(body.get("qty"), "qty")
        if qty is None or qty <= 0:
            raise ApiError(422, UNPROCESSABLE, "qty must be > 0")
        limit_price = _price(body.get("limit_price"), "limit_price")
        stop_price = _price(body.get("stop_price"), "stop_price")
        if otype == "limit" and limit_price is None:
            raise ApiError(422, UNPROCESSABLE, "limit_price is required for limit orders")
        if otype == "stop" and stop_price is None:
            raise ApiError(422, UNPROCESSABLE, "stop_price is required for stop orders")
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if len(client_order_id) > 128:
            raise ApiError(422, UNPROCESSABLE, "client_order_id must be at most 128 characters")
        if client_order_id in self.by_client_id:
            raise ApiError(422, UNPROCESSABLE, "client_order_id must be unique")
        take_profit = stop_loss = None
        if order_class in ("bracket", "oto"):
            take_profit = _price((body.get("take_profit") or {}).get("limit_price"),
                                 "take_profit.limit_price")
            stop_loss = _price((body.get("stop_loss") or {}).get("stop_price"),
                               "stop_loss.stop_price")
            if order_class == "bracket" and (take_profit is None or stop_loss is None):
                raise ApiError(422, UNPROCESSABLE,
                               "bracket orders require take_profit and stop_loss")
            if take_profit is None and stop_loss is None:
                raise ApiError(422, UNPROCESSABLE, "oto orders require take_profit or stop_loss")
            if tif not in ("day", "gtc"):
                raise ApiError(422, UNPROCESSABLE, f"{order_class} orders must be day or gtc")
            if (take_profit is not None and stop_loss is not None
                    and (side == "buy") != (take_profit > stop_loss)):
                raise ApiError(422, INVALID_ORDER,
                               "take_profit.limit_price must be on the profit side of "
                               "stop_loss.stop_price")
        elif order_class != "simple":
            raise ApiError(422, UNPROCESSABLE, f"order_class {order_class} not supported here")
        self._check_can_trade(symbol, side, qty, limit_price or stop_price)

        now = self._now()
        order = FakeOrder(
            id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=symbol, side=side,
            qty=qty, type=otype, time_in_force=tif, order_class=order_class,
            status="pending_new", submitted_at=now, updated_at=now,
            limit_price=limit_price, stop_price=stop_price,
        )
        exit_side = "sell" if side == "buy" else "buy"
        for leg_type, lp, sp in (("limit", take_profit, None), ("stop", None, stop_loss)):
            if lp is not None or sp is not None:
                leg = FakeOrder(
                    id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=symbol,
                    side=exit_side, qty=qty, type=leg_type, time_in_force=tif,
                    order_class=order_class, status="held", submitted_at=now, updated_at=now,
                    limit_price=lp, stop_price=sp, parent=order,
                )
                order.legs.append(leg)
                self.orders[leg.id] = leg
                self.by_client_id[leg.client_order_id] = leg
        self.orders[order.id] = order
        self.by_client_id[client_order_id] = order
        return order

    def _check_can_trade(self, symbol: str, side: str, qty: Decimal, price: Decimal | None
                         ) -> None:
        """Closing orders need unheld shares; opening orders need buying power."""
        position = self.positions.get(symbol)
        closing = position is not None and (position.qty > 0) == (side == "sell")
        if closing:
            assert position is not None
            held = self._held_qty(symbol, side)
            available = abs(position.qty) - held
            if qty > available:
                raise ApiError(
                    403, FORBIDDEN,
                    f"insufficient qty available for order (requested: {_s(qty)}, "
                    f"available: {_s(available)})",
                    symbol=symbol, existing_qty=_s(abs(position.qty)),
                    held_for_orders=_s(held), available=_s(available),
                )
            return
        cost = qty * (price or self.prices.get(symbol, self.default_price))
        if cost > self._buying_power():
            raise ApiError(403, FORBIDDEN, "insufficient buying power")

    def _held_qty(self, symbol: str, side: str) -> Decimal:
        held = ZERO
        for o in self.orders.values():
            if o.symbol != symbol or o.side != side or not o.is_active:
                continue
            if o.parent is not None and o.type == "stop" and len(o.parent.legs) > 1:
                continue  # the OCO pair holds its shares once (counted on the limit leg)
            held += o.remaining
        return held

    def _market_values(self) -> tuple[Decimal, Decimal]:
        long_mv = short_mv = ZERO
        for p in self.positions.values():
            mv = p.qty * self.prices.get(p.symbol, p.avg_entry_price)
            if mv >= 0:
                long_mv += mv
            else:
                short_mv += mv
        return long_mv, short_mv

    def _buying_power(self) -> Decimal:
        long_mv, short_mv = self._market_values()
        equity = self.cash + long_mv + short_mv
        reserved = ZERO
        for o in self.orders.values():
            if not o.is_open or o.parent is not None:
                continue
            position = self.positions.get(o.symbol)
            if position is not None and (position.qty > 0) == (o.side == "sell"):
                continue  # closing orders use no buying power
            price = o.limit_price or self.prices.get(o.symbol, self.default_price)
            reserved += o.remaining * price
        return max(ZERO, equity * self.multiplier - long_mv + short_mv - reserved)

    def _book_fill(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> Decimal:
        signed = qty if side == "buy" else -qty
        self.cash -= signed * price
        position = self.positions.get(symbol)
        if position is None:
            self.positions[symbol] = FakePosition(symbol, signed, price)
            return signed
        new_qty = position.qty + signed
        if new_qty == 0:
            del self.positions[symbol]
        elif (position.qty > 0) != (new_qty > 0):
            self.positions[symbol] = FakePosition(symbol, new_qty, price)  # flipped
        elif (position.qty > 0) == (signed > 0):
            cost = position.qty * position.avg_entry_price + signed * price
            position.avg_entry_price = cost / new_qty
            position.qty = new_qty
        else:
            position.qty = new_qty
        return new_qty

    async def _list_orders(self, request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status", "open")
        nested = q.get("nested", "false").lower() == "true"
        limit = min(int(q.get("limit", "50")), self.page_cap)
        after = _query_time(q.get("after"))
        until = _query_time(q.get("until"))
        symbols = {s.strip().upper() for s in q.get("symbols", "").split(",") if s.strip()}
        side = q.get("side")
        found = []
        for o in self.orders.values():
            if nested and o.parent is not None:
                continue
            if status == "open" and not o.is_open or status == "closed" and o.is_open:
                continue
            if after is not None and o.submitted_at <= after:
                continue
            if until is not None and o.submitted_at > until:
                continue
            if symbols and o.symbol not in symbols or side and o.side != side:
                continue
            found.append(o)
        # Legs share the entry's submitted_at: the entry sorts first.
        found.sort(key=lambda o: (o.submitted_at, o.parent is not None),
                   reverse=q.get("direction", "desc") == "desc")
        return web.json_response([o.to_json(nested=nested) for o in found[:limit]])

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            raise ApiError(404, NOT_FOUND, "order not found")
        return web.json_response(order.to_json())

    async def _get_by_client_id(self, request: web.Request) -> web.Response:
        cid = request.query.get("client_order_id", "")
        order = self.by_client_id.get(cid)
        if order is None:
            raise ApiError(404, NOT_FOUND, f"order not found for {cid}")
        return web.json_response(order.to_json(nested=self.legs_by_client_id))

    async def _cancel_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            raise ApiError(404, NOT_FOUND, "order not found")
        if not order.is_open:
            raise ApiError(422, INVALID_ORDER, f"order is not cancelable (status {order.status})")
        await self._cancel_tree(order)
        return web.Response(status=204)

    async def _cancel_all(self, request: web.Request) -> web.Response:
        results = []
        for order in [o for o in self.orders.values() if o.is_open]:
            for canceled in await self._cancel_tree(order):
                results.append({"id": canceled.id, "status": 200})
        return web.json_response(results, status=207)

    async def _cancel_tree(self, order: FakeOrder) -> list[FakeOrder]:
        """Canceling an entry cancels its legs; canceling a leg cancels its OCO sibling."""
        now = self._now()
        family = list(order.parent.legs) if order.parent is not None else [order, *order.legs]
        canceled = [member for member in family if member.is_open]
        for member in canceled:
            await self._cancel(member, now)
        return canceled

    async def _cancel(self, order: FakeOrder, now: datetime) -> None:
        order.status, order.canceled_at, order.updated_at = "canceled", now, now
        await self._emit("canceled", order, timestamp=now)

    # --- positions -----------------------------------------------------------------------

    def _position_json(self, p: FakePosition) -> dict[str, Any]:
        price = self.prices.get(p.symbol, p.avg_entry_price)
        cost = p.qty * p.avg_entry_price
        market_value = p.qty * price
        pl = market_value - cost
        side = "sell" if p.qty > 0 else "buy"
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, p.symbol)),
            "symbol": p.symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": _s(p.avg_entry_price),
            "qty": _s(p.qty),
            "side": "long" if p.qty > 0 else "short",
            "market_value": _s(market_value),
            "cost_basis": _s(cost),
            "unrealized_pl": _s(pl),
            "unrealized_plpc": _s(pl / abs(cost)) if cost else "0",
            "unrealized_intraday_pl": _s(pl),
            "unrealized_intraday_plpc": _s(pl / abs(cost)) if cost else "0",
            "current_price": _s(price),
            "lastday_price": _s(price),
            "change_today": "0",
            "qty_available": _s(abs(p.qty) - self._held_qty(p.symbol, side)),
        }

    async def _list_positions(self, request: web.Request) -> web.Response:
        return web.json_response([self._position_json(p) for p in self.positions.values()])

    async def _get_position(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"].upper()
        if symbol not in self.positions:
            raise ApiError(404, NOT_FOUND, "position does not exist")
        return web.json_response(self._position_json(self.positions[symbol]))

    async def _close_position(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"].upper()
        q = request.query
        order = await self._close(symbol, q.get("qty"), q.get("percentage"))
        return web.json_response(order)

    async def _close(self, symbol: str, qty: str | None = None, pct: str | None = None
                     ) -> dict[str, Any]:
        position = self.positions.get(symbol)
        if position is None:
            raise ApiError(404, NOT_FOUND, "position does not exist")
        amount = abs(position.qty)
        if qty is not None:
            amount = _decimal(qty, "qty") or ZERO
        elif pct is not None:
            amount = (abs(position.qty) * (_decimal(pct, "percentage") or ZERO) / 100)
        side = "sell" if position.qty > 0 else "buy"
        body = {"symbol": symbol, "qty": str(amount), "side": side, "type": "market",
                "time_in_force": "day"}
        order = self._new_order(body)
        snapshot = order.to_json()
        now = self._now()
        order.status, order.updated_at = "new", now
        await self._emit("new", order, timestamp=now)
        if self.auto_fill_market:
            await self.fill(order.id, self.prices.get(symbol, position.avg_entry_price))
        return snapshot

    async def _close_all_positions(self, request: web.Request) -> web.Response:
        if request.query.get("cancel_orders", "false").lower() == "true":
            for order in [o for o in self.orders.values() if o.is_open]:
                await self._cancel_tree(order)
        results = []
        for symbol in list(self.positions):
            try:
                order = await self._close(symbol)
                results.append({"symbol": symbol, "status": 200, "body": order})
            except ApiError as exc:
                results.append({"symbol": symbol, "status": exc.status, "body": exc.body()})
        return web.json_response(results, status=207)

    # --- account, clock, calendar --------------------------------------------------------

    async def _account(self, request: web.Request) -> web.Response:
        long_mv, short_mv = self._market_values()
        equity = self.cash + long_mv + short_mv
        bp = _s(self._buying_power())
        return web.json_response({
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.api_key)),
            "account_number": "PA0FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": bp,
            "regt_buying_power": bp,
            "daytrading_buying_power": bp,
            "non_marginable_buying_power": _s(max(ZERO, self.cash)),
            "cash": _s(self.cash),
            "accrued_fees": "0",
            "pending_transfer_out": "0",
            "pending_transfer_in": "0",
            "portfolio_value": _s(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T14:30:00Z",
            "trade_suspended_by_user": False,
            "multiplier": _s(self.multiplier),
            "shorting_enabled": True,
            "equity": _s(equity),
            "last_equity": _s(equity),
            "long_market_value": _s(long_mv),
            "short_market_value": _s(short_mv),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        })

    async def _clock(self, request: web.Request) -> web.Response:
        now = datetime.now(NEW_YORK)
        later = now + timedelta(hours=1)
        tomorrow = now + timedelta(days=1)
        return web.json_response({
            "timestamp": now.isoformat(),
            "is_open": self.market_open,
            "next_open": (tomorrow if self.market_open else later).isoformat(),
            "next_close": (later if self.market_open else tomorrow).isoformat(),
        })

    async def _calendar(self, request: web.Request) -> web.Response:
        today = datetime.now(NEW_YORK).date()
        start = date.fromisoformat(request.query.get("start", today.isoformat())[:10])
        end = date.fromisoformat(
            request.query.get("end", (start + timedelta(days=30)).isoformat())[:10]
        )
        days = []
        day = start
        while day <= end:
            if day.weekday() < 5 and day not in self.holidays:
                days.append({
                    "date": day.isoformat(),
                    "open": "09:30",
                    "close": self.early_closes.get(day, "16:00"),
                    "session_open": "0400",
                    "session_close": "2000",
                    "settlement_date": (day + timedelta(days=1)).isoformat(),
                })
            day += timedelta(days=1)
        return web.json_response(days)

    # --- trade_updates WebSocket ---------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _StreamConn(ws, request)
        self._conns.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    try:
                        payload = json.loads(msg.data)
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        payload, conn.msgpack = msgpack.unpackb(msg.data), True
                else:
                    break
                await self._on_stream_message(conn, payload)
        finally:
            self._conns.discard(conn)
        return ws

    async def _on_stream_message(self, conn: _StreamConn, payload: dict[str, Any]) -> None:
        action = payload.get("action")
        data = payload.get("data") or {}
        if action in ("authenticate", "auth"):
            await self._stream_gate.wait()  # an outage: the client hangs here
            key = data.get("key_id", payload.get("key"))
            secret = data.get("secret_key", payload.get("secret"))
            conn.authorized = key == self.api_key and secret == self.secret_key
            status = "authorized" if conn.authorized else "unauthorized"
            await self._send(conn, {"stream": "authorization",
                                    "data": {"action": "authenticate", "status": status}})
            if not conn.authorized:
                await conn.ws.close()
        elif action == "listen":
            if not conn.authorized:
                await self._send(conn, {"stream": "authorization",
                                        "data": {"action": "listen", "status": "unauthorized"}})
                return
            streams = [s for s in data.get("streams", []) if s == "trade_updates"]
            conn.listening = bool(streams)
            await self._send(conn, {"stream": "listening", "data": {"streams": streams}})
            async with self._listen_changed:
                self.listen_count += conn.listening
                self._listen_changed.notify_all()
        else:
            await self._send(conn, {"stream": "error", "data": {"error": "invalid action"}})

    @staticmethod
    async def _send(conn: _StreamConn, message: dict[str, Any]) -> None:
        # Alpaca's trading stream speaks in binary frames (unlike the data stream).
        data = msgpack.packb(message) if conn.msgpack else json.dumps(message).encode()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.send_bytes(data)

    async def _emit(self, event: str, order: FakeOrder, *, timestamp: datetime,
                    **extra: str | None) -> None:
        data: dict[str, Any] = {"event": event, "order": order.to_json(),
                                "timestamp": _ts(timestamp)}
        data.update({k: v for k, v in extra.items() if v is not None})
        if event in self.mute:
            return
        self.sent_updates.append(data)
        for conn in list(self._conns):
            if conn.listening and not conn.ws.closed:
                await self._send(conn, {"stream": "trade_updates", "data": data})


def _decimal(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ApiError(422, UNPROCESSABLE, f"invalid {name}") from exc


def _price(value: Any, name: str) -> Decimal | None:
    price = _decimal(value, name)
    if price is None:
        return None
    if price <= 0:
        raise ApiError(422, UNPROCESSABLE, f"{name} must be > 0")
    if price >= 1 and price != price.quantize(Decimal("0.01")):
        raise ApiError(422, INVALID_ORDER,
                       f"invalid {name} {value}. sub-penny increment does not fulfill "
                       "minimum pricing criteria")
    return price


def _query_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
