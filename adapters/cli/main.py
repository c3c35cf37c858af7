"""`catalyst`: the command line. Every command has --help; errors are one clear line, exit 1.

Command groups with their own module register in `register_extensions` (alerts.py, ops.py,
runs.py); the rest, the error net and the app are here. Past ~400 lines (just): the session
and run commands share the app's option types and error net, and are short each.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import typer
from rich.markup import escape

from adapters.cli.common import (
    ConfigDir,
    LogFormat,
    check_log_format,
    check_port,
    console,
    err,
    fail,
    input_file,
    output_file,
    run_async,
    settings_or_exit,
)
from config.loader import ConfigError, load_settings, redacted
from config.settings import Settings
from domain.errors import CatalystError


def _flags_take_no_value() -> None:
    """typer 0.29's rich help prints a type after every option, `<bool>` after flags too,
    which reads as if `--json` took a value. A flag shows no type (one place, here)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_catalyst", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._catalyst = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()

app = typer.Typer(
    name="catalyst",
    help="Catalyst: an event-sourced autonomous trading system for US equities on NATS "
    "JetStream. With no keys configured it runs on an embedded NATS, a simulated broker and "
    "a bundled (synthetic) dataset.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings reflow into paragraphs in --help
)
events_app = typer.Typer(help="The event model: JSON Schemas, live tail.", no_args_is_help=True)
config_app = typer.Typer(help="Validate and print the configuration.", no_args_is_help=True)
session_app = typer.Typer(help="Control a running session.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(config_app, name="config")
app.add_typer(session_app, name="session")


# --- config --------------------------------------------------------------------------------


@config_app.command("check")
def config_check(
    config_dir: ConfigDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate the config files and environment; print the effective config, secrets
    redacted. Exit 1 with file, line and field on any error."""
    try:
        loaded = load_settings(config_dir)
        from adapters.alerts.channels import channels_from_settings

        channels_from_settings(loaded.settings)  # channel names and plug-ins, as start-up does
    except ConfigError as e:
        raise fail(str(e)) from None
    data = redacted(loaded.settings)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    import yaml

    console.print(f"[green]config OK[/] ({', '.join(loaded.sources)})")
    print(yaml.safe_dump(data, sort_keys=False))


# --- events --------------------------------------------------------------------------------


@events_app.command("schema")
def events_schema(
    event_type: Annotated[str | None, typer.Argument(help="One event type (default: all).")]
    = None,
) -> None:
    """Print the JSON Schema of every event (or one), with its NATS subject."""
    from domain.events import REGISTRY, json_schemas

    schemas = json_schemas()
    if event_type:
        if event_type not in schemas:
            raise fail(f"unknown event type {event_type!r}; known: {', '.join(sorted(schemas))}")
        schemas = {event_type: schemas[event_type]}
    for name, schema in schemas.items():
        schema["x-subject"] = REGISTRY[name].subject_template
    print(json.dumps(schemas, indent=2, default=str))


@events_app.command("tail")
def events_tail(
    subject: Annotated[str, typer.Option("--subject", "-s", help="NATS subject filter.")]
    = "catalyst.>",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config_dir: ConfigDir = None,
    run: Annotated[str | None, typer.Option(help="Read a simulation run's log (id or "
                                            "'latest').")] = None,
) -> None:
    """Follow events live as they are published (Ctrl-C to stop)."""
    settings = settings_or_exit(config_dir)
    from adapters.audit.render import event_line
    from adapters.nats.connection import (
        StoreError,
        default_store,
        has_log,
        open_event_log,
        running_url,
    )
    from adapters.nats.event_log import decode_msg

    try:
        store = default_store(settings, run)
    except StoreError as e:
        raise fail(str(e)) from None
    if not settings.trading.nats.server_urls and running_url(store) is None:
        # Nothing will ever be published there: following it would wait for ever.
        what = "its log is finished" if has_log(store, settings) else "it holds no log"
        raise fail(f"nothing is running on {store} ({what}); read a finished log with "
                   f"`catalyst replay{' --run ' + run if run else ''}`")

    async def main() -> None:
        async with open_event_log(settings, store, create_streams=False) as log:
            sub = await log.nc.subscribe(subject)
            async for msg in sub.messages:
                try:
                    ev = decode_msg(msg.data, msg.headers)
                except CatalystError as e:
                    err.print(f"[yellow]{msg.subject}: undecodable: {e}[/]")
                    continue
                if as_json:
                    print(ev.model_dump_json(), flush=True)
                else:
                    console.print(event_line(ev), highlight=False)

    run_async(main())


# --- session -------------------------------------------------------------------------------


def _publish(settings: Settings, event: Any) -> None:
    """Hand `event` to the running system's sequencer (recorded once this returns)."""
    from adapters.nats.connection import live_system, open_event_log
    from adapters.nats.inbox import submit_command

    async def main() -> None:
        # Only a running system is addressed: a finished run's log is closed, and no store is
        # created for a system that is not there.
        async with open_event_log(settings, live_system(settings)) as log:
            await submit_command(log, event)

    run_async(main())


@session_app.command("start")
def session_start(config_dir: ConfigDir = None) -> None:
    """Publish SessionStartRequested to the running system (its session handler decides)."""
    from domain.events import SessionStartRequested

    settings = settings_or_exit(config_dir)
    ev = SessionStartRequested(event_id=uuid4(), type="SessionStartRequested",
                               occurred_at=datetime.now(UTC), correlation_id="manual",
                               requested_by=f"cli:{getpass.getuser()}")
    _publish(settings, ev)
    console.print(f"SessionStartRequested {ev.event_id} recorded by the running system")


@app.command("resume")
def resume(
    reason: Annotated[str, typer.Option("--reason", help="Why trading may resume (recorded).")],
    by: Annotated[str | None, typer.Option("--by", help="Who resumes (default: $USER).")]
    = None,
    config_dir: ConfigDir = None,
) -> None:
    """Lift an emergency-stop halt: publishes TradingResumed with who and why."""
    from domain.events import TradingResumed

    if not reason.strip():
        raise fail("--reason must say why trading may resume")
    settings = settings_or_exit(config_dir)
    ev = TradingResumed(event_id=uuid4(), type="TradingResumed", occurred_at=datetime.now(UTC),
                        correlation_id="manual", resumed_by=by or getpass.getuser(),
                        reason=reason)
    _publish(settings, ev)
    console.print(f"[green]trading resumed[/] by {ev.resumed_by}: {reason} (recorded)")


# --- run and backtest ----------------------------------------------------------------------


@app.command("run")
def run(
    config_dir: ConfigDir = None,
    speed: Annotated[float | None, typer.Option(help="Replay speed, N x real time (default: "
                                                "as fast as the handlers keep up).")] = None,
    day: Annotated[str | None, typer.Option(
        "--date", help="Session date of the bundled data to run (YYYY-MM-DD; default: the "
        "dataset's demo day, the selloff).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Allow LIVE trading with real money "
                                       "(also needs broker.mode: live).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics "
        "(off by default).")] = None,
    log_format: LogFormat = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the HTTP API and live "
                                        "dashboard during the run (a simulated day: until "
                                        "Ctrl-C after it ends).")] = False,
    host: Annotated[str, typer.Option("--host", help="Address the API binds to.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the API.")] = 8080,
) -> None:
    """Run the main job. With no Alpaca keys: one full simulated session on the bundled
    data (embedded NATS, simulated broker, mail to var/mail), then a summary. With keys:
    paper (or, guarded, live) trading in real time."""
    if speed is not None and not speed > 0:  # (also refuses nan)
        raise fail(f"--speed {speed:g}: must be more than 0 (N x real time)")
    check_log_format(log_format)
    if metrics_port is not None:
        check_port(metrics_port)
    settings = settings_or_exit(config_dir, log_format, one_shot=False)
    from adapters.runtime import app as runtime

    broker = settings.trading.broker
    if (live or broker.mode == "live") and not broker.has_keys:
        # Either live switch alone is refused; without keys it must not fall back to a
        # simulation that exits 0 as if the operator had asked for one.
        switch = "--live" if live else "broker.mode: live (TRADING_MODE=live)"
        raise fail(f"{switch} needs ALPACA_API_KEY and ALPACA_SECRET_KEY, and live trading "
                   "needs both --live and broker.mode: live; refusing to run a simulation "
                   "instead")
    options = _api_launcher(host, port) if serve else None
    if settings.trading.broker.effective_kind == "sim":
        summary = run_async(runtime.run_simulated(settings, config_dir, day=day, speed=speed,
                                                  console=console, metrics_port=metrics_port,
                                                  serve=options))
        if options is None or summary.interrupted:  # served: printed when the day ended
            runtime.print_summary(summary, console)
        if summary.interrupted:  # 128 + the signal, as a shell reports it
            raise typer.Exit(130 if summary.interrupted == "SIGINT" else 143)
        if summary.undelivered_critical:  # a CRITICAL nobody received is not a success
            raise fail(f"{summary.undelivered_critical} CRITICAL alert(s) not delivered; "
                       f"catalyst alerts deliver --run {summary.run_id}")
        return
    if settings.trading.broker.mode == "live" and not live:
        raise fail("broker.mode is live but --live was not given; refusing to trade real "
                   "money. Use paper mode, or pass --live if you mean it.")
    if live and settings.trading.broker.mode != "live":
        raise fail("--live given but broker.mode is paper; set broker.mode: live (or "
                   "TRADING_MODE=live) as well")
    run_async(runtime.run_live(settings, config_dir, console=console,
                               metrics_port=metrics_port, serve=options))


def _serve_options(host: str, port: int) -> Any:
    from adapters.api.auth import Tokens
    from adapters.api.server import ServeOptions

    Tokens.from_env()  # a bad token setting is an error before anything starts
    if not 0 <= port <= 65535:
        raise fail(f"--port {port}: use 1-65535")
    return ServeOptions(host, port)


def _api_launcher(host: str, port: int) -> Any:
    """What a run calls to serve the API beside itself (the runtime imports no API)."""
    from adapters.api.server import ApiLauncher

    return ApiLauncher(_serve_options(host, port))


@app.command("serve")
def serve_cmd(
    role: Annotated[str, typer.Option("--role", help="What this process runs, comma-separated: "
                                      "ingest (market data and news), session (scheduler, "
                                      "session handler), strategy (scanner, strategy), risk "
                                      "(risk guard, positions, daily P&L), execution "
                                      "(executor, broker, order updates, reconciliation, "
                                      "emergency stop), alerts (alerter, delivery), api "
                                      "(HTTP API and dashboard).")],
    host: Annotated[str, typer.Option("--host", help="Address the API binds to.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the API.")] = 8080,
    run: Annotated[str | None, typer.Option("--run", help="api only: serve a simulation "
                                            "run's log (id or 'latest') instead of the live "
                                            "one.")]
    = None,
    scheduler: Annotated[bool, typer.Option(
        "--scheduler/--no-scheduler", help="session role: publish the market-hours schedule "
        "(the open, a tick a minute); off, sessions start only on request (`session start`, "
        "the API, a feed of your own).")] = True,
    config_dir: ConfigDir = None,
    log_format: LogFormat = None,
) -> None:
    """Run roles of the system as a service against a shared NATS server or cluster.

    A stateful role (session, strategy, risk, execution, alerts) has one active instance: a
    second process with it waits as a standby and takes over when the first one's lease
    lapses. `catalyst run` is every role in one process. Exit 75 when a lease is lost."""
    from adapters.runtime.roles import UnknownRole, parse_roles

    try:
        roles = parse_roles(role)
    except UnknownRole as e:
        raise fail(str(e)) from None
    settings = settings_or_exit(config_dir, log_format)
    options = _serve_options(host, port)
    if roles == ("api",):
        from adapters.api.server import serve_role
        from adapters.nats.connection import default_store

        store = default_store(settings, run) if run else settings.trading.nats.store_dir
        run_async(serve_role("api", settings, store, options, console, live=run is None))
        return
    if run:
        raise fail("--run serves a simulation's log to the api role only")
    from adapters.runtime.serve import EXIT_LEASE_LOST, LeaseLost, serve_roles

    try:
        run_async(serve_roles(roles, settings, console, config_dir,
                              _api_launcher(host, port) if "api" in roles else None,
                              schedule=scheduler))
    except LeaseLost as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(EXIT_LEASE_LOST) from None


@app.command("backtest")
def backtest(
    bars: Annotated[Path, typer.Option("--bars", help="CSV: timestamp,symbol,open,high,low,"
                                       "close,volume (1-minute bars, regular hours).")],
    report: Annotated[Path, typer.Option("--report", help="Where to write REPORT.json.")],
    signals: Annotated[Path | None, typer.Option("--signals", help="CSV: timestamp,symbol,"
                                                 "side,stop_loss,take_profit; turns the "
                                                 "scanner off.")] = None,
    config_dir: ConfigDir = None,
    log_format: LogFormat = None,
) -> None:
    """Run the live handlers over recorded bars with the simulated broker; write a report."""
    input_file(bars, "--bars")
    if signals is not None:
        input_file(signals, "--signals")
    output_file(report, "--report")
    check_log_format(log_format)
    settings = settings_or_exit(config_dir, log_format)
    from adapters.runtime import backtest as bt

    result = run_async(bt.run_backtest(settings, bars, signals, report, console=console))
    bt.print_result(result, console)


data_app = typer.Typer(help="Market data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated, e.g. AAPL,MSFT.")],
    start: Annotated[str, typer.Option("--start", help="First date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--end", help="Last date, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")]
    = Path("var/data"),
    config_dir: ConfigDir = None,
) -> None:
    """Download real 1-minute and daily bars and news from Alpaca (needs keys) into the
    bundled dataset format; use it with market_data.dataset_dir."""
    from datetime import date

    settings = settings_or_exit(config_dir)
    if not settings.trading.broker.has_keys:
        raise fail("data fetch needs ALPACA_API_KEY and ALPACA_SECRET_KEY")
    try:
        d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as e:
        raise fail(f"--start/--end: {e}") from None
    from adapters.market_data.alpaca import fetch_to_dataset

    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    result = run_async(fetch_to_dataset(settings, syms, d0, d1, out))
    console.print(f"wrote {out}: {result}")


def main() -> None:
    try:
        from typer._click import exceptions as click_errors  # typer >= 0.2x vendors click
    except ImportError:  # older typer: click itself
        from click import exceptions as click_errors  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False, prog_name="catalyst")
    except click_errors.NoArgsIsHelpError as e:  # a group with no command: its help
        e.show()
        sys.exit(e.exit_code)
    except click_errors.UsageError as e:
        # One line, like every other error (typer would draw a multi-line panel).
        where = e.ctx.command_path if e.ctx else "catalyst"
        err.print(f"[bold red]error:[/] {escape(e.format_message())} (see {where} --help)",
                  highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except click_errors.ClickException as e:
        err.print(f"[bold red]error:[/] {escape(e.format_message())}", highlight=False,
                  soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("[bold red]error:[/] aborted", highlight=False)
        sys.exit(1)
    except CatalystError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (OSError, UnicodeError, ValueError) as e:
        # The last net under every command: what a user can cause (a file, a port, a
        # value) ends in one line. CATALYST_DEBUG=1 shows the traceback for a bug report.
        if os.environ.get("CATALYST_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {escape(_describe(e))}", highlight=False,
                  soft_wrap=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}".splitlines()[0]


def register_extensions() -> None:
    """Commands that live in their own modules register here (kept import-light)."""
    from adapters.cli import alerts as cli_alerts
    from adapters.cli import ops as cli_ops
    from adapters.cli import runs as cli_runs

    cli_alerts.register(app)
    cli_ops.register(app)
    cli_runs.register(app)


register_extensions()
