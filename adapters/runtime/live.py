"""`catalyst run` with Alpaca keys: paper (or guarded live) trading in real time, every role
in one process (`Services` over one sequencer), until Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel

from adapters.broker.port import BrokerPort
from adapters.broker.sim import SimulatedBroker
from adapters.nats.event_log import EventLog
from adapters.runtime.composition import build_handlers
from adapters.runtime.config_watcher import SettingsHolder
from adapters.runtime.realtime import Services
from config.settings import Settings

log = logging.getLogger("catalyst.services")


async def _all_leases(event_log: EventLog, settings: Settings, console: Console,
                      stop: asyncio.Event) -> dict[str, Any]:
    """On a shared server, `catalyst run` is every role: it holds every role's lease, so a
    second run (or a service with one of its roles) against the same log waits as a
    standby instead of deciding beside it."""
    import os
    import socket

    from adapters.nats.lease import RoleLease
    from adapters.runtime.roles import SINGLE_ACTIVE, leased

    instance = f"{socket.gethostname()}-{os.getpid()}"
    held: dict[str, Any] = {}
    for role in leased(tuple(SINGLE_ACTIVE)):
        lease = RoleLease(event_log, role, instance,
                          ttl=settings.trading.nats.lease_ttl_seconds)
        holder = await lease.holder()
        if holder is not None:
            console.print(f"role {role}: standby (held by {holder.instance})")
        acquire = asyncio.ensure_future(lease.acquire())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([acquire, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            break
        stopped.cancel()
        acquire.result()
        held[role] = lease
    return held


def build_broker(settings: Settings) -> BrokerPort:
    b = settings.trading.broker
    if b.effective_kind == "alpaca":
        from adapters.broker.alpaca import AlpacaBroker

        return AlpacaBroker(b)
    return SimulatedBroker.from_settings(b.sim)


async def run_services(settings: Settings, config_dir: Path | None, console: Console,
                       stop: asyncio.Event | None = None,
                       metrics_port: int | None = None, serve: Any = None) -> None:
    """`catalyst run` with Alpaca keys: paper (or guarded live) trading in real time."""
    from adapters.nats.connection import open_event_log

    broker = build_broker(settings)
    check_keys = getattr(broker, "check_keys", None)
    if check_keys is not None:
        # Before anything starts: wrong keys are a refusal to run, not a runtime that
        # waits, logs and trades on with every order rejected.
        try:
            await check_keys()
        except Exception:
            with contextlib.suppress(Exception):
                await broker.close()
            raise
    mode = settings.trading.broker.mode
    if mode == "live":
        console.print(Panel.fit(
            "[bold white on red] LIVE TRADING [/] orders go to Alpaca LIVE with REAL MONEY.\n"
            f"Limits: daily loss ${settings.limits.max_daily_loss_usd}, "
            f"{settings.limits.max_positions} positions, "
            f"${settings.limits.max_position_size_usd} per position.",
            border_style="red"))
    else:
        console.print(f"[bold]Catalyst[/] {broker.name} trading; Ctrl-C to stop")
    market_data = None
    if settings.trading.market_data.source != "bundled" and settings.trading.broker.has_keys:
        from adapters.market_data.alpaca import AlpacaMarketData

        market_data = AlpacaMarketData.from_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with open_event_log(settings, announce=True) as event_log:
        holder = SettingsHolder(settings, config_dir)
        handlers = build_handlers(settings, broker.name)
        run_id = f"{mode}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        from adapters.runtime.run_record import run_started

        await event_log.publish(run_started(run_id, mode, settings, handlers, broker.name,
                                            datetime.now(UTC)))
        leases = await _all_leases(event_log, settings, console, stop) \
            if settings.trading.nats.server_urls else {}
        if stop.is_set():  # stopped while standing by
            for lease in leases.values():
                with contextlib.suppress(Exception):
                    await lease.release()
            return
        lag_task = None
        if metrics_port:
            from adapters.runtime.metrics import Metrics, start_metrics_server

            metrics = Metrics()
            for h in handlers:  # count and time every handler call, as in-process runs do
                h.handle = metrics._timed(h.name, h.handle)  # type: ignore[method-assign]
            start_metrics_server(metrics_port, metrics)
            lag_task = asyncio.create_task(metrics.poll_consumer_lag(event_log))
        services = Services(holder, event_log, broker, handlers, market_data=market_data,
                            leases=leases)
        await services.start()
        api = None
        if serve is not None:  # the HTTP API and dashboard (an ApiLauncher), same log
            api = await serve.beside_live(event_log, lambda: holder.current, mode,
                                          broker.name, console)
        for lease in leases.values():
            lease.on_lost(lambda why: (log.error("lost a role lease: %s; stopping", why),
                                       stop.set()))
        try:
            await stop.wait()
        finally:
            if api is not None:
                await api.stop()
            if lag_task is not None:
                lag_task.cancel()
            await services.stop()
            for lease in leases.values():
                with contextlib.suppress(Exception):
                    await lease.release()
            if market_data is not None:
                with contextlib.suppress(Exception):
                    await market_data.close()
        # Stopped with alerts undelivered: say so, and fail on a CRITICAL nobody received.
        from adapters.alerts.pending import check_pending, pending_in_log

        check_pending(await pending_in_log(holder.current, event_log), console, None)

