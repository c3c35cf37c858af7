from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.hostile.harness import Ctx, hard_kill, run_session

pytestmark = pytest.mark.integration


def kill_and_watch(delay: float):
    async def act(ctx: Ctx) -> None:
        await ctx.venue.trade()
        await asyncio.sleep(delay)
        old = ctx.current["services"]
        info = {c.name: await c.info() for c in old.consumers}
        await hard_kill(old, ctx.current["log"])
        for n, i in info.items():
            print("before kill", n, "ack_pending", i.num_ack_pending, "pending", i.num_pending,
                  "floor", i.ack_floor.stream_seq, "delivered", i.delivered.stream_seq)
        t0 = time.monotonic()
        await ctx.relaunch()
        print(f"relaunch took {time.monotonic() - t0:.2f}s")
        s = ctx.current["services"]
        bc = next(c for c in s.consumers if c.name == "broker_effects")
        while True:
            i = await bc.info()
            print(f"{time.monotonic() - t0:5.2f}s broker_effects ack_pending={i.num_ack_pending} "
                  f"pending={i.num_pending} floor={i.ack_floor.stream_seq} "
                  f"redelivered={i.num_redelivered}")
            if i.num_ack_pending == 0 and i.num_pending == 0 or time.monotonic() - t0 > 15:
                break
            await asyncio.sleep(0.5)
    return act


@pytest.mark.timeout(240)
@pytest.mark.parametrize("i", range(3))
async def test_stall(fake_alpaca, nats_url, tmp_path: Path, i) -> None:
    r = await run_session(fake_alpaca, nats_url, tmp_path, {60: kill_and_watch(0.004)})
    print("FILLS", len(r.broker_fills))
