"""The runtime dies while the broker's update stream is down, and starts again before (or
long after: past the 30 s catch-up wait) the stream comes back."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, hard_kill, run_session

pytestmark = pytest.mark.integration


def die_during_outage(outage_s: float, hard: bool):
    async def act(ctx: Ctx) -> None:
        async with ctx.fake.stream_outage():
            await ctx.venue.trade()
            if hard:
                await hard_kill(ctx.current["services"], ctx.current["log"])
            else:
                await ctx.current["services"].stop()
                await ctx.current["log"].close()
            await ctx.venue.trade()
            task = asyncio.ensure_future(ctx.relaunch())
            await asyncio.sleep(outage_s)
        await task
        await ctx.quiet()
    return act


@pytest.mark.timeout(300)
@pytest.mark.parametrize("minute", [60, 121])
@pytest.mark.parametrize("outage_s,hard", [(2, True), (2, False), (33, True)])
async def test_restart_while_the_update_stream_is_down(fake_alpaca: FakeAlpaca, nats_url: str,
                                                       tmp_path: Path, minute: int,
                                                       outage_s: float, hard: bool) -> None:
    r = await run_session(fake_alpaca, nats_url, tmp_path,
                          {minute: die_during_outage(outage_s, hard)})
    print(f"@{minute} outage {outage_s}s hard={hard}: {len(r.events)} events, "
          f"{len(r.broker_fills)} fills, {r.verify.summary()}")
    for d in r.discrepancies:
        print("  discrepancy:", d.kind, d.symbol, d.broker, d.recorded, d.resolution)
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:600])
    assert r.problems() == []
    strangers = [d for d in r.discrepancies if "did not send" in d.resolution]
    assert not strangers, "our own bracket legs reported as orders we did not send"
