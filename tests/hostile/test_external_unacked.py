"""kill -9 between the store of a unit the `sequencer` consumer dispatched (an event another
process published straight to the log) and that consumer's ack: at the next start the event
is left out of the rebuild (unstamped, past the ack floor) while everything it caused is
rebuilt, and it is decided a second time."""
from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.api.commands import manual_stop
from adapters.nats.event_log import Consumer
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, hard_kill, run_session

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
async def test_an_external_command_decided_but_unacked_at_a_kill_is_not_decided_twice(
        fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    block = {"on": False}
    orig = Consumer._process

    async def _process(self: Consumer, msg: object) -> None:
        if self.name == "sequencer" and block["on"]:
            async def noack(*a: object, **k: object) -> None:
                return None
            msg.ack = noack  # type: ignore[attr-defined]  # the process dies before it acks
        await orig(self, msg)  # type: ignore[arg-type]

    monkeypatch.setattr(Consumer, "_process", _process)
    stop_ids = []

    async def act(ctx: Ctx) -> None:
        ev = manual_stop(ctx.feed.now, "hostile", ctx.settings, Decimal("0"))
        stop_ids.append(ev.event_id)
        block["on"] = True
        await ctx.root_log.publish(ev)
        seq = ctx.services.sequencer
        async with asyncio.timeout(20):
            while ev.event_id not in seq.known:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # its unit is stored (and the broker effect acts on it)
        await hard_kill(ctx.current["services"], ctx.current["log"])
        block["on"] = False
        await ctx.venue.trade()
        await ctx.relaunch()
        await ctx.quiet()

    r = await run_session(fake_alpaca, nats_url, tmp_path, {100: act})
    caused = [e for e in r.events if e.causation_id == stop_ids[0]]
    ids = Counter(e.event_id for e in r.events)
    dup = {k: v for k, v in ids.items() if v > 1}
    types = Counter(e.type for e in caused)
    print(f"caused by the stop: {dict(types)}; duplicate ids: {len(dup)}; {r.verify.summary()}")
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:600])
    assert not dup
    assert all(n == 1 for n in types.values()), types
    assert r.verify.divergences == 0
