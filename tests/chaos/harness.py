"""Chaos trials for `catalyst serve --role` (issue 18), shared by tests/chaos and
bench/chaos.py.

One trial: a 3-node JetStream cluster (LocalCluster), the fake Alpaca (HTTP and WebSocket,
the real alpaca-py client in the execution processes), an SMTP server (aiosmtpd), and each
role as its own OS process: session (no scheduler: this driver sets the pace), strategy,
risk, execution, alerts. The driver plays a recorded day of the bundled data at speed as
ingest would (bars and news to the log, a start request, a tick a minute), lets the
fake Alpaca trade on the bars, and waits for the system to settle after every step, so
what the processes decide does not depend on how fast they are. At seeded random minutes:

    kill -9 the record stream's leader node (restarted two minutes later)
    kill -9 the active execution, risk and alerts processes (a fresh standby is started)
    start a second execution and a second risk process
    drop the broker's update stream
    stop SMTP for three minutes

Then, after everything settles: duplicate broker orders, lost and doubled fills (the
venue's fills against the recorded ones, by execution id), lost and doubled alerts (every
AlertRaised reaches the SMTP server once, by Message-ID), the approvals, `replay --verify`
divergences, the failover times (kill -> the standby serving) and the longest stall of the
driver's writes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import yaml

from adapters.audit.settings_history import plan_for_nats
from adapters.audit.verify import verify
from adapters.nats.event_log import EventLog, StreamNames
from adapters.nats.local_cluster import LocalCluster
from adapters.nats.log_source import LogReadError, NatsSource
from adapters.runtime.app import bundled_tape, default_session
from adapters.runtime.simulation import SimulatedClock
from config.loader import DEFAULT_DIR
from config.settings import Settings
from domain.events import (
    AlertRaised,
    BarReceived,
    ClockTicked,
    Event,
    OrderApproved,
    OrderFilled,
    OrderPartiallyFilled,
)
from tests.e2e.cli_support import CATALYST, clean_env
from tests.e2e.serve_support import Served
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_alert_delivery import Inbox, free_port, start_smtp
from tests.integration.test_paper_session_verifies import Venue

ROLES = ("session", "strategy", "risk", "execution", "alerts")
FAULTS = ("kill_leader_node", "kill_execution", "kill_risk", "kill_alerts", "second_instances",
          "drop_broker_stream", "smtp_outage")


@dataclass
class TrialResult:
    seed: int
    minutes: int
    faults: list[str] = field(default_factory=list)
    duplicate_orders: int = 0
    lost_fills: int = 0
    doubled_fills: int = 0
    lost_alerts: int = 0
    doubled_alerts: int = 0
    approvals: int = 0
    orders: int = 0
    fills: int = 0
    alerts: int = 0
    divergences: int = -1
    failovers: list[float] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)  # processes that exited by themselves
    longest_stall: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.duplicate_orders or self.lost_fills or self.doubled_fills
                    or self.lost_alerts or self.doubled_alerts or self.divergences)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class _StopDay(Exception):
    pass


class _Unrecorded:
    """SimulatedClock flushes its pipeline's recorder; the driver publishes as it goes."""

    async def flush(self) -> None:
        return None

    async def maybe_flush(self) -> None:
        return None


@dataclass
class Proc:
    role: str
    served: Served
    started: float
    killed: bool = False  # by the trial (a fault), not by itself
    restarted: bool = False

    @property
    def alive(self) -> bool:
        return self.served.proc.poll() is None

    def said(self, text: str) -> bool:
        while not self.served.lines.empty():
            line = self.served.lines.get_nowait()
            if line is not None:
                self.served.output.append(line)
        return any(text in line for line in self.served.output)


class Trial:
    def __init__(self, cluster: LocalCluster, workdir: Path, seed: int, minutes: int = 60,
                 faults: tuple[str, ...] = FAULTS, log: Callable[[str], None] = print) -> None:
        self.cluster, self.workdir, self.seed, self.minutes = cluster, workdir, seed, minutes
        self.rng = random.Random(seed)
        self.say = log
        self.result = TrialResult(seed, minutes)
        # Fault -> minute of the day it happens at (from minute 5, apart).
        slots = self.rng.sample(range(5, max(6, minutes - 8), 3), k=len(faults))
        self.plan = dict(zip(slots, faults, strict=True))
        self.procs: list[Proc] = []
        self.fake = FakeAlpaca()
        self.inbox = Inbox()
        self.smtp_port = free_port()
        self.smtp: Any = None
        tag = uuid4().hex[:6]
        self.names = StreamNames(f"CHAOS_{tag}", f"CHAOS_MD_{tag}")
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        self.bars: dict[str, Any] = {}
        self.pending: list[tuple[int, Callable[[], Any]]] = []  # (minute, undo)
        self.recorder = _Unrecorded()

    # --- set up ------------------------------------------------------------------------

    def _config(self) -> Path:
        cfg = self.workdir / "config"
        cfg.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEFAULT_DIR / "risk_parameters.yaml", cfg)
        doc = yaml.safe_load((DEFAULT_DIR / "trading_config.yaml").read_text())
        doc["broker"].update(paper_url=self.fake.url, stream_url=self.fake.stream_url)
        doc["nats"].update(servers=self.cluster.urls.split(","), replicas=3,
                           lease_ttl_seconds=2, record_stream=self.names.record,
                           market_data_stream=self.names.market_data)
        doc["alerts"].update(channels=["smtp"], hourly_cap=1000, cooldown_minutes=0)
        doc["alerts"]["smtp"].update(host="127.0.0.1", port=self.smtp_port, security="none",
                                     timeout_seconds=2)
        (cfg / "trading_config.yaml").write_text(yaml.safe_dump(doc))
        return cfg

    def _spawn(self, role: str) -> Proc:
        assert CATALYST
        env = clean_env(ALPACA_API_KEY=self.fake.api_key,
                        ALPACA_SECRET_KEY=self.fake.secret_key, COLUMNS="200",
                        CATALYST_CLOCK="data")
        args = [CATALYST, "serve", "--role", role, "--config", str(self.cfg)]
        if role == "session":
            args.append("--no-scheduler")
        proc = subprocess.Popen(args, cwd=self.workdir, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        served = Served(proc, "")
        served.start_reading()
        p = Proc(role, served, time.monotonic())
        self.procs.append(p)
        return p

    def _active(self, role: str) -> Proc | None:
        for p in self.procs:
            if p.alive and p.role == role and p.said(f"role {role}: active"):
                return p
        return None

    async def _serving(self, p: Proc, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not p.said(f"serving {p.role}"):
            if not p.alive:
                # Died starting (a node lost under it): the supervisor starts it again,
                # and that one is followed (the trial reports the restart).
                self._supervise()
                p = next(q for q in reversed(self.procs) if q.role == p.role)
                if not p.alive:
                    raise AssertionError(f"{p.role} died:\n"
                                         f"{''.join(p.served.output)[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{p.role} not serving in {timeout:.0f}s:\n"
                                     f"{''.join(p.served.output)[-2000:]}")
            await asyncio.sleep(0.05)

    async def _said(self, p: Proc, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not p.said(text):
            if time.monotonic() > deadline or not p.alive:
                raise AssertionError(f"{p.role}: no {text!r}:\n"
                                     f"{''.join(p.served.output)[-2000:]}")
            await asyncio.sleep(0.05)

    # --- driving -------------------------------------------------------------------------

    async def settle(self, timeout: float = 60.0) -> None:
        """Until every durable consumer of both streams has taken and acked everything."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            self._supervise()
            busy: list[str] = []
            for stream in (self.names.record, self.names.market_data):
                try:
                    infos = await self.log.js.consumers_info(stream)
                except Exception as e:  # noqa: BLE001 - a node is being elected: ask again
                    busy.append(f"{stream}: {e!r}")
                    break
                for c in infos:
                    if c.config.durable_name and (c.num_pending or c.num_ack_pending):
                        busy.append(f"{c.name} ({c.num_pending} pending, "
                                    f"{c.num_ack_pending} unacked)")
            quiet = 0 if busy else quiet + 1
            if time.monotonic() > deadline:
                for p in self.procs:
                    p.said("")  # take what they printed
                tails = "\n".join(f"--- {p.role} (exit {p.served.proc.poll()}):\n"
                                  + "".join(p.served.output[-15:]) for p in self.procs)
                raise AssertionError(f"the system did not settle within {timeout:.0f}s: "
                                     f"{', '.join(busy)}\n{tails}")
            await asyncio.sleep(0.03)

    def _supervise(self) -> None:
        """What docker compose's restart policy does: a process that exited by itself (a
        lost lease: 75) is started again, as a standby."""
        for p in list(self.procs):
            if not p.alive and not p.killed and not p.restarted:
                p.restarted = True
                p.said("")
                self.result.restarts.append(f"{p.role} exit {p.served.proc.poll()}: "
                                            + "".join(p.served.output[-3:]).strip()[-300:])
                self._spawn(p.role)

    async def _venue_recorded(self, timeout: float = 60.0) -> None:
        """Until every fill the venue made is in the log (they travel by the broker's
        stream to the execution process first)."""
        deadline = time.monotonic() + timeout
        while True:
            made = sum(u["event"] in ("fill", "partial_fill") for u in self.fake.sent_updates)
            if not made:
                return
            got = len({e.fill_id for e in await self._events(  # type: ignore[attr-defined]
                ["catalyst.order.filled", "catalyst.order.partially_filled"])
                if getattr(e, "broker_order_id", "")})
            if got >= made:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{made - got} of the venue's fills not recorded in "
                                     f"{timeout:.0f}s")
            self._supervise()
            await asyncio.sleep(0.05)

    async def _publish(self, events: list[Event]) -> None:
        started = time.monotonic()
        await self.log.publish_many(events)
        self.result.longest_stall = max(self.result.longest_stall, time.monotonic() - started)

    async def submit(self, ev: Event) -> None:
        """The recorded day, as ingest and the session's clock would deliver it."""
        self.now = max(self.now, ev.occurred_at)
        if isinstance(ev, BarReceived) and ev.bar.timeframe == "1Min":
            self.bars[ev.symbol] = ev.bar
        if isinstance(ev, ClockTicked):
            minute = int((ev.occurred_at - self.open).total_seconds() // 60)
            await self.settle()
            await self._publish([ev])
            await self.settle()
            await self.venue.trade()
            await self._venue_recorded()
            await self.settle()
            await self._chaos(minute)
            if minute >= self.minutes:
                raise _StopDay
            return
        await self._publish([ev])

    async def _chaos(self, minute: int) -> None:
        for at, undo in list(self.pending):
            if at <= minute:
                self.pending.remove((at, undo))
                await undo()
        fault = self.plan.get(minute)
        if fault is None:
            return
        self.say(f"  minute {minute}: {fault}")
        self.result.faults.append(f"{minute}:{fault}")
        if fault == "kill_leader_node":
            info = await self.log.js.stream_info(self.names.record)
            leader = info.cluster.leader if info.cluster else None
            if leader is None:
                return
            index = int(leader.removeprefix("n")) - 1  # LocalCluster names nodes n1..n3
            self.cluster.kill(index)

            async def restart() -> None:
                await asyncio.to_thread(self.cluster.restart, index)
            self.pending.append((minute + 2, restart))
        elif fault.startswith("kill_"):
            role = fault.removeprefix("kill_")
            active = self._active(role)
            if active is None:
                return
            standby = next((p for p in self.procs if p.alive and p.role == role
                            and p is not active), None)
            if standby is None:
                standby = self._spawn(role)
                await self._said(standby, f"role {role}: standby")
            killed = time.monotonic()
            active.killed = True
            active.served.proc.kill()
            await self._serving(standby)
            self.result.failovers.append(time.monotonic() - killed)
            self._spawn(role)  # the supervisor's restart: a fresh standby
        elif fault == "second_instances":
            self._spawn("execution")
            self._spawn("risk")
        elif fault == "drop_broker_stream":
            await self.fake.drop_streams()
        elif fault == "smtp_outage":
            self.smtp.stop()

            async def smtp_back() -> None:
                self.smtp = start_smtp(self.inbox, self.smtp_port)
            self.pending.append((minute + 3, smtp_back))

    # --- a trial ---------------------------------------------------------------------------

    async def run(self) -> TrialResult:
        t0 = time.monotonic()
        await self.fake.start()
        self.smtp = start_smtp(self.inbox, self.smtp_port)
        self.cfg = self._config()
        self.log = await EventLog.connect(self.cluster.urls, names=self.names, replicas=3)
        try:
            for role in ROLES:
                self._spawn(role)
            for p in list(self.procs):
                await self._serving(p)
            settings = Settings()
            tape = bundled_tape(settings)
            day = default_session(settings) or tape.dates[-1]
            self.open = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=14,
                                                                                   minutes=30)
            self.open = min((t for t in tape.minutes_for(day)), default=self.open)
            self.fake.clock = lambda: self.now + timedelta(seconds=1)
            self.venue = Venue(self.fake, self)  # type: ignore[arg-type]
            with contextlib.suppress(_StopDay):
                await SimulatedClock(self, tape, f"chaos-{self.seed}").run([day])  # type: ignore[arg-type]
            for _, undo in self.pending:
                await undo()
            self.pending.clear()
            await self.settle(timeout=120)
            await self._deliveries_done()
            await self._check()
        finally:
            for p in self.procs:
                if p.alive:
                    p.served.proc.send_signal(signal.SIGINT)
            for p in self.procs:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(p.served.proc.wait, 30)
                if p.alive:
                    p.served.proc.kill()
            with contextlib.suppress(Exception):
                self.smtp.stop()
            await self.fake.stop()
            for stream in (self.names.record, self.names.market_data,
                           f"KV_{self.names.record}_LEASES"):
                with contextlib.suppress(Exception):
                    await self.log.js.delete_stream(stream)
            await self.log.close()
        self.result.seconds = time.monotonic() - t0
        return self.result

    async def _deliveries_done(self, timeout: float = 60.0) -> None:
        """Alerts raised while SMTP was away go out once it is back (the log redelivers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raised = {e.alert_id for e in await self._events(["catalyst.alert.raised"])
                      if isinstance(e, AlertRaised)}
            if raised <= self._delivered_ids():
                return
            await asyncio.sleep(0.25)

    def _delivered_ids(self) -> set[str]:
        return {str(m["Message-ID"]).strip("<>").removesuffix("@catalyst")
                for m in self.inbox.messages()}

    async def _events(self, subjects: list[str]) -> list[Event]:
        return [s.event async for s in self.log.read(subjects)]

    async def _verify(self) -> Any:
        """`replay --verify`. Its fast read fails, clearly, on a stream whose leader is being
        elected (a node restarted at the end of the trial): read again, as a person would."""
        for attempt in range(5):
            try:
                return await verify(await NatsSource(self.log).open(),
                                    await plan_for_nats(self.log, Settings()), jobs=1)
            except LogReadError as e:
                if attempt == 4:
                    raise
                self.say(f"  verify: {e}; reading again")
                await asyncio.sleep(2.0)
        raise AssertionError("unreachable")

    async def _check(self) -> None:
        r = self.result
        events = await self._events(["catalyst.>"])
        entries = Counter(o.client_order_id for o in self.fake.orders.values()
                          if o.parent is None)
        r.orders = len(entries)
        r.duplicate_orders = sum(n - 1 for n in entries.values())
        venue = [u["execution_id"] for u in self.fake.sent_updates
                 if u["event"] in ("fill", "partial_fill")]
        recorded = Counter(e.fill_id for e in events  # type: ignore[attr-defined]
                           if isinstance(e, OrderFilled | OrderPartiallyFilled)
                           and e.broker_order_id)
        r.fills = len(venue)
        r.lost_fills = len(set(venue) - set(recorded))
        r.doubled_fills = sum(n - 1 for n in recorded.values())
        raised = {e.alert_id for e in events if isinstance(e, AlertRaised)}
        sent = Counter(str(m["Message-ID"]) for m in self.inbox.messages())
        r.alerts = len(raised)
        r.lost_alerts = len(raised - self._delivered_ids())
        r.doubled_alerts = sum(n - 1 for n in sent.values())
        r.approvals = sum(isinstance(e, OrderApproved) for e in events)
        result = await self._verify()
        r.divergences = result.divergences
        if result.divergences:
            dump = self.workdir / "log.txt"
            with dump.open("w") as f:
                async for batch in (await NatsSource(self.log).open()).batches():
                    for e in batch:
                        ev = e.event
                        f.write(f"{e.stream} {e.seq} {ev.type} {ev.occurred_at} "
                                f"{ev.event_id} cause={ev.causation_id}\n")
            self.say(f"  log: {dump}")
            self.say("  divergences: " + json.dumps(
                [{k: str(v) for k, v in d.__dict__.items()} for d in result.reported[:3]]))


@contextlib.contextmanager
def local_cluster(directory: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(directory)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
