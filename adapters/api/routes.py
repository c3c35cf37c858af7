"""The FastAPI application: /api/v1 (reads, commands, the event stream), probes, metrics and
the dashboard page.

Reads are open (they show what `catalyst status` shows). Every POST and the event stream
need a bearer token; every POST is rate limited per client and becomes one event in the log
naming the token (`api:<name>`), never the token. Nothing here sets CORS headers: the
dashboard is served from the same origin, and other origins get the browser's default no.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter, Gauge, generate_latest

from adapters.api import commands, models
from adapters.api.auth import HOW_TO_SET, RateLimiter, Tokens
from adapters.api.readmodel import Published, ReadModel, Subscriber
from adapters.nats.event_log import EventLog
from adapters.nats.inbox import NoSystemListening
from adapters.runtime.pipeline import subject_matches
from config.settings import Settings
from domain.calendar import NEW_YORK

STATIC = Path(__file__).resolve().parent / "static"
API = "/api/v1"


@dataclass
class ApiContext:
    model: ReadModel
    sink: commands.Sink
    settings: Callable[[], Settings]
    tokens: Tokens
    log: EventLog
    kind: str = "live"  # what the API runs beside: simulation, paper, live, standalone
    limiter: RateLimiter = field(default_factory=RateLimiter)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _start_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _started_ids: set[UUID] = field(default_factory=set)


# --- the app -------------------------------------------------------------------------------


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


def rate_limited(request: Request) -> None:
    """POSTs per client address; a refused one costs nothing and says when to retry."""
    client = request.client.host if request.client else "?"
    wait = _ctx(request).limiter.allow(client)
    if wait:
        raise HTTPException(429, f"too many requests; retry in {wait:.1f} s",
                            headers={"Retry-After": str(max(1, round(wait)))})


def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The token's name, as the log records the caller (`api:<name>`)."""
    tokens = _ctx(request).tokens
    if not tokens.configured:
        raise HTTPException(403, HOW_TO_SET)
    name = tokens.who(authorization)
    if name is None:
        raise HTTPException(401, "a valid bearer token is required "
                            "(Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return f"api:{name}"


Caller = Annotated[str, Depends(caller)]
POST_GUARD = [Depends(rate_limited)]


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Catalyst API", version="1",
                  description="Status, positions, orders, P&L, alerts and the event log of a "
                  "running Catalyst; start a session, stop everything, resume trading. "
                  "POSTs and /events/stream need `Authorization: Bearer <token>`.")
    app.state.ctx = ctx

    @app.exception_handler(NoSystemListening)
    async def _no_system(_: Request, e: NoSystemListening) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=503)

    metrics = ctx.model.metrics
    requests = Counter("catalyst_api_requests", "HTTP requests served by the API.",
                       ["method", "route", "status"], registry=metrics.registry)
    clients = Gauge("catalyst_api_stream_clients", "Open event streams.",
                    registry=metrics.registry)
    log_seq = Gauge("catalyst_api_log_seq", "Last record-stream sequence the API applied.",
                    registry=metrics.registry)

    @app.middleware("http")
    async def count_and_harden(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(request.method, getattr(route, "path", "other"),
                        str(response.status_code)).inc()
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    # --- commands --------------------------------------------------------------------------

    @app.post(f"{API}/workflow/start", response_model=models.StartResponse,
              dependencies=POST_GUARD,
              responses={400: {"description": "trading_session.mode is not autonomous"},
                         401: {"description": "no or wrong token"}})
    async def workflow_start(who: Caller, body: models.StartRequest | None = None,
                             idempotency_key: Annotated[str | None, Header(
                                 max_length=200)] = None) -> models.StartResponse:
        """Publish SessionStartRequested (the session handler decides: market open, not
        halted, not already running). With an `Idempotency-Key` header the same key on the
        same session date publishes once and answers with the same event id."""
        settings = ctx.settings()
        mode = settings.session.mode
        if mode != "autonomous":
            raise HTTPException(400, f"Supervised mode not supported (trading_session.mode "
                                f"is {mode!r}; set it to 'autonomous')")
        day = body.session_date if body else None
        async with ctx._start_lock:  # two requests with one key: one event
            ev = commands.start_requested(ctx.sink.now(), who, day, idempotency_key)
            duplicate = bool(idempotency_key) and (
                ev.event_id in ctx._started_ids or ev.event_id in ctx.model.start_requests)
            if not duplicate:
                await ctx.sink.submit(ev)
                ctx._started_ids.add(ev.event_id)
        assert ev.session_date is not None
        return models.StartResponse(
            event_id=ev.event_id, session_date=ev.session_date, mode=mode, requested_by=who,
            duplicate=duplicate,
            message=("already requested with this Idempotency-Key; nothing published"
                     if duplicate else "SessionStartRequested published; the session "
                     "handler decides (see GET /api/v1/status)"))

    @app.post(f"{API}/trading/resume", response_model=models.ResumeResponse,
              dependencies=POST_GUARD)
    async def trading_resume(who: Caller, body: models.ResumeRequest) -> models.ResumeResponse:
        """Lift an emergency-stop halt: publish TradingResumed with who (the token's name)
        and why."""
        was_halted = ctx.model.status()["trading"]["state"] == "halted"
        ev = commands.resumed(ctx.sink.now(), who, body.reason)
        await ctx.sink.submit(ev)
        return models.ResumeResponse(event_id=ev.event_id, resumed_by=who,
                                     reason=body.reason, was_halted=was_halted)

    @app.post(f"{API}/emergency-stop", response_model=models.StopResponse,
              dependencies=POST_GUARD)
    async def emergency_stop(who: Caller) -> models.StopResponse:
        """The manual kill switch: EmergencyStopTriggered with reason `manual`; the executor
        cancels every order and closes every position, and trading halts until resumed,
        exactly as at the daily loss limit."""
        now = ctx.sink.now()
        day = commands.session_date(now)
        latest = ctx.model.fold.pnl.get(day)
        ev = commands.manual_stop(now, who, ctx.settings(),
                                  latest.total if latest else Decimal(0), day)
        await ctx.sink.submit(ev)
        return models.StopResponse(event_id=ev.event_id, session_date=ev.session_date,
                                   pnl=ev.pnl, triggered_by=who, actions=ev.actions)

    # --- reads -----------------------------------------------------------------------------

    @app.get(f"{API}/status", response_model=models.Status)
    async def status() -> dict[str, Any]:
        """Session, trading state (active, or halted since when and why, and who resumed
        it last), P&L, positions, consumer lag, where the log is."""
        from adapters.nats.lag import consumer_lag

        view = ctx.model.status()
        try:
            view["consumers"] = await asyncio.wait_for(consumer_lag(ctx.log), 5.0)
        except Exception:  # noqa: BLE001 - reported as unknown, not an error page
            view["consumers"] = None
        view["api"] = {"runs_beside": ctx.kind, "token_configured": ctx.tokens.configured,
                       "session_mode": ctx.settings().session.mode}
        return view

    @app.get(f"{API}/dashboard", response_model=models.Dashboard)
    async def dashboard_state() -> dict[str, Any]:
        """Everything the dashboard shows, in one object (what the stream's `state` sends)."""
        return ctx.model.dashboard()

    @app.get(f"{API}/positions", response_model=list[models.Position])
    async def positions() -> list[dict[str, Any]]:
        """Open positions with their mark (last 1-minute close) and unrealized P&L."""
        return ctx.model.positions()

    @app.get(f"{API}/orders", response_model=list[models.Order])
    async def orders(all: bool = False) -> list[dict[str, Any]]:  # noqa: A002 - query name
        """Open orders with their bracket legs (`?all=true`: every order seen)."""
        if all:
            return [o.as_dict() for o in ctx.model.orders.values()]
        return ctx.model.open_orders()

    @app.get(f"{API}/pnl", response_model=models.Pnl)
    async def pnl(day: Annotated[date | None, Query(alias="date")] = None) -> dict[str, Any]:
        """Daily P&L of a New York session date (default: the latest), its curve (one point
        a minute), the warning line and the loss limit."""
        return ctx.model.pnl(day)

    @app.get(f"{API}/fills", response_model=models.Fills)
    async def fills(day: Annotated[date | None, Query(alias="date")] = None
                    ) -> dict[str, Any]:
        """The day's fills and round-trip trades."""
        d = day or ctx.model.today
        return {"session_date": d.isoformat() if d else None,
                "fills": ctx.model.fills.get(d, []) if d else [],
                "trades": ctx.model.trades.get(d, []) if d else []}

    @app.get(f"{API}/alerts", response_model=list[models.Alert])
    async def alerts() -> list[dict[str, Any]]:
        """Alerts raised, with their delivery: pending, sent, failed or suppressed."""
        return ctx.model.alert_list()

    @app.get(f"{API}/events", response_model=list[models.LoggedEvent])
    async def events(subject: str = "catalyst.>", since: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=5000)] = 100
                     ) -> list[dict[str, Any]]:
        """Events from the log, oldest first: `subject` a NATS filter (market data with
        `catalyst.md.>`), `since` an event time (ISO; a simulated run's own clock) or a
        stream sequence, the last `limit`."""
        start_seq, start_time = _since(since)
        stream = ctx.log.names.market_data if subject.startswith("catalyst.md.") \
            else ctx.log.names.record
        out: list[dict[str, Any]] = []
        async for s in ctx.log.read([subject], start_seq=start_seq, stream=stream):
            # By event time, not JetStream's store time: a simulation stores today what
            # happened on its own day.
            if start_time is not None and s.event.occurred_at < start_time:
                continue
            out.append({"seq": s.seq, "subject": s.subject, "type": s.event.type,
                        "occurred_at": s.event.occurred_at.isoformat(),
                        "event": s.event.model_dump(mode="json")})
            if len(out) > limit:
                del out[0]
        return out

    @app.get(f"{API}/events/stream", response_class=StreamingResponse,
             dependencies=POST_GUARD,  # token guesses here are limited as on the POSTs
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events_stream(who: Caller, subject: str = "catalyst.>",
                            state: bool = False,
                            backlog: Annotated[int, Query(ge=0, le=500)] = 0
                            ) -> StreamingResponse:
        """Server-sent events: `event: event` for each record event matching `subject` as
        it is logged (the last `backlog` first); with `state=true` also `event: state`, the
        dashboard's whole view, whenever it changed (at most 4 times a second)."""
        return StreamingResponse(_stream(ctx, subject, state, backlog, clients, log_seq),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    @app.get("/healthz", response_model=models.Health)
    async def healthz() -> models.Health:
        """The process is up."""
        return models.Health(ok=True)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Connected to NATS and caught up with the log."""
        ready = ctx.model.connected and ctx.model.caught_up.is_set()
        body = {"ready": ready, "connected": ctx.model.connected,
                "caught_up": ctx.model.caught_up.is_set(), "record_seq": ctx.model.record_seq}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=Response)
    async def metrics_text() -> Response:
        """Prometheus metrics: the system's (orders, P&L, alerts, consumer lag from the log)
        and the API's own."""
        try:
            await asyncio.wait_for(metrics.update_consumer_lag(ctx.log), 5.0)
        except Exception:  # noqa: BLE001 - the rest of the metrics still count
            pass
        log_seq.set(ctx.model.record_seq)
        return Response(generate_latest(metrics.registry),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    # --- the dashboard ---------------------------------------------------------------------

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        from adapters.api.dashboard import render_page

        html = render_page(ctx.model.dashboard(), ctx.settings().session.mode, ctx.kind,
                           ctx.tokens.configured)
        return HTMLResponse(html, headers={
            # Only our own script runs; the initial state is inert JSON.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "style-src 'self'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"})

    return app


def _since(since: str | None) -> tuple[int | None, datetime | None]:
    if not since:
        return None, None
    if since.isdigit():
        return int(since), None
    try:
        at = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, "since: an ISO time (2025-11-26T14:00:00Z) or a stream "
                            "sequence number") from None
    return None, at if at.tzinfo else at.replace(tzinfo=NEW_YORK)  # naive: New York time


def _sse(kind: str, data: Any, sid: int | None = None) -> bytes:
    head = f"id: {sid}\n" if sid is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _stream(ctx: ApiContext, subject: str, state: bool, backlog: int, clients: Gauge,
                  log_seq: Gauge) -> AsyncIterator[bytes]:
    model = ctx.model
    sub = Subscriber()
    model.subscribers.add(sub)
    clients.inc()
    try:
        yield b": catalyst event stream\nretry: 1000\n\n"
        if backlog:
            for item in [p for p in model.published if subject_matches(subject, p.subject)
                         ][-backlog:]:
                yield _sse("event", item.as_dict(), item.seq)
        sent_version, sent_at, pinged = -1, 0.0, time.monotonic()
        while not ctx.closing.is_set():
            items: list[Published | None] = []
            try:
                items.append(await asyncio.wait_for(sub.queue.get(), 0.25))
                while not sub.queue.empty() and len(items) < 1000:
                    items.append(sub.queue.get_nowait())
            except TimeoutError:
                pass
            for item in items:
                if item is not None and subject_matches(subject, item.subject):
                    yield _sse("event", item.as_dict(), item.seq)
            if sub.dropped:  # too slow a reader: say so; the client reconnects afresh
                yield _sse("reset", {"reason": "the stream fell behind"})
                return
            now = time.monotonic()
            if state and model.version != sent_version and now - sent_at >= 0.25:
                sent_version, sent_at = model.version, now
                log_seq.set(model.record_seq)
                yield _sse("state", model.dashboard())
                pinged = now
            elif now - pinged > 15:
                pinged = now
                yield b": ping\n\n"
    finally:
        model.subscribers.discard(sub)
        clients.dec()
