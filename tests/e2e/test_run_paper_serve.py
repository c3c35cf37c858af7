"""`catalyst run --serve` in paper trading (fake Alpaca trading and data servers): the API
publishes to the live log, the durable consumers take it, and the emergency stop is
completed against the broker; Ctrl-C ends the run and the API together."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import httpx

from tests.e2e.cli_support import CATALYST, clean_env
from tests.e2e.serve_support import AUTH, TOKEN
from tests.e2e.test_run_paper_cli import paper_config
from tests.fakes.alpaca_data_server import FakeAlpacaData
from tests.fakes.alpaca_fixtures import fake_alpaca  # noqa: F401 - the fixture
from tests.fakes.alpaca_server import FakeAlpaca


async def until(http: httpx.AsyncClient, path: str, pred, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await http.get(path)).json()
        if pred(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.1)


async def test_paper_run_serves_the_api_and_its_stop_reaches_the_broker(
    fake_alpaca: FakeAlpaca, tmp_path: Path,  # noqa: F811
) -> None:
    data = FakeAlpacaData(api_key=fake_alpaca.api_key, secret_key=fake_alpaca.secret_key)
    await data.start()
    cfg = paper_config(tmp_path, fake_alpaca, data)
    env = clean_env(ALPACA_API_KEY=fake_alpaca.api_key, ALPACA_SECRET_KEY=fake_alpaca.secret_key,
                    COLUMNS="200", CATALYST_API_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    assert CATALYST
    proc = await asyncio.create_subprocess_exec(
        CATALYST, "run", "--config", str(cfg), "--serve", "--port", "0", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        url = None
        while url is None:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
            assert line, "the run ended before serving"
            m = re.search(rb"API and dashboard: (http://\S+?)/\s", line)
            url = m.group(1).decode() if m else None
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            status = await until(http, "/api/v1/status",
                                 lambda b: b["run"] and b["run"]["kind"] == "paper")
            assert status["api"]["runs_beside"] == "paper"
            r = await http.post("/api/v1/emergency-stop", headers=AUTH)
            assert r.status_code == 200, r.text
            done = await until(http, "/api/v1/events?subject=catalyst.risk.>", lambda b: any(
                e["type"] == "EmergencyStopCompleted" for e in b))
            types = [e["type"] for e in done]
            assert types.index("EmergencyStopTriggered") < types.index("EmergencyStopCompleted")
            status = await until(http, "/api/v1/status",
                                 lambda b: b["trading"]["state"] == "halted")
            assert status["trading"]["reason"] == "manual"
            # The durable consumers are what the API's status reports lag for.
            assert status["consumers"] and all(c["lag"] >= 0 for c in status["consumers"])
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
        stderr = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert code == 0, stderr
        assert TOKEN.split(":")[1] not in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await data.close()
