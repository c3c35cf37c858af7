"""kill -9 style stops mid-session, then a restart on the same log: the log must verify,
every venue fill be recorded once, and the log's positions match the broker's."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, run_session

pytestmark = pytest.mark.integration


def kill_at(delay: float, trade_while_down: bool = True):
    async def act(ctx: Ctx) -> None:
        await ctx.venue.trade()          # fills stream in; the runtime is busy with them
        await asyncio.sleep(delay)       # ... and dies somewhere in the middle
        from tests.hostile.harness import hard_kill
        await hard_kill(ctx.current["services"], ctx.current["log"])
        if trade_while_down:
            await ctx.venue.trade()
        await ctx.relaunch()
    return act


CASES = [(m, d) for m in (int(x) for x in os.environ.get("KILL_MINUTES", "35").split(","))
         for d in (float(x) for x in os.environ.get("KILL_DELAYS", "0,0.003,0.02").split(","))]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("minute,delay", CASES)
async def test_hard_kill_then_restart_verifies(fake_alpaca: FakeAlpaca, nats_url: str,
                                               tmp_path: Path, minute: int, delay: float
                                               ) -> None:
    r = await run_session(fake_alpaca, nats_url, tmp_path, {minute: kill_at(delay)})
    print(f"kill@{minute}+{delay}: {len(r.events)} events, {len(r.broker_fills)} fills, "
          f"{len(r.discrepancies)} discrepancies, {r.verify.summary()}")
    for d in r.discrepancies:
        print("  discrepancy:", d.kind, d.symbol, d.broker, d.recorded, d.resolution)
    assert r.problems() == []


SOON = [(m, d) for m in (int(x) for x in os.environ.get("SOON_MINUTES", "29").split(","))
        for d in (float(x) for x in os.environ.get("SOON_DELAYS",
                                                   "0.005,0.02,0.05,0.1,0.3").split(","))]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("minute,delay", SOON)
async def test_hard_kill_mid_dispatch_then_restart_verifies(
        fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path, minute: int, delay: float
) -> None:
    from tests.hostile.harness import kill_soon
    r = await run_session(fake_alpaca, nats_url, tmp_path, {minute: kill_soon(delay)})
    print(f"kill-soon@{minute}+{delay}: {len(r.events)} events, {len(r.broker_fills)} fills, "
          f"{len(r.discrepancies)} discrepancies, {r.verify.summary()} notes={r.notes}")
    for d in r.discrepancies:
        print("  discrepancy:", d.kind, d.symbol, d.broker, d.recorded, d.resolution)
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:600])
    assert r.problems() == []
