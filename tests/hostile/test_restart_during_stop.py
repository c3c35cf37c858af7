"""Restart (hard, or graceful) while the emergency stop's close orders are still working at
the broker (market orders not filled yet), and more than once."""
from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from domain.events import EmergencyStopCompleted, EmergencyStopTriggered
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, hard_kill, run_session

pytestmark = pytest.mark.integration


async def hold_market_orders(ctx: Ctx) -> None:
    ctx.fake.auto_fill_market = False
    await ctx.venue.trade()


def bounce(hard: bool, times: int):
    async def act(ctx: Ctx) -> None:
        await asyncio.sleep(0.3)  # the stop is being driven: closes sent, not filled
        for _ in range(times):
            if hard:
                await hard_kill(ctx.current["services"], ctx.current["log"])
            else:
                await ctx.current["services"].stop()
                await ctx.current["log"].close()
            await ctx.relaunch()
            await asyncio.sleep(0.5)
        ctx.fake.auto_fill_market = True
        await ctx.venue.trade()
    return act


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hard,times", [(True, 1), (False, 1), (True, 3)])
async def test_restart_while_the_stop_closes(fake_alpaca: FakeAlpaca, nats_url: str,
                                             tmp_path: Path, hard: bool, times: int) -> None:
    r = await run_session(fake_alpaca, nats_url, tmp_path,
                          {271: hold_market_orders, 272: bounce(hard, times)})
    sells = Counter((o.symbol, o.side, o.type) for o in fake_alpaca.orders.values()
                    if o.type == "market")
    print(f"hard={hard} x{times}: {len(r.broker_fills)} fills, market orders {dict(sells)}, "
          f"stops {sum(isinstance(e, EmergencyStopTriggered) for e in r.events)}, completed "
          f"{sum(isinstance(e, EmergencyStopCompleted) for e in r.events)}, "
          f"broker positions {dict((s, p.qty) for s, p in fake_alpaca.positions.items())}, "
          f"{r.verify.summary()}")
    for o in fake_alpaca.orders.values():
        if o.symbol == "INTC" and o.side == "sell":
            print("  INTC sell", o.type, o.qty, o.status, o.client_order_id, o.parent,
                  getattr(o, "filled_qty", None), getattr(o, "submitted_at", None))
    for d in r.discrepancies:
        print("  discrepancy:", d.kind, d.symbol, d.broker, d.recorded, d.resolution)
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:600])
    assert all(p.qty >= 0 for p in fake_alpaca.positions.values()), "short at the broker"
    assert r.problems() == []
    strangers = [d for d in r.discrepancies if "did not send" in d.resolution]
    assert not strangers, "our own emergency close reported as an order we did not send"
