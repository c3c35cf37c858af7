"""After a kill -9 with a broker command in flight, the new runtime's broker effect sends
nothing until the dead process's delivery times out (ack_wait, 10 s): the consumer takes one
message at a time (max_ack_pending=1) and the server still counts the dead one as pending.
Orders approved meanwhile (and any new emergency stop, close or flatten) wait."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from domain.events import OrderApproved, OrderSubmitted
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, hard_kill, run_session

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
async def test_broker_commands_flow_soon_after_a_kill_with_one_in_flight(
        fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path) -> None:
    waited: list[float] = []

    async def act(ctx: Ctx) -> None:
        await ctx.venue.trade()
        # The minute's tick approves three entries; the first one's submit answers late.
        ctx.fake.delay_next(3.0, method="POST", path="/v2/orders")
        await ctx.services.sequencer.submit([ctx.tick])
        approvals = [s.event.client_order_id async for s in
                     ctx.root_log.read(["catalyst.order.approved"])]
        assert len(approvals) == 3
        await asyncio.sleep(0.5)  # the broker effect is inside the first submit
        await hard_kill(ctx.current["services"], ctx.current["log"])
        t0 = time.monotonic()
        await ctx.relaunch()
        while True:
            sent = {s.event.client_order_id async for s in
                    ctx.root_log.read(["catalyst.order.submitted"])}
            if set(approvals) <= sent or time.monotonic() - t0 > 20:
                break
            await asyncio.sleep(0.1)
        waited.append(time.monotonic() - t0)

    r = await run_session(fake_alpaca, nats_url, tmp_path, {29: act})
    print(f"the approved entries were all sent {waited[0]:.1f}s after the restart; "
          f"{r.verify.summary()}")
    assert sum(isinstance(e, OrderApproved) for e in r.events) >= 3
    assert sum(isinstance(e, OrderSubmitted) for e in r.events) >= 3
    assert waited[0] < 3.0


@pytest.mark.timeout(240)
async def test_a_manual_emergency_stop_right_after_a_kill_restart_acts_promptly(
        fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path) -> None:
    """The kill switch pressed just after the restart (the person saw the crash): its
    cancels and closes wait behind the dead process's unacked delivery."""
    from decimal import Decimal

    from adapters.api.commands import manual_stop
    from adapters.nats.inbox import submit_command
    from domain.events import EmergencyStopCompleted

    waited: list[float] = []

    async def act(ctx: Ctx) -> None:
        await ctx.venue.trade()
        ctx.fake.delay_next(3.0, method="POST", path="/v2/orders")
        await ctx.services.sequencer.submit([ctx.tick])  # three entries approved
        await asyncio.sleep(0.5)  # the broker effect is inside the first submit
        await hard_kill(ctx.current["services"], ctx.current["log"])
        await ctx.relaunch()
        t0 = time.monotonic()
        stop = manual_stop(ctx.feed.now, "hostile", ctx.settings, Decimal("0"))
        assert await submit_command(ctx.root_log, stop) is None  # recorded by the sequencer
        while time.monotonic() - t0 < 20:
            done = [s async for s in ctx.root_log.read(
                ["catalyst.risk.emergency_stop_completed"])
                if isinstance(s.event, EmergencyStopCompleted)
                and s.event.causation_id == stop.event_id]
            if done:
                break
            await asyncio.sleep(0.1)
        waited.append(time.monotonic() - t0)

    r = await run_session(fake_alpaca, nats_url, tmp_path, {29: act})
    print(f"the manual stop completed {waited[0]:.1f}s after it was recorded; "
          f"{r.verify.summary()}")
    assert waited[0] < 3.0
