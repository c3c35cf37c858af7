"""Running the API: beside a simulated or paper run (`catalyst run --serve`), or on its own
against the live store or a configured NATS server (`catalyst serve --role api`).

uvicorn runs inside the runtime's own event loop (no thread, no second loop): the API's
reads follow the log with the same client, and a simulated run's commands go into its
pipeline between two simulated minutes. The runtime owns Ctrl-C; uvicorn's own signal
handling is switched off so it does not re-raise the signal after a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from adapters.api.auth import HOW_TO_SET, Tokens
from adapters.api.commands import LogSink, PipelineSink, Sink
from adapters.api.follow import follow, follow_marks
from adapters.api.readmodel import ReadModel
from adapters.api.routes import ApiContext, create_app
from adapters.nats.event_log import EventLog
from config.settings import Settings
from domain.errors import CatalystError

ROLES = ("api",)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass
class ApiLauncher:
    """How a run puts the API beside itself. The CLI builds one and hands it to the
    runtime, which calls it without importing this package (the runtime sits below the
    API in the layering)."""

    options: ServeOptions

    async def beside_simulation(self, event_log: EventLog, pipeline: Any, holder: Any,
                                console: Any) -> SimulationApi:
        return await SimulationApi.start(self.options, event_log, pipeline, holder, console)

    async def beside_live(self, event_log: EventLog, settings: Callable[[], Settings],
                          mode: str, broker: str, console: Any) -> RunningApi:
        return await start_api(event_log, LogSink(event_log), settings, self.options, mode,
                               broker, console=console)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the runtime handles SIGINT/SIGTERM and stops us


@dataclass
class RunningApi:
    ctx: ApiContext
    server: _Server
    url: str
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def stop(self) -> None:
        self.ctx.closing.set()  # open event streams end, so the shutdown does not wait
        self.server.should_exit = True
        for t in self.tasks[1:]:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.tasks[0], 10.0)
        for t in self.tasks[1:]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _bind(options: ServeOptions) -> socket.socket:
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as e:
        sock.close()
        raise CatalystError(f"cannot serve the API on {options.host}:{options.port}: "
                            f"{e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def start_api(event_log: EventLog, sink: Sink, settings: Callable[[], Settings],
                    options: ServeOptions, kind: str, broker_name: str = "sim",
                    tokens: Tokens | None = None, console: Any = None) -> RunningApi:
    tokens = tokens if tokens is not None else Tokens.from_env()
    sock = _bind(options)  # before anything starts: a taken port is one clear error
    model = ReadModel(broker_name)
    ctx = ApiContext(model, sink, settings, tokens, event_log, kind=kind)
    config = uvicorn.Config(create_app(ctx), log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=3, ws="none",
                            proxy_headers=False)
    server = _Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    api = RunningApi(ctx, server, f"http://{shown}:{port}")
    api.tasks = [asyncio.create_task(server.serve(sockets=[sock]), name="api"),
                 asyncio.create_task(follow(model, event_log), name="api-reader"),
                 asyncio.create_task(follow_marks(model, event_log), name="api-marks")]
    while not server.started:
        if api.tasks[0].done():
            api.tasks[0].result()
            raise CatalystError("the API server stopped while starting")
        await asyncio.sleep(0.02)
    if console is not None:
        console.print(f"[bold]API and dashboard[/]: {api.url}/  (OpenAPI: {api.url}/docs)")
        if not tokens.configured:
            console.print(f"[yellow]read-only:[/] {HOW_TO_SET}", soft_wrap=True)
    return api


async def wait_for_stop() -> None:
    """Until Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


class SimulationApi:
    """The API beside an in-process simulated run (adapters.runtime.app.run_simulated)."""

    def __init__(self, api: RunningApi, sink: PipelineSink) -> None:
        self.api, self.sink = api, sink

    @classmethod
    async def start(cls, options: ServeOptions, event_log: EventLog, pipeline: Any,
                    holder: Any, console: Any) -> SimulationApi:
        sink = PipelineSink(pipeline)
        pipeline.observers.append(sink.observe)
        api = await start_api(event_log, sink, lambda: holder.current, options, "simulation",
                              "sim", console=console)
        return cls(api, sink)

    def attach(self, clock: Any) -> None:
        self.sink.clock = clock
        clock.on_minute = self.sink.on_minute

    async def serve_after_run(self, console: Any, on_day_done: Callable[[], None]) -> None:
        """The day is over: commands now go straight in; keep serving until Ctrl-C."""
        await self.sink.finish()
        on_day_done()
        console.print(f"simulated day done; still serving {self.api.url}/ (Ctrl-C to stop)")
        try:
            await wait_for_stop()
        finally:
            await self.api.stop()


async def serve_role(role: str, settings: Settings, store: Any, options: ServeOptions,
                     console: Any, live: bool = True) -> None:
    """`catalyst serve --role api`: the API on its own, against the live log (`live`), or
    against a finished simulation's store."""
    from adapters.audit.status import nats_mode
    from adapters.nats.connection import open_event_log

    if role not in ROLES:
        raise CatalystError(f"unknown role {role!r}; available: {', '.join(ROLES)}")
    if not settings.trading.nats.url and not (store / "jetstream").exists():
        raise CatalystError(f"no event log at {store}; start `catalyst run` first, or set "
                            "nats.url / CATALYST_NATS_URL")
    if live and not settings.trading.nats.url and not nats_mode(settings, store)["running"]:
        # Starting a server of our own on the live store would leave a `catalyst run`
        # started later to start a second one on the same files.
        raise CatalystError(f"no running Catalyst serves {store}: start `catalyst run` "
                            "first (or set nats.url), or pass --run to serve a simulation")
    tokens = Tokens.from_env()
    async with open_event_log(settings, store, create_streams=False) as event_log:
        api = await start_api(event_log, LogSink(event_log), lambda: settings, options,
                              "standalone", settings.trading.broker.effective_kind,
                              tokens=tokens, console=console)
        try:
            await wait_for_stop()
        finally:
            await api.stop()
