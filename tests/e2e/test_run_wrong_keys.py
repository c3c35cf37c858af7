"""`catalyst run` with API keys Alpaca refuses: it must not start (issue 14 item 4).

Before, the runtime waited 30 s for the update stream, logged, and ran on with every order
rejected. Now: one clear error naming the variables (never their values), exit code 1, no
traceback, and nothing started."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.cli_support import CATALYST, clean_env
from tests.e2e.test_run_paper_cli import paper_config
from tests.fakes.alpaca_data_server import FakeAlpacaData
from tests.fakes.alpaca_fixtures import fake_alpaca  # noqa: F401 - the fixture
from tests.fakes.alpaca_server import FakeAlpaca

WRONG_KEY, WRONG_SECRET = "PKWRONGKEY123456", "wrong-secret-abcdefghijkl"


async def test_run_with_wrong_keys_refuses_to_start(
    fake_alpaca: FakeAlpaca, tmp_path: Path,  # noqa: F811
) -> None:
    data = FakeAlpacaData(api_key=fake_alpaca.api_key, secret_key=fake_alpaca.secret_key)
    await data.start()
    try:
        cfg = paper_config(tmp_path, fake_alpaca, data)
        env = clean_env(ALPACA_API_KEY=WRONG_KEY, ALPACA_SECRET_KEY=WRONG_SECRET,
                        COLUMNS="200")
        assert CATALYST
        proc = await asyncio.create_subprocess_exec(
            CATALYST, "run", "--config", str(cfg), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 25)
        finally:
            if proc.returncode is None:  # it ran on: that is the failure; do not leak it
                proc.kill()
                await proc.wait()
    finally:
        await data.close()

    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 1, (stdout, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "ALPACA_API_KEY" in errors[0] and "ALPACA_SECRET_KEY" in errors[0]
    assert "Traceback" not in stdout + stderr
    for secret in (WRONG_KEY, WRONG_SECRET):
        assert secret not in stdout + stderr
    assert fake_alpaca.count_requests("POST", "/v2/orders") == 0
