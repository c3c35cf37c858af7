"""Config hot reload mid-session (the files edited, the watcher records ConfigChanged through
the sequencer), with a restart in between; `replay --verify` must find 0 divergences."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from adapters.broker.alpaca import AlpacaBroker
from adapters.nats.event_log import EventLog
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.loader import load_settings
from domain.events import ConfigChanged
from tests.fakes.alpaca_fixtures import broker_settings
from tests.fakes.alpaca_server import FakeAlpaca
from tests.hostile.harness import Ctx, run_session

pytestmark = pytest.mark.integration


def edit(cfg: Path, old: str, new: str):
    async def act(ctx: Ctx) -> None:
        p = cfg / "risk_parameters.yaml"
        before = ctx.services.holder.current
        p.write_text(p.read_text().replace(old, new))
        async with asyncio.timeout(10):
            while ctx.services.holder.current is before:
                await asyncio.sleep(0.05)
        await ctx.quiet()
        await ctx.venue.trade()
    return act


async def restart(ctx: Ctx) -> None:
    await ctx.quiet()
    await ctx.restart(graceful=True)
    await ctx.venue.trade()


def config_dir(tmp_path: Path) -> Path:
    """The shipped config, mail to the test's own mailbox."""
    cfg = tmp_path / "config"
    cfg.mkdir()
    for f in ("risk_parameters.yaml", "trading_config.yaml"):
        shutil.copy(Path("config") / f, cfg / f)
    t = cfg / "trading_config.yaml"
    t.write_text(t.read_text().replace("mailbox_dir: var/mail",
                                       f"mailbox_dir: {tmp_path / 'mail'}"))
    return cfg


@pytest.mark.timeout(240)
@pytest.mark.parametrize("with_restart", [False, True])
async def test_config_reload_mid_session_verifies(fake_alpaca: FakeAlpaca, nats_url: str,
                                                  tmp_path: Path, with_restart: bool) -> None:
    cfg = config_dir(tmp_path)

    async def start(nats_url: str, names: Any, settings: Any, fake: FakeAlpaca, clock: Any):
        # As `catalyst run` does: the config loaded from the directory at each start.
        settings = load_settings(cfg, env={}).settings
        log = await EventLog.connect(nats_url, names=names)
        broker = AlpacaBroker(broker_settings(fake), backoff_initial=0.01, backoff_max=0.05,
                              stream_reconnect_min=0.05)
        services = Services(SettingsHolder(settings, cfg, env={}), log, broker,
                            build_handlers(settings, broker.name), clock=clock,
                            schedule=False, reconcile=True)
        await services.start()
        return services, log

    actions = {50: edit(cfg, "max_positions: 5 ", "max_positions: 2 "),
               100: edit(cfg, "max_position_size_usd: 10000", "max_position_size_usd: 4000"),
               180: edit(cfg, "max_positions: 2 ", "max_positions: 5 ")}
    if with_restart:
        actions[140] = restart
    r = await run_session(fake_alpaca, nats_url, tmp_path, actions,
                          settings=load_settings(cfg, env={}).settings, start=start)
    changes = [e for e in r.events if isinstance(e, ConfigChanged)]
    print(f"restart={with_restart}: {len(changes)} ConfigChanged, {len(r.broker_fills)} fills, "
          f"{r.verify.summary()}")
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:700])
    assert len(changes) == 3
    assert r.problems() == []


@pytest.mark.timeout(240)
async def test_config_edited_while_down_verifies(fake_alpaca: FakeAlpaca, nats_url: str,
                                                 tmp_path: Path) -> None:
    """`catalyst run` restarted after an edit: it records RunStarted with the new config
    (run_services does, before Services.start) and trades under it."""
    from adapters.runtime.run_record import run_started

    cfg = config_dir(tmp_path)

    async def start(nats_url: str, names: Any, settings: Any, fake: FakeAlpaca, clock: Any):
        settings = load_settings(cfg, env={}).settings
        log = await EventLog.connect(nats_url, names=names)
        broker = AlpacaBroker(broker_settings(fake), backoff_initial=0.01, backoff_max=0.05,
                              stream_reconnect_min=0.05)
        handlers = build_handlers(settings, broker.name)
        if clock() > clock().replace(hour=14, minute=31):  # not the first start
            await log.publish(run_started("paper-hostile-2", "paper", settings, handlers,
                                          broker.name, clock()))
        services = Services(SettingsHolder(settings, cfg, env={}), log, broker, handlers,
                            clock=clock, schedule=False, reconcile=True)
        await services.start()
        return services, log

    async def edit_while_down(ctx: Ctx) -> None:
        await ctx.quiet()
        await ctx.current["services"].stop()
        await ctx.current["log"].close()
        p = cfg / "risk_parameters.yaml"
        p.write_text(p.read_text().replace("max_positions: 5 ", "max_positions: 2 "))
        await ctx.venue.trade()
        await ctx.relaunch()

    r = await run_session(fake_alpaca, nats_url, tmp_path, {50: edit_while_down},
                          settings=load_settings(cfg, env={}).settings, start=start)
    print(f"{len(r.broker_fills)} fills, {r.verify.summary()}")
    for d in r.verify.reported[:5]:
        print("  div:", str(d.__dict__)[:700])
    assert r.problems() == []
