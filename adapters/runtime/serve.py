"""`catalyst serve --role ROLE[,ROLE...]`: some roles of the system as one service.

Services share one NATS server or cluster (`nats.url` / `nats.servers`); each runs the
handlers and effects of its roles (adapters.runtime.roles) through `Services`. A stateful
role is held by one instance at a time: the process waits as a standby until it holds the
lease of every stateful role it runs (adapters.nats.lease), then rebuilds from the log and
decides, its writes fenced by the role's claim (adapters.nats.fence), so a replaced
instance that wakes up again cannot write. An instance that loses a lease stops at once and
exits with status 75 (EX_TEMPFAIL): its supervisor (docker compose, systemd) starts it
again, as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from adapters.nats.lease import RoleLease
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.live import build_broker
from adapters.runtime.realtime import Services
from adapters.runtime.roles import SINGLE_ACTIVE, handlers_for, leased
from adapters.runtime.run_record import run_started
from config.settings import Settings
from domain.errors import CatalystError

log = logging.getLogger("catalyst.serve")

EXIT_LEASE_LOST = 75


class LeaseLost(Exception):  # noqa: N818 - the name says what happened
    """This instance no longer holds a role it ran: it stopped deciding. (Not a
    CatalystError: the CLI turns it into its own exit status, 75.)"""


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve_roles(roles: tuple[str, ...], settings: Settings, console: Console,
                      config_dir: Any = None, api_options: Any = None,
                      stop: asyncio.Event | None = None, lease_ttl: float | None = None,
                      schedule: bool = True) -> None:
    """Run `roles` until SIGINT/SIGTERM (or `stop`); raises LeaseLost when a lease goes."""
    from adapters.nats.connection import open_event_log

    if not settings.trading.nats.server_urls:
        raise CatalystError("services share one NATS server or cluster: set nats.url or "
                            "nats.servers (CATALYST_NATS_URL), e.g. the local cluster of "
                            "`python -m adapters.nats.local_cluster`")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ttl = lease_ttl or settings.trading.nats.lease_ttl_seconds
    broker: Any = None
    async with open_event_log(settings, create_streams=True) as event_log:
        lost = asyncio.Event()
        reasons: list[str] = []
        leases: dict[str, RoleLease] = {}
        instance = instance_id()
        try:
            for role in leased(roles):
                lease = RoleLease(event_log, role, instance, ttl=ttl)
                holder = await lease.holder()
                if holder is not None:
                    console.print(f"role {role}: standby (held by {holder.instance})")
                await _until(stop, lease.acquire())
                if stop.is_set():
                    return
                lease.on_lost(lambda why, r=role: (reasons.append(f"{r}: {why}"), lost.set()))
                leases[role] = lease
                console.print(f"role {role}: active (instance {instance}, token "
                              f"{lease.token})")
            if "execution" in roles:
                broker = build_broker(settings)
                check_keys = getattr(broker, "check_keys", None)
                if check_keys is not None:
                    await check_keys()  # wrong keys: a refusal to run, not a loop of rejects
            market_data = None
            md_cfg = settings.trading.market_data
            if "ingest" in roles and md_cfg.source != "bundled" \
                    and settings.trading.broker.has_keys:
                from adapters.market_data.alpaca import AlpacaMarketData

                market_data = AlpacaMarketData.from_settings(settings)
            broker_name = settings.trading.broker.effective_kind
            every = build_handlers(settings, broker_name)
            now = datetime.now(UTC)
            run_id = f"service-{'+'.join(roles)}-{now.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            # The handler set of the whole system: what a verification of the log re-runs.
            await event_log.publish(run_started(run_id, "service", settings, every,
                                                broker_name, now))
            handlers = handlers_for(roles, every)
            services = Services(SettingsHolder(settings, config_dir), event_log, broker,
                                handlers, market_data=market_data, roles=roles,
                                leases=dict(leases), schedule=schedule,
                                clock=_clock(settings, lambda: services))
            await services.start()
            api = None
            if "api" in roles and api_options is not None:  # an ApiLauncher (adapters.api)
                api = await api_options.beside_live(event_log, lambda: settings, "service",
                                                    broker_name, console)
            console.print(f"[bold]Catalyst[/] serving {', '.join(roles)}; Ctrl-C to stop")
            try:
                await _first(stop.wait(), lost.wait())
            finally:
                if api is not None:
                    await api.stop()
                await services.stop()
                if market_data is not None:
                    with contextlib.suppress(Exception):
                        await market_data.close()
            if lost.is_set():
                raise LeaseLost("lost the lease of " + "; ".join(reasons)
                                + ": stopped deciding; start again to stand by")
        finally:
            for lease in leases.values():
                with contextlib.suppress(Exception):
                    await lease.release()


# CATALYST_CLOCK=data: before any data, the clock stands here (a start's account snapshot
# then sorts before the day it is replayed into).
DATA_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _clock(settings: Settings, services: Callable[[], Services]) -> Callable[[], datetime]:
    """The wall clock; with CATALYST_CLOCK=data, the time of the latest data decided on:
    for a recorded day replayed at speed against a paper venue (tests/chaos), where what
    a process stamps (a delivery result, an account snapshot) must sit with the data it
    follows, not hours after it. Never with live money."""
    if os.environ.get("CATALYST_CLOCK", "wall") != "data":
        return lambda: datetime.now(UTC)
    if settings.trading.broker.mode == "live":
        raise CatalystError("CATALYST_CLOCK=data replays recorded data; it is refused with "
                            "live trading")

    def clock() -> datetime:
        seq = services().sequencer
        return (seq.data_time if seq is not None else None) or DATA_EPOCH

    return clock


async def _until(stop: asyncio.Event, aw: Any) -> None:
    """Await `aw` unless `stop` is set first."""
    await _first(stop.wait(), aw)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t


__all__ = ["EXIT_LEASE_LOST", "SINGLE_ACTIVE", "LeaseLost", "serve_roles"]
