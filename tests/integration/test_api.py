"""The HTTP API over real parts: a real nats-server, every handler as a durable JetStream
consumer with the simulated broker (adapters.runtime.realtime), the API served by a real uvicorn,
and real HTTP requests (httpx).

The manual emergency stop runs as the automatic one does: two longs of 100 shares (AAPL,
MSFT) with their bracket legs, then POST /emergency-stop; the next bars fill the close
orders and the broker is flat, every leg canceled, and new signals are denied "halted".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from adapters.api.auth import RateLimiter, Tokens
from adapters.api.commands import LogSink
from adapters.api.server import RunningApi, ServeOptions, start_api
from adapters.broker.sim import SimulatedBroker
from adapters.nats.event_log import EventLog, StreamNames
from adapters.nats.inbox import serve_inbox
from adapters.runtime.realtime import Services
from config.settings import Settings
from domain.events import (
    EmergencyStopCompleted,
    EmergencyStopTriggered,
    Event,
    OrderDenied,
    SessionStartRequested,
    TradingResumed,
)
from tests.builders import T0, bar_event
from tests.integration.test_emergency_stop import (
    count,
    settings_for,
    signal,
    start_services,
    wait_for,
)

SECRET = "s3cret-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}"}
WRONG = {"Authorization": "Bearer not-the-token-0123456789abcdef"}

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    log: EventLog
    api: RunningApi
    http: httpx.AsyncClient
    broker: SimulatedBroker
    services: Services | None


@pytest.fixture
async def make_rig(nats_url: str, tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    made: list[Rig] = []

    async def make(settings: Settings | None = None, tokens: Tokens | None = None,
                   services: bool = True, now=T0) -> Rig:  # type: ignore[no-untyped-def]
        names = StreamNames(f"REC_{uuid4().hex[:6]}", f"MD_{uuid4().hex[:6]}")
        log = await EventLog.connect(nats_url, names=names)
        settings = settings or settings_for(tmp_path)
        broker = SimulatedBroker.from_settings(settings.trading.broker.sim)
        svc = await start_services(log, settings, broker, now) if services else None
        if svc is None:
            # The running system's inbox, reduced to recording what it is sent: these
            # tests are about the API, not about what the system decides.
            await serve_inbox(log, log.publish_many)
        api = await start_api(log, LogSink(log, clock=lambda: now), lambda: settings,
                              ServeOptions("127.0.0.1", 0), "test", "sim",
                              tokens=Tokens.parse(f"alice:{SECRET}") if tokens is None
                              else tokens)
        http = httpx.AsyncClient(base_url=api.url, timeout=10.0)
        rig = Rig(log, api, http, broker, svc)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.http.aclose()
        await rig.api.stop()
        if rig.services is not None:
            await rig.services.stop()
        for s in (rig.log.names.record, rig.log.names.market_data):
            await rig.log.js.delete_stream(s)
        await rig.log.close()


async def ready(rig: Rig, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await rig.http.get("/readyz")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "API never got ready"
        await asyncio.sleep(0.05)


async def until(rig: Rig, path: str, pred, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await rig.http.get(path)).json()
        if pred(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"{path}: {body}"
        await asyncio.sleep(0.05)


def of_type(evs: list[Event], cls: type) -> list:  # type: ignore[type-arg]
    return [e for e in evs if isinstance(e, cls)]


# --- security ------------------------------------------------------------------------------


POSTS = [("/api/v1/workflow/start", {}), ("/api/v1/trading/resume", {"reason": "ok"}),
         ("/api/v1/emergency-stop", {})]


async def test_every_post_and_the_stream_need_the_token(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = await make_rig(services=False)
    for path, body in POSTS:
        for headers in ({}, WRONG, {"Authorization": SECRET},
                        {"Authorization": f"Basic {SECRET}"}):
            r = await rig.http.post(path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            rig.api.ctx.limiter._buckets.clear()  # this test is about auth, not the limit
    for headers in ({}, WRONG):
        r = await rig.http.get("/api/v1/events/stream", headers=headers)
        assert r.status_code == 401
    assert [e async for e in rig.log.read()] == []  # nothing refused reached the log


async def test_with_no_token_configured_posts_refuse_and_say_how(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = await make_rig(services=False, tokens=Tokens())
    for path, body in POSTS:
        r = await rig.http.post(path, json=body, headers=AUTH)
        assert r.status_code == 403
        assert "CATALYST_API_TOKEN" in r.json()["detail"]
    assert (await rig.http.get("/api/v1/status")).status_code == 200  # reads stay open


async def test_posts_are_rate_limited(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = await make_rig(services=False)
    # A burst of 10; the refill slowed so a loaded machine's slow requests do not refill it.
    rig.api.ctx.limiter = RateLimiter(burst=10, per_second=0.01)
    codes = [(await rig.http.post("/api/v1/emergency-stop", headers=WRONG)).status_code
             for _ in range(12)]
    assert codes == [401] * 10 + [429] * 2
    r = await rig.http.post("/api/v1/emergency-stop", headers=AUTH)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_tokens_come_from_a_file_before_the_variable(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"# one per line\nalice:{SECRET}\nbob:{SECRET[::-1]}\n")
    t = Tokens.from_env({"CATALYST_API_TOKEN_FILE": str(f),
                         "CATALYST_API_TOKEN": f"carol:{SECRET}"})
    assert t.who(f"Bearer {SECRET}") == "alice" and t.who(f"Bearer {SECRET[::-1]}") == "bob"
    assert not Tokens.from_env({}).configured
    with pytest.raises(ValueError, match="cannot read") as e:
        Tokens.from_env({"CATALYST_API_TOKEN_FILE": str(tmp_path / "missing")})
    assert SECRET not in str(e.value)


def test_tokens_compare_in_constant_time_and_parse_names() -> None:
    t = Tokens.parse(f"alice:{SECRET}, bob:{SECRET[::-1]}\n# a comment\n")
    assert t.who(f"Bearer {SECRET}") == "alice"
    assert t.who(f"bearer {SECRET[::-1]}") == "bob"
    assert t.who(f"Bearer {SECRET}x") is None and t.who(None) is None
    assert Tokens.parse(SECRET).who(f"Bearer {SECRET}") == "api"
    with pytest.raises(ValueError, match="shorter than 16"):
        Tokens.parse("alice:short")


# --- commands ------------------------------------------------------------------------------


async def test_start_is_refused_with_the_reason_in_supervised_mode(make_rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.model_validate({"trading": {
        "trading_session": {"mode": "supervised"},
        "alerts": {"mailbox_dir": str(tmp_path / "mail")}}})
    rig = await make_rig(settings=settings, services=False)
    r = await rig.http.post("/api/v1/workflow/start", json={"mode": "normal"}, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["detail"].startswith("Supervised mode not supported")
    assert [e async for e in rig.log.read()] == []


async def test_start_publishes_once_per_idempotency_key_and_session_date(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = await make_rig(services=False)
    key = {**AUTH, "Idempotency-Key": "cron-0930"}
    # The original's body is accepted.
    first = await rig.http.post("/api/v1/workflow/start", json={"mode": "normal",
                                                                "max_positions": 1},
                                headers=key)
    again = await rig.http.post("/api/v1/workflow/start", headers=key)
    other_day = await rig.http.post("/api/v1/workflow/start", headers=key,
                                    json={"session_date": "2026-03-03"})
    assert first.status_code == again.status_code == other_day.status_code == 200
    a, b, c = first.json(), again.json(), other_day.json()
    assert a["event_id"] == b["event_id"] != c["event_id"]
    assert (a["duplicate"], b["duplicate"], c["duplicate"]) == (False, True, False)
    assert a["requested_by"] == "api:alice" and a["mode"] == "autonomous"
    starts = of_type([e.event async for e in rig.log.read()], SessionStartRequested)
    assert [str(s.event_id) for s in starts] == [a["event_id"], c["event_id"]]
    assert starts[0].requested_by == "api:alice"
    assert str(starts[0].session_date) == a["session_date"] == "2026-03-02"
    # Without a key every request is its own.
    n1 = (await rig.http.post("/api/v1/workflow/start", headers=AUTH)).json()
    n2 = (await rig.http.post("/api/v1/workflow/start", headers=AUTH)).json()
    assert n1["event_id"] != n2["event_id"]


async def test_resume_needs_a_reason_and_records_who(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = await make_rig(services=False)
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        r = await rig.http.post("/api/v1/trading/resume", json=body, headers=AUTH)
        assert r.status_code == 422, body
    r = await rig.http.post("/api/v1/trading/resume", json={"reason": "loss reviewed"},
                            headers=AUTH)
    assert r.status_code == 200
    assert r.json()["resumed_by"] == "api:alice"
    [ev] = of_type([e.event async for e in rig.log.read()], TradingResumed)
    assert (ev.resumed_by, ev.reason, str(ev.event_id)) == ("api:alice", "loss reviewed",
                                                           r.json()["event_id"])


@pytest.mark.timeout(90)
async def test_manual_emergency_stop_leaves_the_broker_flat_and_halts(  # type: ignore[no-untyped-def]
        make_rig, tmp_path: Path) -> None:
    # Two brackets risking 1,800 each: under a 4,000 daily limit the guard approves both
    # (it counts open positions' stops); the stop here is a person's, not the limit's.
    rig = await make_rig(settings_for(tmp_path, 4000))
    log = rig.log
    for m in range(0, 5):
        for sym in ("AAPL", "MSFT"):
            await log.publish(bar_event(sym, m, "100", "100.2", "99.8", "100"))
    minute = 5
    for n, sym in enumerate(("AAPL", "MSFT"), start=1):
        await log.publish(signal(sym, f"sig-{sym}", T0 + timedelta(minutes=minute)))
        await wait_for(log, lambda e, n=n: count(e, "OrderSubmitted") == n)
        minute += 1
        for s in ("AAPL", "MSFT"):
            await log.publish(bar_event(s, minute, "100", "100.1", "99.9", "101"))
        await wait_for(log, lambda e, n=n: count(e, "OrderFilled") == n)
    assert len(await rig.broker.list_positions()) == 2
    # The dashboard's views see the positions and the bracket legs.
    positions = await until(rig, "/api/v1/positions", lambda b: len(b) == 2)
    assert {p["symbol"] for p in positions} == {"AAPL", "MSFT"}
    assert all(p["unrealized_pnl"] is not None for p in positions)
    orders = await until(rig, "/api/v1/orders", lambda b: len(b) == 2)
    assert all({leg["leg"]: leg["status"] for leg in o["legs"]} ==
               {"stop_loss": "open", "take_profit": "open"} for o in orders)
    board = (await rig.http.get("/api/v1/dashboard")).json()  # every view, validated
    assert len(board["fills"]) == 2 and board["trading"]["state"] == "active"

    r = await rig.http.post("/api/v1/emergency-stop", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reason"] == "manual" and body["triggered_by"] == "api:alice"
    assert body["actions"]["close_all_positions"] and body["actions"]["cancel_all_orders"]
    for _ in range(5):  # the close orders fill at the next bars' open
        minute += 1
        for sym in ("AAPL", "MSFT"):
            await log.publish(bar_event(sym, minute, "99", "99.5", "98.5", "99"))
        await asyncio.sleep(0.2)
    evs = await wait_for(log, lambda e: count(e, "EmergencyStopCompleted") == 1)
    [stop] = of_type(evs, EmergencyStopTriggered)
    assert (stop.reason, stop.triggered_by, str(stop.event_id)) == (
        "manual", "api:alice", body["event_id"])
    assert stop.causation_id is None  # a person's act: an input, not a decision
    [done] = of_type(evs, EmergencyStopCompleted)
    assert done.orders_canceled == 4
    assert sorted(p.symbol for p in done.positions_closed) == ["AAPL", "MSFT"]
    assert await rig.broker.list_positions() == []
    assert await rig.broker.list_open_orders() == []
    status = await until(rig, "/api/v1/status",
                         lambda b: b["trading"]["state"] == "halted" and not b["positions"])
    assert status["trading"]["reason"] == "manual"
    assert await until(rig, "/api/v1/orders", lambda b: b == []) == []

    # Halted as after the automatic stop: a new signal is denied until resumed.
    await log.publish(signal("NVDA", "sig-after-stop", T0 + timedelta(minutes=minute + 1)))
    evs = await wait_for(log, lambda e: count(e, "OrderDenied") == 1)
    assert of_type(evs, OrderDenied)[0].rule == "halted"
    r = await rig.http.post("/api/v1/trading/resume", json={"reason": "stop reviewed"},
                            headers=AUTH)
    assert r.json()["was_halted"] is True
    status = await until(rig, "/api/v1/status", lambda b: b["trading"]["state"] == "active")
    assert status["trading"]["last_resumed"]["by"] == "api:alice"
    alerts = await until(rig, "/api/v1/alerts",
                         lambda b: any(a["kind"] == "emergency_stop" for a in b))
    assert {a["status"] for a in alerts} <= {"sent", "pending", "suppressed",
                                             "pending (retrying)", "failed"}


# --- reads ---------------------------------------------------------------------------------


async def test_reads_answer_from_the_log(make_rig) -> None:  # type: ignore[no-untyped-def]
    from domain.events import DailyPnLChanged, SessionStarted
    from tests.builders import make

    rig = await make_rig(services=False)
    await rig.log.publish(make(SessionStarted, "started", T0, session_id="s1",
                               session_date=T0.date(), mode="autonomous", broker="sim",
                               market_open=T0, market_close=T0 + timedelta(hours=6, minutes=30),
                               limits={"max_daily_loss_usd": "2000",
                                       "warning_threshold_pct": "0.75"}))
    for i, total in enumerate(("-10", "-25.5", "12")):
        await rig.log.publish(make(DailyPnLChanged, f"pnl{i}", T0 + timedelta(minutes=i + 1),
                                   session_date=T0.date(), realized=Decimal(0),
                                   unrealized=Decimal(total), total=Decimal(total),
                                   intraday_low=Decimal("-25.5")))
    await ready(rig)
    assert (await rig.http.get("/healthz")).json() == {"ok": True}
    pnl = await until(rig, "/api/v1/pnl?date=2026-03-02", lambda b: len(b["points"]) == 3)
    assert pnl["total"] == "12" and pnl["loss_limit"] == "-2000"
    assert pnl["warning_line"] == "-1500.00"
    assert [p[1] for p in pnl["points"]] == ["-10", "-25.5", "12"]
    assert (await rig.http.get("/api/v1/pnl?date=2026-03-03")).json()["points"] == []
    status = (await rig.http.get("/api/v1/status")).json()
    assert status["session"]["session_id"] == "s1" and status["trading"]["state"] == "active"
    assert status["consumers"] == [] and status["api"]["token_configured"] is True
    for path in ("/api/v1/positions", "/api/v1/orders", "/api/v1/alerts",
                 "/api/v1/orders?all=true"):
        assert (await rig.http.get(path)).json() == []
    fills = (await rig.http.get("/api/v1/fills")).json()
    assert fills == {"session_date": "2026-03-02", "fills": [], "trades": []}
    evs = (await rig.http.get("/api/v1/events",
                              params={"subject": "catalyst.pnl.>", "limit": 2})).json()
    assert [e["event"]["total"] for e in evs] == ["-25.5", "12"]
    since = (await rig.http.get("/api/v1/events", params={
        "since": (T0 + timedelta(minutes=2, seconds=30)).isoformat()})).json()
    assert [e["type"] for e in since] == ["DailyPnLChanged"]
    by_seq = (await rig.http.get("/api/v1/events", params={"since": "2"})).json()
    assert by_seq[0]["seq"] == 2
    assert (await rig.http.get("/api/v1/events", params={"since": "yesterday"})
            ).status_code == 400
    metrics = (await rig.http.get("/metrics")).text
    assert 'catalyst_daily_pnl_usd{component="total"} 12.0' in metrics
    assert "catalyst_api_requests_total" in metrics
    page = await rig.http.get("/")
    assert page.status_code == 200 and "ACTIVE" in page.text
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert "access-control-allow-origin" not in page.headers  # no CORS
    spec = (await rig.http.get("/openapi.json")).json()
    assert {"/api/v1/workflow/start", "/api/v1/trading/resume", "/api/v1/emergency-stop",
            "/api/v1/status", "/api/v1/events/stream"} <= set(spec["paths"])
    assert "ResumeRequest" in spec["components"]["schemas"]


async def test_event_stream_sends_events_as_they_are_logged(make_rig) -> None:  # type: ignore[no-untyped-def]
    from tests.builders import make

    rig = await make_rig(services=False)
    await ready(rig)
    got: list[dict] = []  # type: ignore[type-arg]
    states: list[dict] = []  # type: ignore[type-arg]

    async def read() -> None:
        async with rig.http.stream("GET", "/api/v1/events/stream", headers=AUTH,
                                   params={"subject": "catalyst.risk.>",
                                           "state": "true"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            kind = ""
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    (got if kind == "event" else states).append(json.loads(line[6:]))
                    if got:
                        return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)
    await rig.log.publish(make(SessionStartRequested, "not-risk", T0, requested_by="x"))
    await rig.log.publish(make(TradingResumed, "resume-x", T0, resumed_by="bob",
                               reason="because"))
    await asyncio.wait_for(reader, 10)
    assert [g["type"] for g in got] == ["TradingResumed"]  # the subject filter holds
    assert got[0]["event"]["resumed_by"] == "bob"
    assert states and "trading" in states[0]


async def test_no_response_carries_the_token(make_rig) -> None:  # type: ignore[no-untyped-def]
    rig = await make_rig(services=False)
    await ready(rig)
    await rig.http.post("/api/v1/trading/resume", json={"reason": "r"}, headers=AUTH)
    await rig.http.post("/api/v1/emergency-stop", headers=AUTH)
    bodies = [(await rig.http.get(p)).text for p in (
        "/", "/api/v1/status", "/api/v1/events", "/api/v1/dashboard", "/metrics",
        "/openapi.json")]
    bodies += [(await rig.http.post("/api/v1/emergency-stop", headers=WRONG)).text]
    assert not any(SECRET in b for b in bodies)
    raw = [s.event.model_dump_json() async for s in rig.log.read()]
    assert raw and not any(SECRET in r for r in raw)
