"""`catalyst run` with keys (paper, fake Alpaca) while SMTP is down: the process retries
while it runs, and when it is stopped with a CRITICAL still undelivered it says so, with the
command, and exits 1."""

from __future__ import annotations

import asyncio
import re
import signal
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.nats.event_log import EventLog
from domain.events import HandlerCrashLooping
from tests.e2e.cli_support import CATALYST, clean_env
from tests.e2e.test_run_paper_cli import paper_config, wait_for_run_started
from tests.fakes.alpaca_data_server import FakeAlpacaData
from tests.fakes.alpaca_fixtures import fake_alpaca  # noqa: F401 - the fixture
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_alert_delivery import free_port

pytestmark = pytest.mark.e2e


async def test_stopping_with_an_undelivered_critical_says_so_and_exits_1(
    fake_alpaca: FakeAlpaca, tmp_path: Path,  # noqa: F811
) -> None:
    data = FakeAlpacaData(api_key=fake_alpaca.api_key, secret_key=fake_alpaca.secret_key)
    await data.start()
    cfg = paper_config(tmp_path, fake_alpaca, data)
    env = clean_env(ALPACA_API_KEY=fake_alpaca.api_key, ALPACA_SECRET_KEY=fake_alpaca.secret_key,
                    SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()), COLUMNS="200")
    assert CATALYST
    proc = await asyncio.create_subprocess_exec(
        CATALYST, "run", "--config", str(cfg), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
        url_file = tmp_path / "var" / "nats" / "server.url"
        for _ in range(600):
            if url_file.exists():
                break
            await asyncio.sleep(0.05)
        log = await EventLog.connect(url_file.read_text().strip(), create_streams=False)
        try:
            await wait_for_run_started(log)
            await log.publish(HandlerCrashLooping(
                event_id=uuid4(), type="HandlerCrashLooping", occurred_at=datetime.now(UTC),
                correlation_id="test", handler="scanner", failures=5, error="boom"))
            for _ in range(300):  # SMTP refused at least once (mailbox took it)
                evs = [s.event async for s in log.read(["catalyst.alert.failed"])]
                if evs:
                    break
                await asyncio.sleep(0.1)
            assert evs and evs[0].will_retry  # type: ignore[attr-defined]
        finally:
            await log.close()
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 60)
        out = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
        err = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert code == 1, out + err
        # (After the real market's open the scheduler starts a session too, and its INFO
        # alert is pending as well: count the CRITICAL, not every alert.)
        assert re.search(r"\d+ alerts pending delivery \(1 CRITICAL\)", out), out
        assert "catalyst alerts deliver" in out
        assert "CRITICAL alert(s) not delivered" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await data.close()
