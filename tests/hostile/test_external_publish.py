"""A command published straight to the record stream (the documented fallback when no
inbox answers, or any other process's producer) while the runtime trades. The doc says its
position in a verification is its place in the stream. It is not: against market data the
log reader (and the sequencer's own rebuild) place an unstamped record event by its
occurred_at, so a command whose timestamp is a little ahead of the next bar's close (the
bar arrives a second or two after the minute; a clock a little ahead) is dispatched live
before that bar and verified after it."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.api.commands import manual_stop
from adapters.nats.inbox import submit_command
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, run_session

pytestmark = pytest.mark.integration


def stop_published(skew_s: float, via_inbox: bool):
    async def act(ctx: Ctx) -> None:
        ev = manual_stop(ctx.feed.now + timedelta(seconds=skew_s), "hostile", ctx.settings,
                         Decimal("0"))
        if via_inbox:
            await submit_command(ctx.root_log, ev)
        else:
            await ctx.root_log.publish(ev)
            seq = ctx.services.sequencer
            async with asyncio.timeout(20):
                while ev.event_id not in seq.known:  # the `sequencer` consumer decided it
                    await asyncio.sleep(0.01)
        await ctx.quiet()
        await ctx.venue.trade()
    return act


@pytest.mark.timeout(240)
@pytest.mark.parametrize("skew_s,via_inbox", [(0, False), (61, False), (3 * 3600, False),
                                              (3 * 3600, True)])
async def test_a_command_published_to_the_log_verifies(fake_alpaca: FakeAlpaca, nats_url: str,
                                                       tmp_path: Path, skew_s: float,
                                                       via_inbox: bool) -> None:
    r = await run_session(fake_alpaca, nats_url, tmp_path,
                          {28: stop_published(skew_s, via_inbox)})
    print(f"skew {skew_s}s inbox={via_inbox}: {len(r.events)} events, {r.verify.summary()}")
    for d in r.verify.reported[:8]:
        print("  ", d.__dict__)
    assert r.verify.divergences == 0
