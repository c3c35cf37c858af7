"""`catalyst run` with Alpaca keys: paper trading in real time against the fake Alpaca
servers (trading and data), interrupted with Ctrl-C like a person would."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

import nats.js.errors
import yaml

from adapters.nats.event_log import EventLog
from config.loader import DEFAULT_DIR
from tests.e2e.cli_support import CATALYST, clean_env
from tests.fakes.alpaca_data_server import FakeAlpacaData
from tests.fakes.alpaca_fixtures import fake_alpaca  # noqa: F401 - the fixture
from tests.fakes.alpaca_server import FakeAlpaca


def paper_config(tmp_path: Path, trading: FakeAlpaca, data: FakeAlpacaData) -> Path:
    cfg = tmp_path / "config"
    cfg.mkdir()
    shutil.copy(DEFAULT_DIR / "risk_parameters.yaml", cfg)
    doc = yaml.safe_load((DEFAULT_DIR / "trading_config.yaml").read_text())
    doc["broker"].update(paper_url=trading.url, stream_url=trading.stream_url)
    doc["market_data"].update(data_url=data.url, stream_url=data.stream_url, symbols=["AAPL"])
    (cfg / "trading_config.yaml").write_text(yaml.safe_dump(doc))
    return cfg


async def wait_for_run_started(log: EventLog, seconds: float = 30.0) -> list:
    """The server URL is written before the streams exist: until then a read finds no
    stream, which is not yet a failure. Waits on the record itself, not on a fixed count of
    polls, so a loaded machine only makes it slower."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            started = [s.event async for s in log.read(["catalyst.ops.run_started"])]
            if started:
                return started
        if loop.time() > deadline:
            raise AssertionError(f"no RunStarted recorded within {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def test_run_with_keys_trades_paper_and_stops_cleanly_on_ctrl_c(
    fake_alpaca: FakeAlpaca, tmp_path: Path,  # noqa: F811
) -> None:
    data = FakeAlpacaData(api_key=fake_alpaca.api_key, secret_key=fake_alpaca.secret_key)
    await data.start()
    cfg = paper_config(tmp_path, fake_alpaca, data)
    env = clean_env(ALPACA_API_KEY=fake_alpaca.api_key, ALPACA_SECRET_KEY=fake_alpaca.secret_key,
                    COLUMNS="120")
    assert CATALYST
    proc = await asyncio.create_subprocess_exec(
        CATALYST, "run", "--config", str(cfg), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
        assert b"paper trading" in banner and b"LIVE" not in banner
        url_file = tmp_path / "var" / "nats" / "server.url"
        for _ in range(600):
            if url_file.exists():
                break
            await asyncio.sleep(0.05)
        log = await EventLog.connect(url_file.read_text().strip(), create_streams=False)
        try:
            started = await wait_for_run_started(log)
            assert started[0].kind == "paper" and started[0].broker == "paper"  # type: ignore[attr-defined]
            recorded = started[0].model_dump_json()
            assert fake_alpaca.secret_key not in recorded and fake_alpaca.api_key not in recorded
        finally:
            await log.close()
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
        stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert code == 0, stderr
        assert fake_alpaca.secret_key not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await data.close()
