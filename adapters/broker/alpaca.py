"""`AlpacaBroker`: the broker port over alpaca-py's `TradingClient` and `TradingStream`.

Why it is shaped like this:

- alpaca-py's REST client is synchronous (requests). Every call runs in a worker thread
  (`asyncio.to_thread`), so the event loop never blocks, and a timeout is mounted on its
  session because alpaca-py sets none.
- Retrying is ours: 429, 5xx and network errors are retried with exponential backoff and
  jitter (tenacity). alpaca-py's own retry (a blocking 3 s sleep, 429/504 only) is switched off.
  Any other 4xx is the broker saying no: `BrokerRejection(code, message, status)`.
- Submission is idempotent. `client_order_id` is unique forever at Alpaca, so a retry after a
  lost response (or a re-run after a crash) gets 422 "client_order_id must be unique", and we
  return the order that is already there instead of failing or placing a second one.
- `trade_updates()` runs `TradingStream` in this event loop. After every (re)connect it
  backfills from REST (the lookback window's orders, compared from a cursor that moves only
  after a whole listing) and de-duplicates per order on the cumulative filled quantity,
  starting from what the log holds, so each fill is yielded exactly once
  (translate.py's ledger; docs/execution.md, "The order-update contract").
- The API keys never reach a log line or an error message.

Past ~400 lines: one adapter to one broker. The REST calls, the trade_updates stream and its
REST backfill share the client, the retry and error translation and the key redaction; the
pure order-update ledger they feed is translate.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, get_args

from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLossRequest,
    TakeProfitRequest,
)
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest
from alpaca.trading.stream import TradingStream
from requests.exceptions import ChunkedEncodingError, RequestException
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout
from tenacity import RetryCallState

from adapters.broker.alpaca_http import mount_timeouts, next_or_stopped
from adapters.broker.port import (
    BrokerAccount,
    BrokerOrder,
    BrokerPosition,
    BrokerRejection,
    BrokerUnavailable,
    OrderRequest,
    TradeUpdate,
)
from adapters.broker.translate import (
    FILL_EVENTS,
    FeedLedger,
    accept_update,
    catch_up,
    listing_max_updated,
)
from adapters.nats.retry import retrying
from config.settings import Broker
from domain.errors import CatalystError
from domain.values import Side

log = logging.getLogger(__name__)

T = TypeVar("T")

DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"
PORT_EVENTS = frozenset(get_args(TradeUpdate.model_fields["event"].annotation))
PAGE = 500  # Alpaca's maximum page size for GET /v2/orders
ZERO = Decimal(0)
# The backfill lists a little before its cursor: an update stamped just before the last one
# seen (clock granularity, a listing taken while the broker was still writing) is compared
# again rather than skipped; the ledger makes the overlap harmless.
_CURSOR_SLACK = timedelta(seconds=1)


class BrokerKeysRefused(CatalystError):
    """Alpaca answered 401/403 to the account read: the keys are wrong for this URL."""


def _stream_stopped() -> Exception:
    return BrokerUnavailable("the alpaca trade_updates stream stopped")


class _TradingStream(TradingStream):
    """alpaca-py's stream plus a hook after each successful (re)connect, where we backfill.

    `_start_ws` is alpaca-py's connect+auth+listen step (checked against 0.44). If the hook
    raises, alpaca-py treats it as a failed connect: it closes and reconnects with backoff,
    so a failed backfill is retried with the next connection.
    """

    def __init__(self, *args: Any, on_connected: Callable[[], Awaitable[None]],
                 connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connected = on_connected
        self._connect_timeout = connect_timeout

    async def _start_ws(self) -> None:
        # alpaca-py waits for the auth reply without a timeout; bound it.
        await asyncio.wait_for(super()._start_ws(), self._connect_timeout)
        await self._on_connected()


@dataclass
class _FeedState:
    """One trade_updates() iterator: its backfill cursor and its de-duplication ledger.

    `since` moves only after a whole backfill listing is processed (to the latest update in
    it), never from a live update: the stream is not a complete record, so a later live
    update says nothing about what an earlier, lost one carried.
    """

    since: datetime
    ledger: FeedLedger = field(default_factory=FeedLedger)


class AlpacaBroker:
    """The broker port on Alpaca (paper unless `config.mode == "live"`)."""

    def __init__(
        self,
        config: Broker,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        backfill_lookback: timedelta = timedelta(days=7),
        stream_reconnect_min: float | None = None,
    ) -> None:
        if config.api_key is None or config.secret_key is None:
            raise ValueError("the Alpaca broker needs trading.broker.api_key and secret_key")
        self.name = config.mode
        self._key = config.api_key.get_secret_value()
        self._secret = config.secret_key.get_secret_value()
        base_url = config.live_url if config.mode == "live" else config.paper_url
        self._base_url = base_url.rstrip("/")
        self._stream_url = config.stream_url or _stream_url_from(self._base_url)
        self._timeout = config.timeout_seconds
        self._max_retries = config.max_retries
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._lookback = backfill_lookback
        self._reconnect_min = stream_reconnect_min
        self._client = TradingClient(
            self._key, self._secret, paper=config.mode == "paper", raw_data=True,
            url_override=self._base_url,
        )
        # alpaca-py retries 429/504 itself with a blocking sleep; the policy here is ours.
        self._client._retry = 0
        mount_timeouts(self._client._session, self._timeout)
        self._leg_parent: dict[str, str] = {}  # leg order id -> entry order id
        self._entries: set[str] = set()  # ids known to be bracket entries
        self._streams: set[tuple[_TradingStream, asyncio.Task[None]]] = set()
        # Set once the first backfill of `trade_updates` has been handed out: what the
        # broker did while we were away is then known (reconciliation waits for it).
        self.caught_up = asyncio.Event()

    async def check_keys(self) -> None:
        """Refuse to run on keys Alpaca refuses: every order would be rejected, and the
        update stream would retry its authentication forever. One clear error naming the
        variables (never their values)."""
        try:
            await self.get_account()
        except BrokerUnavailable as exc:
            # Unreachable is not wrong: the runtime retries its broker commands meanwhile.
            log.warning("could not check the Alpaca keys (broker unreachable): %s", exc)
        except BrokerRejection as exc:
            if exc.status not in (401, 403):
                raise
            raise BrokerKeysRefused(
                f"Alpaca ({self.name}, {self._base_url}) refused the API keys "
                f"(HTTP {exc.status}): check ALPACA_API_KEY and ALPACA_SECRET_KEY "
                f"(a {self.name} account's keys for a {self.name} URL)"
            ) from None

    def __repr__(self) -> str:  # never the keys
        return f"AlpacaBroker(mode={self.name!r}, url={self._base_url!r})"

    # --- the port: orders ----------------------------------------------------------------

    async def submit_order(self, request: OrderRequest) -> BrokerOrder:
        alpaca_request = _to_alpaca_request(request)
        what = f"submit_order {request.client_order_id}"
        try:
            raw = await self._call(what, self._client.submit_order, alpaca_request)
        except BrokerRejection as exc:
            if exc.status != 422 or DUPLICATE_CLIENT_ORDER_ID not in exc.message:
                raise
            existing = await self.get_order_by_client_id(request.client_order_id)
            if existing is None:
                raise
            if (existing.symbol, existing.side, existing.qty) != (
                request.symbol, request.side, request.qty
            ):
                log.warning(
                    "client_order_id %s already names a different order at Alpaca "
                    "(%s %s %s); returning that order", request.client_order_id,
                    existing.side, existing.qty, existing.symbol,
                )
            else:
                log.info("order %s is already at Alpaca (a repeated submit): returning it",
                         request.client_order_id)
            return existing
        return self._order(raw)

    async def get_order(self, order_id: str) -> BrokerOrder:
        raw = await self._call(f"get_order {order_id}", self._client.get_order_by_id,
                               order_id, GetOrderByIdRequest(nested=True))
        return self._order(raw)

    async def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        try:
            raw = await self._call(f"get_order_by_client_id {client_order_id}",
                                   self._client.get_order_by_client_id, client_order_id)
        except BrokerRejection as exc:
            if exc.status == 404:
                return None
            raise
        if not raw.get("legs") and raw.get("order_class") in ("bracket", "oco", "oto"):
            # This lookup takes no `nested`: a server may answer without the legs, and an
            # order adopted without them would leave its own legs looking like strangers.
            return await self.get_order(str(raw["id"]))
        return self._order(raw)

    async def list_open_orders(self) -> list[BrokerOrder]:
        # Flat (not nested): an open leg of a filled entry is listed on its own, so nothing
        # open can hide under a closed parent.
        raws = await self._list_orders("list_open_orders", QueryOrderStatus.OPEN, nested=False)
        return [self._order(r) for r in raws]

    async def list_orders_since(self, since: datetime) -> list[BrokerOrder]:
        """Orders (entries with their legs) of which anything changed at or after `since`.

        Alpaca filters `after` on submission time, not update time, so this lists a
        lookback window and filters on `updated_at` here.
        """
        orders = await self._lookback_listing("list_orders_since", since)
        return [o for o in orders if any(_changed_since(m, since) for m in (o, *o.legs))]

    async def _lookback_listing(self, what: str, since: datetime) -> list[BrokerOrder]:
        """Every order (entries with their legs) submitted in the lookback window before
        `since`, changed or not: the backfill compares the ones the log knows anyway."""
        raws = await self._list_orders(what, QueryOrderStatus.ALL, nested=True,
                                       after=since - self._lookback)
        return [self._order(r) for r in raws]

    async def cancel_order(self, order_id: str) -> None:
        await self._call(f"cancel_order {order_id}", self._client.cancel_order_by_id, order_id)

    async def cancel_all_orders(self) -> int:
        results = await self._call("cancel_all_orders", self._client.cancel_orders) or []
        canceled = 0
        for result in results:
            status = int(result.get("status") or 200)
            if 200 <= status < 300:
                canceled += 1
            else:
                log.warning("alpaca could not cancel order %s: HTTP %s %s", result.get("id"),
                            status, self._redact(json.dumps(result.get("body"))))
        return canceled

    # --- the port: positions and account -------------------------------------------------

    async def list_positions(self) -> list[BrokerPosition]:
        raws = await self._call("list_positions", self._client.get_all_positions)
        return [_position(r) for r in raws or []]

    async def close_position(self, symbol: str) -> BrokerOrder:
        raw = await self._call(f"close_position {symbol}", self._client.close_position, symbol)
        return self._order(raw)

    async def close_all_positions(self) -> list[BrokerOrder]:
        results = await self._call("close_all_positions", self._client.close_all_positions)
        orders = []
        for result in results or []:
            status, body = int(result.get("status") or 200), result.get("body") or {}
            if 200 <= status < 300 and "id" in body:
                orders.append(self._order(body))
            else:
                log.warning("alpaca could not close %s: HTTP %s %s", result.get("symbol"),
                            status, self._redact(json.dumps(body)))
        return orders

    async def get_account(self) -> BrokerAccount:
        raw = await self._call("get_account", self._client.get_account)
        return BrokerAccount(
            cash=_dec(raw.get("cash")) or ZERO,
            equity=_dec(raw.get("equity")) or ZERO,
            buying_power=_dec(raw.get("buying_power")) or ZERO,
            status=str(raw.get("status") or "ACTIVE"),
        )

    # --- the port: trade updates ---------------------------------------------------------

    async def trade_updates(self, since: datetime | None = None,
                            ledger: FeedLedger | None = None) -> AsyncIterator[TradeUpdate]:
        """Order updates as they happen; with `since`, first what changed after `since`.

        Survives disconnects: alpaca-py reconnects, then we backfill from REST and
        synthesize what was missed (fills carry the missed quantity and its average price,
        `execution_id=None`). Each fill is yielded once per order and cumulative quantity.
        `ledger` is what the log already holds (`ledger_from_log`): after a restart only
        the difference is yielded, and orders the log sent are always compared.
        """
        state = _FeedState(since=since or datetime.now(UTC), ledger=ledger or FeedLedger())
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        async def on_message(message: dict[str, Any]) -> None:
            queue.put_nowait(("live", message))

        async def on_connected() -> None:
            since = state.since
            missed = await self._lookback_listing("backfill order updates", since)
            log.info("alpaca trade_updates connected; backfill since %s: %d order(s)",
                     since.isoformat(), len(missed))
            # One item for the whole listing: the cursor moves only once all of it is in.
            queue.put_nowait(("backfill", (missed, since)))
            queue.put_nowait(("caught_up", None))

        stream = _TradingStream(
            self._key, self._secret, paper=self.name == "paper", raw_data=True,
            url_override=self._stream_url, on_connected=on_connected,
            connect_timeout=self._timeout,
            websocket_params={"ping_interval": 10, "ping_timeout": 30, "max_queue": 1024,
                              "open_timeout": self._timeout, "close_timeout": self._timeout},
        )
        if self._reconnect_min is not None:
            stream._reconnect_min_backoff = self._reconnect_min
        stream.subscribe_trade_updates(on_message)
        # The stream is asyncio-native: run its loop here rather than in `run()`'s own
        # thread and event loop, so stopping it is immediate.
        task = asyncio.create_task(stream._run_forever(), name="alpaca-trade-updates")
        entry = (stream, task)
        self._streams.add(entry)
        try:
            while True:
                kind, payload = await next_or_stopped(queue, task, _stream_stopped)
                if kind == "caught_up":
                    # The consumer asked for this item, so it has taken every update before.
                    self.caught_up.set()
                    continue
                if kind == "live":
                    updates = await self._live_updates(payload, state)
                else:
                    listing, listed_since = payload
                    updates = catch_up(listing, state.ledger, listed_since - _CURSOR_SLACK)
                    state.since = max(state.since, listing_max_updated(listing, listed_since))
                for update in updates:
                    yield update
        finally:
            self._streams.discard(entry)
            await self._stop_stream(stream, task)

    async def close(self) -> None:
        for stream, task in list(self._streams):
            await self._stop_stream(stream, task)
        self._streams.clear()
        await asyncio.to_thread(self._client._session.close)

    # --- internals: calls, errors, retries -----------------------------------------------

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            async for attempt in retrying(
                retry_on=_is_transient, attempts=self._max_retries + 1,
                initial=self._backoff_initial, maximum=self._backoff_max,
                jitter=self._backoff_initial, before_sleep=self._log_retry(what),
            ):
                with attempt:
                    return await asyncio.to_thread(fn, *args)
        except APIError as exc:
            raise self._translate(what, exc) from None
        except RequestException as exc:
            raise BrokerUnavailable(self._redact(
                f"alpaca {what}: {type(exc).__name__} after {self._max_retries + 1} "
                f"attempt(s): {exc}"
            )) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _translate(self, what: str, exc: APIError) -> Exception:
        status = exc.status_code
        code, message = _error_fields(str(exc), status)
        message = self._redact(message)
        if status is None or _transient_status(status):
            return BrokerUnavailable(
                f"alpaca {what}: HTTP {status} after {self._max_retries + 1} attempt(s): "
                f"{message}"
            )
        return BrokerRejection(code, message, status)

    def _log_retry(self, what: str) -> Callable[[RetryCallState], None]:
        def log_it(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning("alpaca %s failed (%s); retry %d of %d in %.2fs", what,
                        self._describe(exc), state.attempt_number, self._max_retries, delay)
        return log_it

    def _describe(self, exc: BaseException | None) -> str:
        if isinstance(exc, APIError):
            return f"HTTP {exc.status_code}"
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _redact(self, text: str) -> str:
        for secret in (self._secret, self._key):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def _list_orders(self, what: str, status: QueryOrderStatus, *, nested: bool,
                           after: datetime | None = None,
                           symbols: list[str] | None = None) -> list[dict[str, Any]]:
        """All pages, oldest first. Alpaca pages by time: the next page starts just before
        the last submission time seen, and ids already seen are skipped."""
        found: dict[str, dict[str, Any]] = {}
        cursor = after
        while True:
            request = GetOrdersRequest(status=status, nested=nested, limit=PAGE,
                                       direction=Sort.ASC, after=cursor, symbols=symbols)
            page = await self._call(what, self._client.get_orders, request) or []
            fresh = [r for r in page if str(r["id"]) not in found]
            found.update((str(r["id"]), r) for r in page)
            # Not `len(page) < PAGE`: a server that pages below Alpaca's 500 would end the
            # listing after its first page. A page with nothing new ends it (one request
            # more per listing).
            if not fresh:
                return list(found.values())
            last = _time(page[-1].get("submitted_at"))
            if last is None:
                return list(found.values())
            cursor = last - timedelta(microseconds=1)

    # --- internals: mapping --------------------------------------------------------------

    def _order(self, raw: dict[str, Any], parent_id: str | None = None) -> BrokerOrder:
        order_id = str(raw["id"])
        legs_raw = raw.get("legs") or []
        if legs_raw:
            self._entries.add(order_id)
            self._leg_parent.update((str(leg["id"]), order_id) for leg in legs_raw)
        parent_id = parent_id or self._leg_parent.get(order_id)
        order_type = str(raw.get("type") or raw.get("order_type") or "")
        leg = None
        if parent_id is not None:
            # The take-profit is the bracket's only limit leg; anything else is the stop:
            # stop, stop_limit, trailing, or the order a triggered stop was `replaced` by.
            leg = "take_profit" if order_type == "limit" else "stop_loss"
        return BrokerOrder(
            id=order_id,
            client_order_id=str(raw["client_order_id"]),
            symbol=str(raw.get("symbol") or ""),
            side=Side(str(raw["side"])),
            qty=_dec(raw.get("qty")) or ZERO,
            type=order_type,
            status=str(raw["status"]),
            filled_qty=_dec(raw.get("filled_qty")) or ZERO,
            filled_avg_price=_dec(raw.get("filled_avg_price")),
            limit_price=_dec(raw.get("limit_price")),
            stop_price=_dec(raw.get("stop_price")),
            order_class=str(raw.get("order_class") or "simple"),
            legs=tuple(self._order(leg_raw, order_id) for leg_raw in legs_raw),
            parent_id=parent_id,
            leg=leg,
            created_at=_time(raw.get("created_at")),
            updated_at=_time(raw.get("updated_at")),
        )

    async def _live_updates(self, message: dict[str, Any], state: _FeedState
                            ) -> list[TradeUpdate]:
        data = message.get("data") or {}
        event = data.get("event")
        if event not in PORT_EVENTS:
            log.debug("alpaca trade update %r not in the port's vocabulary; skipped", event)
            return []
        raw_order = data.get("order") or {}
        await self._learn_family(raw_order)
        update = TradeUpdate(
            event=event,
            order=self._order(raw_order),
            timestamp=_time(data.get("timestamp")) or datetime.now(UTC),
            execution_id=str(data["execution_id"]) if data.get("execution_id") else None,
            price=_dec(data.get("price")),
            qty=_dec(data.get("qty")),
            position_qty=_dec(data.get("position_qty")),
            # Alpaca puts a reason on the event (not the order) when it gives one.
            reason=str(data["reason"]) if data.get("reason") else None,
        )
        accepted = accept_update(update, state.ledger)
        out = [accepted] if accepted is not None else []
        if (update.order.parent_id is not None or update.order.legs) and (
            update.event in FILL_EVENTS or update.event == "replaced"
        ):
            # A bracket: the stream is not a complete record of its legs (a sibling's cancel
            # may never come; a triggered stop may be `replaced`). After a member fills or
            # is replaced, read the family over REST and record what it says (never
            # silence). Not on cancels: an emergency cancels many, and its REST budget
            # belongs to the closes.
            out += await self._family_snapshot(update.order, state)
        return out

    async def _family_snapshot(self, member: BrokerOrder, state: _FeedState
                               ) -> list[TradeUpdate]:
        entry_id = member.parent_id or member.id
        try:
            entry = await self.get_order(entry_id)
        except (BrokerUnavailable, BrokerRejection) as exc:
            log.warning("could not read bracket %s after its update (the next reconnect's "
                        "backfill will): %s", entry_id, exc)
            return []
        return catch_up([entry], state.ledger, None)

    async def _learn_family(self, raw: dict[str, Any]) -> None:
        """A leg's update names no parent: look the family up once, so the update carries
        `parent_id` and `leg`."""
        order_id = str(raw.get("id"))
        if (raw.get("order_class") not in ("bracket", "oto", "oco") or raw.get("legs")
                or order_id in self._entries or order_id in self._leg_parent):
            return
        try:
            family = await self._list_orders(
                "find the bracket of a leg", QueryOrderStatus.ALL, nested=True,
                after=datetime.now(UTC) - self._lookback, symbols=[str(raw.get("symbol"))],
            )
        except (BrokerUnavailable, BrokerRejection) as exc:
            log.warning("could not look up the bracket of order %s: %s", order_id, exc)
            return
        for entry in family:
            self._order(entry)  # mapping records entry/leg ids
        if order_id not in self._leg_parent:
            self._entries.add(order_id)  # not a leg: do not look again

    async def _stop_stream(self, stream: _TradingStream, task: asyncio.Task[None]) -> None:
        await stream.stop_ws()
        task.cancel()
        await asyncio.wait({task}, timeout=self._timeout)
        with contextlib.suppress(Exception):
            await stream.close()


# --- pure helpers ---------------------------------------------------------------------------


def _to_alpaca_request(request: OrderRequest) -> AlpacaOrderRequest:
    fields: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": float(request.qty),
        "side": OrderSide(request.side.value),
        "time_in_force": TimeInForce(request.time_in_force),
        "client_order_id": request.client_order_id,
    }
    if request.take_profit is not None:
        fields["take_profit"] = TakeProfitRequest(limit_price=float(request.take_profit))
    if request.stop_loss is not None:
        fields["stop_loss"] = StopLossRequest(stop_price=float(request.stop_loss))
    if request.is_bracket:
        fields["order_class"] = OrderClass.BRACKET
    elif request.take_profit is not None or request.stop_loss is not None:
        fields["order_class"] = OrderClass.OTO  # one exit leg: Alpaca's one-triggers-other
    if request.type == "limit":
        if request.limit_price is None:
            raise ValueError(f"limit order {request.client_order_id} has no limit_price")
        return LimitOrderRequest(limit_price=float(request.limit_price), **fields)
    return MarketOrderRequest(**fields)


def _position(raw: dict[str, Any]) -> BrokerPosition:
    qty = _dec(raw.get("qty")) or ZERO
    if raw.get("side") == "short" and qty > 0:
        qty = -qty
    return BrokerPosition(
        symbol=str(raw["symbol"]),
        qty=qty,
        avg_entry_price=_dec(raw.get("avg_entry_price")) or ZERO,
        current_price=_dec(raw.get("current_price")),
        unrealized_pl=_dec(raw.get("unrealized_pl")),
    )


def _changed_since(order: BrokerOrder, since: datetime) -> bool:
    return order.updated_at is None or order.updated_at >= since


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, APIError):
        return exc.status_code is None or _transient_status(exc.status_code)
    return isinstance(exc, RequestsConnectionError | RequestsTimeout | ChunkedEncodingError)


def _transient_status(status: int) -> bool:
    return status == 429 or status >= 500


def _error_fields(body: str, status: int | None) -> tuple[str, str]:
    """Alpaca's `{"code": ..., "message": ...}`, or the raw text (a gateway's HTML page)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and ("code" in parsed or "message" in parsed):
        return str(parsed.get("code", status)), str(parsed.get("message", ""))
    return str(status), body.strip()[:200]


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _stream_url_from(base_url: str) -> str:
    """Alpaca's trading stream lives on the API host: https://host -> wss://host/stream."""
    scheme, sep, rest = base_url.partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
    return f"{ws_scheme}{sep}{rest}/stream"
