"""A fake Alpaca Market Data API on 127.0.0.1: REST bars/quotes/snapshots/news and the
stock data WebSocket, for the real alpaca-py clients pointed at it by URL override
(`StockHistoricalDataClient(url_override=fake.url)`, `NewsClient(url_override=fake.url)`,
`StockDataStream(url_override=fake.stream_url)`).

It serves the bars and headlines it was given, with Alpaca's wire shapes and habits:

- `GET /v2/stocks/bars`: `{"bars": {SYM: [{t,o,h,l,c,v,n,vw}]}, "next_page_token"}`,
  `start`/`end` inclusive, at most `page_size` bars a page (Alpaca caps pages too).
- `GET /v2/stocks/quotes/latest`, `GET /v2/stocks/snapshots`: derived from the last bars.
- `GET /v1beta1/news`: `{"news": [...], "next_page_token"}`, newest first unless
  `sort=asc`, at most 50 a page.
- `WS /v2/{iex,sip}`: msgpack frames; `connected`, `auth` (error 402 on a bad key),
  `subscribe` then the queued `stream_bars` for the subscribed symbols.
- Auth headers are checked on every REST call (401, echoing the key it got, so tests can
  check that errors are redacted). Faults: `fail_next` (status codes), `stall_next` (hold
  the next N requests until `close()`).

`requests` records (path, query) of every REST call, for tests about what went on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from domain.values import Bar, Headline

NEWS_PAGE_LIMIT = 50


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    if len(raw) == 10:  # YYYY-MM-DD
        raw += "T00:00:00"
    ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    # alpaca-py sends bar-request times as naive UTC.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _raw_bar(bar: Bar) -> dict[str, Any]:
    return {
        "t": _iso(bar.timestamp), "o": float(bar.open), "h": float(bar.high),
        "l": float(bar.low), "c": float(bar.close), "v": bar.volume, "n": max(1, bar.volume // 100),
        "vw": float((bar.high + bar.low + bar.close) / 3),
    }


def _raw_quote(bar: Bar) -> dict[str, Any]:
    return {
        "t": _iso(bar.timestamp), "ax": "V", "ap": float(bar.close) + 0.01, "as": 3,
        "bx": "V", "bp": float(bar.close) - 0.01, "bs": 2, "c": ["R"], "z": "C",
    }


class FakeAlpacaData:
    def __init__(
        self,
        bars: Iterable[Bar] = (),
        news: Iterable[Headline] = (),
        *,
        api_key: str = "fake-data-key",
        secret_key: str = "fake-data-secret",
        page_size: int = 1000,
    ) -> None:
        self.api_key, self.secret_key = api_key, secret_key
        self.page_size = page_size
        self.bars: list[Bar] = sorted(bars, key=lambda b: (b.symbol, b.timeframe, b.timestamp))
        self.news: list[Headline] = sorted(news, key=lambda h: h.created_at)
        self.stream_bars: list[Bar] = []  # pushed after a subscription, for the symbols asked
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.fail_next: list[int] = []
        self.stall_next = 0
        self.stream_auth_failures = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._sockets: set[web.WebSocketResponse] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/stocks/bars", self._bars)
        app.router.add_get("/v2/stocks/quotes/latest", self._latest_quotes)
        app.router.add_get("/v2/stocks/snapshots", self._snapshots)
        app.router.add_get("/v1beta1/news", self._news)
        app.router.add_get("/v2/{feed}", self._stream)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        self._release.set()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def stream_url(self) -> str:
        """The base; the adapter appends /v2/{feed}."""
        return f"ws://127.0.0.1:{self._port}"

    # --- REST ---------------------------------------------------------------------------------

    async def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, dict(request.query)))
        if self.stall_next > 0:
            self.stall_next -= 1
            await self._release.wait()
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.json_response({"code": 50010000, "message": "internal error"}, status=status)
        key = request.headers.get("APCA-API-KEY-ID", "")
        secret = request.headers.get("APCA-API-SECRET-KEY", "")
        if key != self.api_key or secret != self.secret_key:
            # Echo what we got, as a careless proxy might: the adapter must redact it.
            return web.json_response(
                {"code": 40110000, "message": f"request is not authorized ({key}:{secret})"},
                status=401,
            )
        return None

    def _symbols(self, request: web.Request) -> list[str]:
        return [s for s in request.query.get("symbols", "").split(",") if s]

    async def _bars(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        q = request.query
        timeframe = {"1Min": "1Min", "1Day": "1Day"}.get(q.get("timeframe", ""))
        if timeframe is None:
            return web.json_response({"message": "unsupported timeframe"}, status=422)
        start, end = _parse_time(q.get("start")), _parse_time(q.get("end"))
        wanted = set(self._symbols(request))
        matching = [
            b for b in self.bars
            if b.symbol in wanted and b.timeframe == timeframe
            and (start is None or b.timestamp >= start) and (end is None or b.timestamp <= end)
        ]
        offset = int(q.get("page_token") or 0)
        limit = min(int(q.get("limit") or self.page_size), self.page_size)
        page = matching[offset : offset + limit]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for bar in page:
            grouped.setdefault(bar.symbol, []).append(_raw_bar(bar))
        more = offset + limit < len(matching)
        return web.json_response(
            {"bars": grouped, "next_page_token": str(offset + limit) if more else None}
        )

    def _last(self, symbol: str, timeframe: str, back: int = 1) -> Bar | None:
        series = [b for b in self.bars if b.symbol == symbol and b.timeframe == timeframe]
        return series[-back] if len(series) >= back else None

    async def _latest_quotes(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        quotes = {
            s: _raw_quote(bar) for s in self._symbols(request)
            if (bar := self._last(s, "1Min")) is not None
        }
        return web.json_response({"quotes": quotes})

    async def _snapshots(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        out: dict[str, Any] = {}
        for s in self._symbols(request):
            minute = self._last(s, "1Min")
            if minute is None:
                continue
            daily, prev = self._last(s, "1Day"), self._last(s, "1Day", 2)
            out[s] = {
                "latestTrade": {"t": _iso(minute.timestamp), "x": "V", "p": float(minute.close),
                                "s": 100, "c": ["@"], "i": 1, "z": "C"},
                "latestQuote": _raw_quote(minute),
                "minuteBar": _raw_bar(minute),
                "dailyBar": _raw_bar(daily) if daily else None,
                "prevDailyBar": _raw_bar(prev) if prev else None,
            }
        return web.json_response(out)

    async def _news(self, request: web.Request) -> web.Response:
        if (denied := await self._gate(request)) is not None:
            return denied
        q = request.query
        start, end = _parse_time(q.get("start")), _parse_time(q.get("end"))
        wanted = set(self._symbols(request))
        matching = [
            h for h in sorted(self.news, key=lambda h: h.created_at)
            if (not wanted or wanted.intersection(h.symbols))
            and (start is None or h.created_at >= start) and (end is None or h.created_at <= end)
        ]
        if q.get("sort", "desc") != "asc":
            matching.reverse()
        offset = int(q.get("page_token") or 0)
        limit = min(int(q.get("limit") or NEWS_PAGE_LIMIT), NEWS_PAGE_LIMIT)
        page = matching[offset : offset + limit]
        items = [
            {
                "id": int(h.id) if h.id.isdigit() else offset + i + 1,
                "headline": h.headline, "author": "Fake Author",
                "created_at": _iso(h.created_at), "updated_at": _iso(h.created_at),
                "summary": h.summary, "content": "", "url": "https://example.invalid/n",
                "images": [], "symbols": list(h.symbols), "source": h.source,
            }
            for i, h in enumerate(page)
        ]
        more = offset + limit < len(matching)
        return web.json_response(
            {"news": items, "next_page_token": str(offset + limit) if more else None}
        )

    # --- WebSocket ----------------------------------------------------------------------------

    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        if request.match_info["feed"] not in ("iex", "sip"):
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._send(ws, [{"T": "success", "msg": "connected"}])
            async for msg in ws:
                if msg.type != WSMsgType.BINARY and msg.type != WSMsgType.TEXT:
                    break
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                action = msgpack.unpackb(data)
                if action.get("action") == "auth":
                    if action.get("key") != self.api_key or action.get("secret") != self.secret_key:
                        self.stream_auth_failures += 1
                        await self._send(ws, [{"T": "error", "code": 402, "msg": "auth failed"}])
                        await ws.close()
                        break
                    await self._send(ws, [{"T": "success", "msg": "authenticated"}])
                elif action.get("action") == "subscribe":
                    symbols = list(action.get("bars", []))
                    await self._send(ws, [{
                        "T": "subscription", "trades": [], "quotes": [], "bars": symbols,
                        "updatedBars": [], "dailyBars": [], "statuses": [], "lulds": [],
                        "corrections": [], "cancelErrors": [],
                    }])
                    for bar in self.stream_bars:
                        if bar.symbol in symbols or "*" in symbols:
                            await self._send(ws, [self._stream_bar(bar)])
        finally:
            self._sockets.discard(ws)
        return ws

    @staticmethod
    def _stream_bar(bar: Bar) -> dict[str, Any]:
        raw = _raw_bar(bar)
        raw["t"] = msgpack.Timestamp.from_datetime(bar.timestamp)
        return {"T": "b", "S": bar.symbol, **raw}

    @staticmethod
    async def _send(ws: web.WebSocketResponse, frames: list[dict[str, Any]]) -> None:
        await ws.send_bytes(msgpack.packb(frames, datetime=False))
