"""The NATS server restarts (SIGTERM, or SIGKILL) in the middle of the session, while the
runtime is dispatching and the broker effect is sending orders."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.nats.embedded import EmbeddedNats
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, run_session

pytestmark = pytest.mark.integration


def server_restart(server: EmbeddedNats, delay: float, hard: bool, down_s: float):
    async def act(ctx: Ctx) -> None:
        await ctx.venue.trade()

        async def later() -> None:
            await asyncio.sleep(delay)
            await asyncio.to_thread(server.kill if hard else server.stop)
            await asyncio.sleep(down_s)
            server.log_file.unlink(missing_ok=True)
            server.start()  # in the loop thread: the server dies with the thread that spawned it
            ctx.notes.append("server restarted")
        ctx.current.setdefault("bg", []).append(asyncio.ensure_future(later()))
    return act


@pytest.mark.timeout(300)
@pytest.mark.parametrize("delay,hard,down_s", [(0.01, False, 1.0), (0.03, True, 1.0),
                                               (0.005, True, 3.0)])
async def test_nats_server_restart_mid_session(fake_alpaca: FakeAlpaca, nats_url: str,
                                               nats_server: EmbeddedNats, tmp_path: Path,
                                               delay: float, hard: bool, down_s: float) -> None:
    r = await run_session(fake_alpaca, nats_url, tmp_path,
                          {59: server_restart(nats_server, delay, hard, down_s)})
    print(f"nats restart +{delay}s hard={hard}: {len(r.events)} events, {len(r.broker_fills)} "
          f"fills, {r.verify.summary()} {r.notes}")
    for d in r.discrepancies:
        print("  discrepancy:", d.kind, d.symbol, d.broker, d.recorded, d.resolution)
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:600])
    assert r.problems() == []
