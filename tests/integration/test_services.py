"""`catalyst serve --role` on a 3-node JetStream cluster: two risk processes and two execution
processes (real OS processes) make exactly one set of decisions, and a standby takes over
from an active instance killed with SIGKILL without a decision made twice or lost.

The fake Alpaca (HTTP and WebSocket, the real alpaca-py client in the execution processes)
takes the orders; signals are published to the log as the strategy role would."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import NAMESPACE_URL, uuid4, uuid5

import pytest
import yaml

from adapters.audit.settings_history import plan_for_nats
from adapters.audit.verify import verify
from adapters.nats.event_log import EventLog, StreamNames
from adapters.nats.local_cluster import LocalCluster
from adapters.nats.log_source import NatsSource
from config.loader import DEFAULT_DIR
from config.settings import Settings
from domain.events import Event, OrderApproved, OrderDenied, SignalGenerated
from domain.values import Side
from tests.e2e.cli_support import CATALYST, clean_env
from tests.e2e.serve_support import Served
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_cluster import wait_until

pytestmark = pytest.mark.integration

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "META", "GOOG", "TSLA", "AMD", "NFLX", "INTC",
           "ORCL", "CRM", "ADBE", "QCOM"]


def config_dir(tmp_path: Path, fake: FakeAlpaca, cluster: LocalCluster,
               names: StreamNames) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir()
    shutil.copy(DEFAULT_DIR / "risk_parameters.yaml", cfg)
    doc = yaml.safe_load((DEFAULT_DIR / "trading_config.yaml").read_text())
    doc["broker"].update(paper_url=fake.url, stream_url=fake.stream_url)
    doc["nats"].update(servers=cluster.urls.split(","), replicas=3, lease_ttl_seconds=2,
                       record_stream=names.record, market_data_stream=names.market_data)
    doc["alerts"]["mailbox_dir"] = str(tmp_path / "mail")
    (cfg / "trading_config.yaml").write_text(yaml.safe_dump(doc))
    return cfg


@contextlib.contextmanager
def service(tmp_path: Path, cfg: Path, fake: FakeAlpaca, role: str) -> Iterator[Served]:
    assert CATALYST
    env = clean_env(ALPACA_API_KEY=fake.api_key, ALPACA_SECRET_KEY=fake.secret_key,
                    COLUMNS="200")
    proc = subprocess.Popen([CATALYST, "serve", "--role", role, "--config", str(cfg)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    served = Served(proc, "")
    served.start_reading()
    try:
        yield served
    finally:
        served.stop(30)


def signal_for(symbol: str, n: int) -> SignalGenerated:
    return SignalGenerated(
        event_id=uuid5(NAMESPACE_URL, f"services-test:{n}:{symbol}"), type="SignalGenerated",
        occurred_at=datetime.now(UTC), correlation_id="services-test",
        signal_id=f"sig-{n}-{symbol}", symbol=symbol, side=Side.BUY, entry=Decimal(100),
        stop_loss=Decimal(98), take_profit=Decimal(105), use_bracket=True)


async def decisions(log: EventLog) -> list[Event]:
    return [s.event async for s in log.read(["catalyst.order.approved",
                                             "catalyst.order.denied"])]


@pytest.mark.timeout(300)
async def test_two_risk_and_two_execution_processes_make_one_set_of_decisions(
    nats_cluster: LocalCluster, fake_alpaca: FakeAlpaca, tmp_path: Path
) -> None:
    tag = uuid4().hex[:6]
    names = StreamNames(f"SVC_{tag}", f"SVC_MD_{tag}")
    cfg = config_dir(tmp_path, fake_alpaca, nats_cluster, names)
    log = await EventLog.connect(nats_cluster.urls, names=names, replicas=3)
    try:
        with service(tmp_path, cfg, fake_alpaca, "risk") as risk_a, \
                service(tmp_path, cfg, fake_alpaca, "execution") as exec_a:
            await asyncio.to_thread(risk_a.read_until, "role risk: active", 90)
            await asyncio.to_thread(exec_a.read_until, "serving execution", 90)
            with service(tmp_path, cfg, fake_alpaca, "risk") as risk_b, \
                    service(tmp_path, cfg, fake_alpaca, "execution") as exec_b:
                await asyncio.to_thread(risk_b.read_until, "role risk: standby", 90)
                await asyncio.to_thread(exec_b.read_until, "role execution: standby", 90)

                first = [signal_for(s, 1) for s in SYMBOLS[:8]]
                await log.publish_many(first)
                approved = await wait_until_decided(log, first)
                await wait_until(lambda: len(entries(fake_alpaca)) >= approved, 30,
                                 "the approved orders at the broker")

                # The active risk and execution processes die; the standbys take over.
                killed = time.monotonic()
                risk_a.proc.kill()
                exec_a.proc.kill()
                await asyncio.to_thread(risk_b.read_until, "role risk: active", 60)
                await asyncio.to_thread(exec_b.read_until, "serving execution", 60)
                failover = time.monotonic() - killed
                second = [signal_for(s, 2) for s in SYMBOLS[8:]]
                await log.publish_many(second)
                await wait_until_decided(log, first + second)
                await asyncio.sleep(1.0)  # anything doubled would be in by now

        decided = await decisions(log)
        per_signal = Counter(d.signal_id for d in decided)  # type: ignore[attr-defined]
        assert set(per_signal) == {s.signal_id for s in first + second}
        assert max(per_signal.values()) == 1, "a signal was decided twice"
        approved = [d for d in decided if isinstance(d, OrderApproved)]
        assert approved, [d for d in decided if isinstance(d, OrderDenied)][:2]
        at_broker = Counter(entries(fake_alpaca))
        assert set(at_broker) == {a.client_order_id for a in approved}
        assert max(at_broker.values()) == 1, "an order was sent twice"
        # One set of decisions: what a single fresh set of handlers decides from this log.
        result = await verify(await NatsSource(log).open(), await plan_for_nats(log, Settings()),
                              jobs=1)
        assert result.divergences == 0, [d.__dict__ for d in result.reported[:5]]
        print(f"{len(approved)} approved, {len(decided) - len(approved)} denied, "
              f"{len(at_broker)} orders; both standbys serving {failover:.1f}s after the kill; "
              f"verify: {result.summary()}")
    finally:
        for stream in (names.record, names.market_data):
            with contextlib.suppress(Exception):
                await log.js.delete_stream(stream)
        await log.close()


def entries(fake: FakeAlpaca) -> list[str]:
    return [o.client_order_id for o in fake.orders.values() if o.parent is None]


async def wait_until_decided(log: EventLog, signals: list[SignalGenerated],
                             timeout: float = 60.0) -> int:
    """Until every signal is approved or denied; returns how many were approved."""
    wanted = {s.signal_id for s in signals}
    deadline = time.monotonic() + timeout
    while True:
        decided = await decisions(log)
        if wanted <= {d.signal_id for d in decided}:  # type: ignore[attr-defined]
            return sum(isinstance(d, OrderApproved) for d in decided)
        if time.monotonic() > deadline:
            raise AssertionError(f"undecided after {timeout:.0f}s")
        await asyncio.sleep(0.2)
