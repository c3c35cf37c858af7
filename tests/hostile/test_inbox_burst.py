"""Commands through the inbox, many at once, from another connection, while the feed
dispatches bars and fills come in: every one recorded once, stamped, and the log verifies."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.api.commands import resumed, start_requested
from adapters.nats.event_log import EventLog
from adapters.nats.inbox import send_to_inbox
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, run_session

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
async def test_inbox_burst_while_trading(fake_alpaca: FakeAlpaca, nats_url: str,
                                         tmp_path: Path) -> None:
    sent: list = []
    bg: list[asyncio.Task] = []

    async def burst(ctx: Ctx) -> None:
        other = await EventLog.connect(nats_url, names=ctx.names, create_streams=False)

        async def one(i: int) -> None:
            now = ctx.feed.now + timedelta(seconds=1)
            ev = (resumed(now, f"p{i}", "burst") if i % 2 else
                  start_requested(now, f"p{i}", None, str(uuid4())))
            ok = await send_to_inbox(other, ev, timeout=15)
            sent.append((ev.event_id, ok))

        async def run() -> None:
            try:
                await asyncio.gather(*(one(i) for i in range(40)))
            finally:
                await other.close()
        bg.append(asyncio.ensure_future(run()))
        await ctx.venue.trade()

    r = await run_session(fake_alpaca, nats_url, tmp_path, {20: burst, 58: burst, 290: burst})
    await asyncio.gather(*bg)
    ids = {e.event_id for e in r.events}
    print(f"{len(sent)} sent, {sum(ok for _, ok in sent)} ok, "
          f"{sum(i in ids for i, _ in sent)} recorded; {r.verify.summary()}")
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:600])
    assert all(ok for _, ok in sent)
    assert all(i in ids for i, _ in sent)
    assert r.problems() == []
