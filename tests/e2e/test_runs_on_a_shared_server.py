"""Two simulated runs against one external NATS server (CATALYST_NATS_URL): each records
into its own streams, so each verifies on its own, and neither touches the live streams."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest

from adapters.nats.embedded import EmbeddedNats
from tests.e2e.cli_support import Run, catalyst, clean_env

pytestmark = pytest.mark.e2e

HALF_DAY = "2025-11-28"  # the bundled half-day: the shortest session to run


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path_factory.mktemp("shared")) as server:
        yield server


@pytest.fixture(scope="module")
def two_runs(shared_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, dict[str, str], list[str]]:
    cwd = tmp_path_factory.mktemp("runs")
    env = clean_env(CATALYST_NATS_URL=shared_server.url, COLUMNS="200")
    ids = []
    for _ in range(2):
        r = catalyst(cwd, "run", "--date", HALF_DAY, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        ids.append(re.search(r"Run (sim-\S+)", r.stdout).group(1))  # type: ignore[union-attr]
    return cwd, env, ids


def verify(cwd: Path, env: dict[str, str], run: str) -> Run:
    return catalyst(cwd, "replay", "--verify", "--run", run, env=env, timeout=120)


def test_each_of_two_runs_on_one_server_verifies_with_zero_divergences(
        two_runs: tuple[Path, dict[str, str], list[str]]) -> None:
    cwd, env, ids = two_runs

    for run in ids:
        r = verify(cwd, env, run)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"\d+ events, 0 divergences", r.stdout), r.stdout
        assert f"RunStarted ({run})" in r.stdout + r.stderr


def test_replay_of_a_run_filters_by_subject(
        two_runs: tuple[Path, dict[str, str], list[str]]) -> None:
    cwd, env, ids = two_runs
    r = catalyst(cwd, "replay", "--run", ids[0], "--subject", "catalyst.session.>", "--json",
                 env=env)

    assert r.returncode == 0, r.stderr
    types = {json.loads(line)["type"] for line in r.stdout.splitlines() if line.strip()}
    assert "SessionStarted" in types and "SessionEnded" in types
    assert not types & {"BarReceived", "OrderFilled", "SignalGenerated"}, types


def test_a_run_records_where_its_log_is_and_latest_finds_it(
        two_runs: tuple[Path, dict[str, str], list[str]]) -> None:
    cwd, env, ids = two_runs
    record = json.loads((cwd / "var/runs" / ids[1] / "run.json").read_text())

    suffix = ids[1].upper().replace("-", "_")
    assert record["record_stream"] == f"CATALYST_{suffix}"
    assert record["market_data_stream"] == f"CATALYST_MD_{suffix}"
    r = verify(cwd, env, "latest")
    assert r.returncode == 0 and f"RunStarted ({ids[1]})" in r.stdout + r.stderr, r.stdout
    status = catalyst(cwd, "status", "--json", "--run", ids[1], env=env)
    assert status.returncode == 0, status.stderr
    streams = json.loads(status.stdout)["nats"]["streams"]
    assert streams[f"CATALYST_{suffix}"]["messages"] > 0


def test_simulated_runs_leave_the_live_streams_alone(
        two_runs: tuple[Path, dict[str, str], list[str]], shared_server: EmbeddedNats) -> None:
    async def live_stream_exists() -> bool:
        nc = await nats.connect(shared_server.url)
        try:
            await nc.jetstream().stream_info("CATALYST")
            return True
        except nats.js.errors.NotFoundError:
            return False
        finally:
            await nc.close()

    assert not asyncio.run(live_stream_exists())
