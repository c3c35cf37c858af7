"""Replay, verify, audit, export/import and status over a session recorded on a real
nats-server: the pipeline runs in process over a small hand-made tape (three symbols, one
morning, a gap down that trips the emergency stop, a config change half way)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

import pytest

from adapters.audit.replay import export, print_entries
from adapters.audit.report import build_report
from adapters.audit.report_render import render
from adapters.audit.settings_history import plan_for_file, plan_for_nats
from adapters.audit.status import gather
from adapters.audit.verify import verify
from adapters.audit.window import Window
from adapters.nats.embedded import EmbeddedNats, free_port
from adapters.nats.event_log import MSG_ID_HEADER, ORDER_HEADER, TYPE_HEADER, EventLog, StreamNames
from adapters.nats.log_file import FileSource, import_entries
from adapters.nats.log_source import NatsSource
from adapters.runtime.app import build_sim_pipeline
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.metrics import Metrics, start_metrics_server
from adapters.runtime.pipeline import Recorder
from adapters.runtime.run_record import run_started
from adapters.runtime.simulation import MarketTape, SimulatedClock
from config.loader import diff
from config.settings import Settings
from domain.calendar import NEW_YORK
from domain.events import ConfigChanged
from domain.values import Bar, Headline

# The read path runs through the fast lane and through nats-py's public API alone.
pytestmark = pytest.mark.usefixtures("fast_lane_on_and_off")

DAY = date(2026, 3, 2)  # a Monday
OPEN = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 New York
GAP_MINUTE = 45
BASES = {"AAA": Decimal("50"), "BBB": Decimal("30"), "CCC": Decimal("80")}
RUN_ID = "sim-test-replay"


def make_settings(mail: Path, url: str, names: StreamNames, top_n: int = 3) -> Settings:
    return Settings.model_validate({
        "risk": {"risk_limits": {"max_daily_loss_usd": "500"}},
        "trading": {
            "workflow": {"scan_frequency_minutes": 10, "execute_top_n": top_n},
            "order_execution": {"bracket_take_profit_atr": 4.0},
            "broker": {"kind": "sim"},
            "alerts": {"mailbox_dir": str(mail), "channels": ["mailbox"]},
            "nats": {"url": url, "record_stream": names.record,
                     "market_data_stream": names.market_data},
        },
    })


def tape() -> MarketTape:
    minute: list[Bar] = []
    daily: list[Bar] = []
    for symbol, base in BASES.items():
        for i in range(120):
            # Flat and quiet (no stop or target is reached), then a 12% gap at GAP_MINUTE.
            c = base + Decimal("0.01") * (i % 4)
            if i >= GAP_MINUTE:
                c = (c * Decimal("0.88")).quantize(Decimal("0.01"))
            minute.append(Bar(symbol=symbol, timestamp=OPEN + timedelta(minutes=i),
                              open=c, high=c + Decimal("0.05"), low=c - Decimal("0.05"),
                              close=c, volume=20_000))
        for d in range(1, 26):
            stamp = datetime.combine(DAY - timedelta(days=d), datetime.min.time(), NEW_YORK)
            daily.append(Bar(symbol=symbol, timestamp=stamp, open=base, high=base + 1,
                             low=base - 1, close=base, volume=2_000_000, timeframe="1Day"))
    news = [Headline(id="n1", symbols=("AAA",), headline="AAA wins FDA approval",
                     created_at=OPEN + timedelta(minutes=8))]
    return MarketTape.from_data(minute, daily, news)


async def record_session(url: str, names: StreamNames, mail: Path) -> dict[str, Any]:
    settings = make_settings(mail, url, names)
    changed = make_settings(mail, url, names, top_n=2)
    log = await EventLog.connect(url, names=names)
    try:
        holder = SettingsHolder(settings)
        recorder = Recorder(log)
        pipeline, _ = build_sim_pipeline(settings, holder, recorder, [])
        clock = SimulatedClock(pipeline, tape(), RUN_ID)
        at = OPEN + timedelta(minutes=30)
        # A hot reload half way: the holder swaps, then ConfigChanged is recorded.
        clock.extra_events = {at: [ConfigChanged(
            event_id=uuid5(NAMESPACE_URL, "test:config"), type="ConfigChanged",
            occurred_at=at, correlation_id="config", changes=diff(settings, changed),
            source="test")]}

        def on_minute(closed_at: datetime) -> None:
            if closed_at == at:
                holder.current = changed

        clock.on_minute = on_minute
        await pipeline.submit(run_started(RUN_ID, "sim", settings, pipeline.handlers, "sim",
                                          OPEN - timedelta(minutes=2)))
        await clock.run([DAY])
        await recorder.flush()
        return {"dispatched": pipeline.dispatched}
    finally:
        await log.close()


@dataclass
class Recorded:
    url: str
    names: StreamNames
    settings: Settings
    dispatched: int
    tmp: Path


@pytest.fixture(scope="module")
def recorded(nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    tmp = tmp_path_factory.mktemp("replay")
    names = StreamNames(record=f"REC_{uuid4().hex[:8]}", market_data=f"MD_{uuid4().hex[:8]}")
    info = asyncio.run(record_session(nats_server.url, names, tmp / "mail"))
    return Recorded(nats_server.url, names, make_settings(tmp / "mail", nats_server.url, names),
                    info["dispatched"], tmp)


async def connect(r: Recorded) -> EventLog:
    return await EventLog.connect(r.url, names=r.names, create_streams=False)


async def nats_report(r: Recorded) -> dict[str, Any]:
    log = await connect(r)
    try:
        return await build_report(await NatsSource(log).open(), Window.for_date(DAY))
    finally:
        await log.close()


async def export_file(r: Recorded, name: str = "day.jsonl") -> Path:
    path = r.tmp / name
    if not path.exists():
        log = await connect(r)
        try:
            await export(await NatsSource(log).open(), path, Window.for_date(DAY))
        finally:
            await log.close()
    return path


# --- replay and verify ------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2, 3])
async def test_recorded_session_replays_with_zero_divergences(recorded: Recorded,
                                                              jobs: int) -> None:
    log = await connect(recorded)
    try:
        plan = await plan_for_nats(log, Settings())  # the recorded config wins over this one
        assert plan.broker == "sim" and plan.scanner
        assert plan.settings.limits.max_daily_loss_usd == Decimal("500")
        result = await verify(await NatsSource(log).open(), plan, jobs=jobs)
    finally:
        await log.close()
    assert result.reported == [], "\n".join(line for d in result.reported for line in d.lines())
    assert result.ok and result.events == recorded.dispatched
    assert result.derived > 50  # signals, approvals, P&L changes, alerts... were all checked
    assert result.summary() == f"{recorded.dispatched} events, 0 divergences"
    # More processes: the market data handlers ran in helpers (checked all the same).
    assert (result.helper_peak_rss_mb is not None) == (jobs > 1)


async def test_replay_prints_the_merged_log_in_dispatch_order(recorded: Recorded,
                                                              tmp_path: Path) -> None:
    log = await connect(recorded)
    try:
        out = tmp_path / "out.jsonl"
        with out.open("w") as f:
            n = await print_entries(await NatsSource(log).open(), Window(), None, True, f)
        text = tmp_path / "out.txt"
        with text.open("w") as f:
            await print_entries(await NatsSource(log, subject="catalyst.risk.>").open(),
                                Window.for_date(DAY), None, False, f)
        # Decoded in full (no envelopes), for what --json must have printed.
        stored = [e.raw async for batch in (await NatsSource(log).open()).batches()
                  for e in batch]
    finally:
        await log.close()
    lines = out.read_text().splitlines()
    assert n == len(lines) == recorded.dispatched
    assert [line.encode() for line in lines] == stored  # verbatim, in dispatch order
    assert json.loads(lines[0])["type"] == "RunStarted"
    risk = text.read_text()
    assert "EmergencyStopTriggered" in risk and "BarReceived" not in risk


async def test_export_replays_and_verifies_without_nats(recorded: Recorded) -> None:
    path = await export_file(recorded)
    source = FileSource(path)
    assert source.header["window"]["label"] == DAY.isoformat()
    result = await verify(source, plan_for_file(source, Settings()),
                          Window.from_dict(source.header["window"]))
    assert result.ok, [d.lines() for d in result.reported]
    assert result.context == 1  # RunStarted: it precedes the day's first event
    assert result.events + result.context == recorded.dispatched


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _index(lines: list[str], type_: str, nth: int = 0) -> int:
    hits = [i for i, line in enumerate(lines) if f'"type":"{type_}"' in line]
    return hits[nth]


async def _verify_lines(lines: list[str], path: Path) -> list[str]:
    """The divergences' kinds; one process, two and three (market data handlers in helpers)
    must report exactly the same divergences."""
    path.write_text("\n".join(lines) + "\n")
    found = []
    for jobs in (1, 2, 3):
        source = FileSource(path)
        result = await verify(source, plan_for_file(source, Settings()),
                              Window.from_dict(source.header["window"]), jobs=jobs)
        assert not result.ok
        found.append([d.lines() for d in result.reported])
    assert found[0] == found[1] == found[2]
    return [line[0].split(":")[0] for line in found[0]]


async def test_verify_detects_an_edited_event(recorded: Recorded, tmp_path: Path) -> None:
    lines = _lines(await export_file(recorded))
    i = _index(lines, "OrderApproved")
    row = json.loads(lines[i])
    row["event"]["qty"] = str(Decimal(row["event"]["qty"]) + 100)
    lines[i] = json.dumps(row)
    kinds = await _verify_lines(lines, tmp_path / "edited.jsonl")
    assert kinds == ["differs"]


async def test_verify_detects_a_removed_event(recorded: Recorded, tmp_path: Path) -> None:
    lines = _lines(await export_file(recorded))
    del lines[_index(lines, "SignalGenerated")]
    kinds = await _verify_lines(lines, tmp_path / "removed.jsonl")
    assert "missing" in kinds and "gap" in kinds


async def test_verify_detects_a_removed_input(recorded: Recorded, tmp_path: Path) -> None:
    lines = _lines(await export_file(recorded))
    del lines[_index(lines, "OrderFilled")]  # a broker outcome: the handlers never saw it
    kinds = await _verify_lines(lines, tmp_path / "removed_input.jsonl")
    assert "gap" in kinds


async def test_verify_detects_an_edited_scan(recorded: Recorded, tmp_path: Path) -> None:
    """The scanner's decisions are checked in the helper process as well as in one."""
    lines = _lines(await export_file(recorded))
    i = _index(lines, "ScanCompleted", 2)
    row = json.loads(lines[i])
    row["event"]["candidates"][0]["composite"] = 0.999
    lines[i] = json.dumps(row)
    kinds = await _verify_lines(lines, tmp_path / "edited_scan.jsonl")
    # The scan itself, then the signal the strategy now decides from the edited copy.
    assert kinds == ["differs", "differs"]


async def test_verify_detects_a_scan_recorded_before_its_request(recorded: Recorded,
                                                                 tmp_path: Path) -> None:
    lines = _lines(await export_file(recorded))
    i = _index(lines, "ScanCompleted", 1)
    j = _index(lines, "ScanRequested", 1)
    assert j < i
    lines.insert(j, lines.pop(i))
    kinds = await _verify_lines(lines, tmp_path / "early_scan.jsonl")
    assert "before_cause" in kinds and "out_of_order" in kinds


async def test_verify_detects_a_removed_scan(recorded: Recorded, tmp_path: Path) -> None:
    lines = _lines(await export_file(recorded))
    del lines[_index(lines, "ScanCompleted", 1)]
    kinds = await _verify_lines(lines, tmp_path / "removed_scan.jsonl")
    assert "missing" in kinds and "gap" in kinds


async def test_verify_detects_reordered_events(recorded: Recorded, tmp_path: Path) -> None:
    lines = _lines(await export_file(recorded))
    i = _index(lines, "OrderApproved")
    cause = json.loads(lines[i])["event"]["causation_id"]
    j = next(k for k in range(i) if f'"event_id":"{cause}"' in lines[k])
    lines.insert(j, lines.pop(i))  # the approval recorded before the signal it decides
    kinds = await _verify_lines(lines, tmp_path / "reordered.jsonl")
    assert "before_cause" in kinds and "out_of_order" in kinds


# --- audit -----------------------------------------------------------------------------------


async def test_audit_report_of_a_session_with_an_emergency_stop_has_every_item(
        recorded: Recorded) -> None:
    r = await nats_report(recorded)
    s = r["summary"]
    assert s["events"] == recorded.dispatched - 1 and s["emergency_stops"] == 1
    # session timeline
    types = [t["type"] for t in r["timeline"]]
    for t in ("SessionStartRequested", "SessionStarted", "EmergencyStopTriggered",
              "EmergencyStopCompleted", "EntriesStopped", "FlattenRequested", "SessionEnded"):
        assert t in types, t
    # every signal with its scores, and the risk decision on it
    assert r["signals"] and all(g["scores"] and g["decision"] for g in r["signals"])
    assert {"composite", "catalyst", "momentum", "volume", "technical"} <= set(
        r["signals"][0]["scores"])
    assert any(sc["candidates"] for sc in r["scans"])
    # every risk decision with its rule and figures
    outcomes = {d["outcome"] for d in r["risk_decisions"]}
    assert outcomes == {"approved", "denied"}
    denied = [d for d in r["risk_decisions"] if d["outcome"] == "denied"]
    assert all(d["rule"] and d["figures"] for d in denied)
    assert "halted" in {d["rule"] for d in denied}
    # every order with its fills
    assert r["orders"] and all(o["fills"] for o in r["orders"])
    assert sum(len(o["fills"]) for o in r["orders"]) == s["fills"] >= len(r["orders"])
    assert any(o["origin"].startswith("approved") for o in r["orders"])
    # P&L curve, alerts, config in force and its change, the stop from trigger to done
    assert r["pnl_curve"] and Decimal(s["pnl_intraday_low"]) <= -500
    assert any(a["outcome"] == "sent" and a["kind"] == "emergency_stop" for a in r["alerts"])
    assert r["config"]["in_force"]["risk.risk_limits.max_daily_loss_usd"] == "500"
    assert r["config"]["in_force"]["trading.workflow.execute_top_n"] == 3
    assert r["config"]["changes"][0]["changes"] == {"trading.workflow.execute_top_n":
                                                    ["3", "2"]}
    stop = r["emergency_stops"][0]
    assert stop["reason"] and stop["actions"]["close_all_positions"] and stop["completed"]
    html = render(r, "html")
    for text in ("Session timeline", "Signals and their scores", "Risk decisions",
                 "Orders and fills", "data:image/png;base64,", "Emergency stops", "Alerts",
                 "Config in force", "execute_top_n", "halted"):
        assert text in html, text
    assert "http://" not in html and "https://" not in html  # self-contained
    sections = {row.split(",")[0] for row in render(r, "csv").splitlines()[1:]}
    assert {"timeline", "scan", "signal", "risk", "order", "fill", "pnl", "alert", "config",
            "emergency_stop"} <= sections


async def test_export_then_import_on_a_fresh_server_gives_the_same_report(
        recorded: Recorded, tmp_path: Path) -> None:
    original = await nats_report(recorded)
    path = await export_file(recorded)
    from_file = await build_report(FileSource(path), Window.for_date(DAY))
    with EmbeddedNats(store_dir=tmp_path / "fresh") as fresh:
        log = await EventLog.connect(fresh.url)
        try:
            assert await import_entries(log, FileSource(path)) == recorded.dispatched
            imported = await build_report(await NatsSource(log).open(), Window.for_date(DAY))
            result = await verify(await NatsSource(log).open(),
                                  await plan_for_nats(log, Settings()))
        finally:
            await log.close()
    assert imported == original == from_file
    assert render(imported, "html") == render(original, "html")
    assert result.ok and result.events == recorded.dispatched


async def _reports(rows: list[dict[str, Any]], header: str, path: Path) -> list[list[str]]:
    """Verify an edited export with 1, 2 and 3 processes; all must report the same."""
    path.write_text("\n".join([header] + [json.dumps(r) for r in rows]) + "\n")
    out = []
    for jobs in (1, 2, 3):
        src = FileSource(path)
        r = await verify(src, plan_for_file(src, Settings()),
                         Window.from_dict(src.header["window"]), jobs=jobs)
        out.append([line for d in r.reported for line in d.lines()] + [r.summary()])
    assert out[0] == out[1] == out[2], "\n".join(out[0]) + "\n---\n" + "\n".join(out[1])
    return out[0]


async def _nats_reports(rows: list[dict[str, Any]], header: str, tmp: Path) -> list[str]:
    """`_reports` from a fresh NATS server, where more than one process reads market data as
    envelopes (and handlers of the main process decode only what they do not ignore): the
    same report with 1, 2 and 3 processes, and the same as from the file."""
    from_file = await _reports(rows, header, tmp / "edited.jsonl")
    out = []
    with EmbeddedNats(store_dir=tmp / "fresh") as fresh:
        log = await EventLog.connect(fresh.url)
        try:
            src = FileSource(tmp / "edited.jsonl")
            await import_entries(log, src)
            plan = await plan_for_nats(log, Settings())
            for jobs in (1, 2, 3):
                r = await verify(await NatsSource(log).open(), plan,
                                 Window.from_dict(src.header["window"]), jobs=jobs)
                out.append([line for d in r.reported for line in d.lines()] + [r.summary()])
        finally:
            await log.close()
    assert out[0] == out[1] == out[2] == from_file, "\n".join(out[0]) + "\n---\n" + "\n".join(
        out[1]) + "\n---\n" + "\n".join(from_file)
    return from_file


async def _rows(r: Recorded) -> tuple[str, list[dict[str, Any]]]:
    lines = _lines(await export_file(r))
    return lines[0], [json.loads(x) for x in lines[1:]]


async def test_a_decision_recorded_twice_is_reported_the_same_by_any_number_of_processes(
        recorded: Recorded, tmp_path: Path) -> None:
    header, rows = await _rows(recorded)
    for r in rows:
        r.pop("order", None)  # no positions: only the duplicate itself can show
    i = [k for k, r in enumerate(rows) if r["event"]["type"] == "ScanCompleted"][1]
    rows.insert(i + 1, rows[i])
    report = await _reports(rows, header, tmp_path / "dup.jsonl")
    assert report[0].startswith("unexpected: ScanCompleted")
    assert report[-1].endswith("1 divergence")


async def test_ties_at_one_position_are_listed_in_the_handlers_order(
        recorded: Recorded, tmp_path: Path) -> None:
    header, rows = await _rows(recorded)
    rows[0]["event"]["config"]["trading"]["trading_session"]["max_hold_time_minutes"] = 2
    k = next(k for k, r in enumerate(rows) if r["event"]["type"] == "DailyPnLChanged")
    del rows[k]  # the executor and the daily P&L both miss decisions at one bar
    report = await _nats_reports(rows, header, tmp_path)
    missing = [line for line in report if line.startswith("missing")]
    assert any("PositionCloseRequested" in m for m in missing)


async def test_before_cause_is_judged_where_the_decision_was_made(
        recorded: Recorded, tmp_path: Path) -> None:
    header, rows = await _rows(recorded)
    i = [k for k, r in enumerate(rows) if r["event"]["type"] == "ScanCompleted"][1]
    j = next(k for k, r in enumerate(rows)
             if r["event"]["event_id"] == rows[i]["event"]["causation_id"])
    rows[i]["event"]["causation_id"] = rows[i + 5]["event"]["event_id"]
    rows.insert(j, rows.pop(i))
    report = await _reports(rows, header, tmp_path / "early.jsonl")
    assert sum(line.startswith("before_cause") for line in report) == 2


async def test_a_tampered_log_on_nats_reports_the_same_in_one_process_or_more(
        recorded: Recorded, tmp_path: Path) -> None:
    """On NATS, with three processes the main one reads market data as envelopes: the
    divergences about bars (moved, removed) must read exactly as in one process."""
    lines = _lines(await export_file(recorded))
    k = _index(lines, "BarReceived", 40)
    lines[k], lines[k + 1] = lines[k + 1], lines[k]  # a bar recorded out of its order
    del lines[_index(lines, "BarReceived", 200)]  # and a bar missing
    path = tmp_path / "tampered.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with EmbeddedNats(store_dir=tmp_path / "fresh") as fresh:
        log = await EventLog.connect(fresh.url)
        try:
            await import_entries(log, FileSource(path))
            plan = await plan_for_nats(log, Settings())
            found = []
            for jobs in (1, 2, 3):
                result = await verify(await NatsSource(log).open(), plan, jobs=jobs)
                found.append((result.summary(), [d.lines() for d in result.reported]))
        finally:
            await log.close()
    assert found[0] == found[1] == found[2]
    kinds = [d[0].split(":")[0] for d in found[0][1]]
    assert "out_of_order" in kinds and "gap" in kinds
    shown = "\n".join(line for d in found[2][1] for line in d)
    assert "replayed: symbol=" in shown  # a bar's divergence shows the bar in full


async def test_a_bar_that_does_not_decode_is_reported_the_same_by_any_number_of_processes(
        recorded: Recorded, tmp_path: Path) -> None:
    """Its envelope reads, its payload does not. However many processes and whichever of
    them decodes it: one `undecodable` divergence each, by id and position, and the rest of
    the log still verified."""
    header, rows = await _rows(recorded)
    ev = [r["event"] for r in rows]
    minute = [k for k, e in enumerate(ev)
              if e["type"] == "BarReceived" and e["bar"]["timeframe"] == "1Min"]
    f = next(k for k, e in enumerate(ev) if e["type"] == "OrderFilled")
    bad = [
        minute[5],  # nothing held: the main process's handlers ignore it, the scanner's don't
        next(k for k in minute if k > f and ev[k]["symbol"] == ev[f]["symbol"]),  # held
    ]
    for k in bad:
        ev[k]["bar"]["close"] = "not a price"
    found = []
    with EmbeddedNats(store_dir=tmp_path / "fresh") as fresh:
        log = await EventLog.connect(fresh.url)
        try:
            for r in rows:  # as the recorder stores them (an import would refuse the bad ones)
                headers = {MSG_ID_HEADER: r["event"]["event_id"], TYPE_HEADER: r["event"]["type"]}
                if r.get("order") is not None:
                    headers[ORDER_HEADER] = str(r["order"])
                await log.js.publish(r["subject"], json.dumps(r["event"]).encode(),
                                     headers=headers)
            plan = await plan_for_nats(log, Settings())
            for jobs in (1, 2, 3):
                result = await verify(await NatsSource(log).open(), plan, jobs=jobs)
                found.append([line for d in result.reported for line in d.lines()]
                             + [result.summary()])
        finally:
            await log.close()
    assert found[0] == found[1] == found[2], "\n---\n".join("\n".join(f) for f in found)
    lines = [line for line in found[0] if line.startswith("undecodable")]
    assert [line.split()[2].rstrip(":") for line in lines] == [ev[k]["event_id"] for k in bad]
    assert all("bar.close" in line for line in lines)
    assert not any(line.startswith("gap") for line in found[0])


# --- status and metrics ----------------------------------------------------------------------


async def test_status_reads_the_state_from_the_log(recorded: Recorded) -> None:
    st = await gather(recorded.settings, recorded.tmp / "unused-store")
    assert st["nats"]["connected"] and st["nats"]["mode"] == "configured server"
    assert st["session"]["state"] == "ended"
    assert st["trading"]["state"] == "halted" and "daily loss limit" in st["trading"]["reason"]
    assert st["trading"]["require_manual_restart"]
    assert st["positions"] == []
    assert Decimal(st["pnl"]["total"]) < -500 and st["pnl"]["today"]
    assert st["broker"]["kind"] == "sim"
    assert st["consumers"] == []  # an in-process run has no durable consumers


async def test_status_shows_consumer_lag(recorded: Recorded) -> None:
    log = await connect(recorded)
    try:
        # A durable consumer that has not processed anything lags by the whole stream.
        await log.js.add_consumer(recorded.names.record, durable_name="lagging_handler")
        st = await gather(recorded.settings, recorded.tmp / "unused-store")
        await log.js.delete_consumer(recorded.names.record, "lagging_handler")
    finally:
        await log.close()
    [c] = st["consumers"]
    assert c["consumer"] == "lagging_handler" and c["lag"] == st["nats"]["streams"][
        recorded.names.record]["messages"]


async def test_metrics_count_handlers_orders_pnl_and_alerts(tmp_path: Path) -> None:
    names = StreamNames()
    settings = make_settings(tmp_path / "mail", "nats://unused:1", names)
    metrics = Metrics()
    pipeline, _ = build_sim_pipeline(settings, SettingsHolder(settings), Recorder(None), [])
    metrics.instrument(pipeline)
    await SimulatedClock(pipeline, tape(), "metrics").run([DAY])
    port = free_port()
    server = start_metrics_server(port, metrics)
    try:
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    finally:
        server.shutdown()

    def value(name: str, **labels: str) -> float:
        v = metrics.registry.get_sample_value(name, labels)
        assert v is not None, (name, labels)
        return v

    assert value("catalyst_events_processed_total", handler="risk_guard") > 0
    assert value("catalyst_handler_latency_seconds_count", handler="scanner") > 0
    assert value("catalyst_events_processed_total", handler="broker") > 0
    assert value("catalyst_orders_total", outcome="filled") > 0
    assert value("catalyst_orders_total", outcome="denied") > 0
    assert value("catalyst_alerts_total", outcome="sent") > 0
    assert value("catalyst_daily_pnl_usd", component="total") < -500
    assert value("catalyst_refused_transitions", handler="risk_guard") == 0  # a clean day
    assert "catalyst_orders_total" in body and "catalyst_consumer_lag" in body


# --- pure parts ------------------------------------------------------------------------------


def test_every_event_a_handler_emits_is_known_as_derived() -> None:
    """Each handler's `emits` lists exactly what it builds with `X.caused_by(`: a type
    missing there would be taken from the log as an input instead of re-decided."""
    import ast
    import inspect

    from adapters.runtime.composition import build_handlers

    for h in build_handlers(Settings(), "sim"):
        tree = ast.parse(inspect.getsource(inspect.getmodule(type(h))))  # type: ignore[arg-type]
        built = {node.func.value.id for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                 and node.func.attr == "caused_by" and isinstance(node.func.value, ast.Name)}
        assert built == h.emits, h.name


def test_recorded_config_changes_apply_to_the_settings() -> None:
    from adapters.audit.settings_history import apply_changes

    old = Settings()
    new = Settings.model_validate({
        "risk": {"risk_limits": {"max_daily_loss_usd": "750.50"},
                 "emergency_actions": {"require_manual_restart": False}},
        "trading": {"workflow": {"execute_top_n": 1},
                    "market_data": {"symbols": ["AAPL", "MSFT"]}}})
    assert apply_changes(old, diff(old, new)) == new


def test_a_recorded_config_is_the_one_verified_under_and_an_invalid_one_is_an_error() -> None:
    from adapters.audit.settings_history import next_settings
    from adapters.audit.window import ReplayError
    from config.loader import redacted
    from tests.builders import make

    new = Settings.model_validate({"risk": {"risk_limits": {"max_positions": 2}}})
    changed = make(ConfigChanged, "cfg-1", changes={}, source="cfg", config=redacted(new))
    # The recorded config wins over the changes, so nothing is lost in a diff's round trip.
    assert next_settings(Settings(), changed).limits.max_positions == 2

    broken = redacted(new)
    broken["risk"]["risk_limits"]["max_positions"] = -3
    bad = make(ConfigChanged, "cfg-2", changes={}, source="cfg", config=broken)
    with pytest.raises(ReplayError, match=r"ConfigChanged .*risk\.risk_limits\.max_positions"):
        next_settings(Settings(), bad)
    # An old-style change (no whole config) that does not validate is no longer ignored.
    with pytest.raises(ReplayError, match="do not validate"):
        next_settings(Settings(), make(ConfigChanged, "cfg-3", source="cfg", changes={
            "risk.risk_limits.max_positions": ["5", "-3"]}))


def test_windows_follow_the_log_order() -> None:
    from adapters.audit.window import AFTER, BEFORE, IN, Phases, make_window, parse_time
    from tests.builders import bar_event, make

    w = make_window(DAY.isoformat())
    assert w.start == datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    assert make_window(None, "2026-03-02T10:00", "2026-03-02").end == w.end
    assert parse_time("2026-03-02T15:00:00Z").hour == 15
    p = Phases(w)
    day_before = datetime(2026, 3, 1, 12, tzinfo=UTC)
    run = make(ConfigChanged, "late-config", datetime(2030, 1, 1, tzinfo=UTC),
               changes={}, source="x")
    assert p.of(bar_event("AAA", 0, "1", "1", "1", "1", base=day_before)) == BEFORE
    assert p.of(run) == BEFORE  # wall-clock stamped: never moves the window
    assert p.of(bar_event("AAA", 0, "1", "1", "1", "1", base=OPEN)) == IN
    assert p.of(bar_event("AAA", 0, "1", "1", "1", "1", base=day_before)) == IN  # sticky
    assert p.of(bar_event("AAA", 0, "1", "1", "1", "1", base=OPEN + timedelta(days=1))) \
        == AFTER
