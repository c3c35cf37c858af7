"""Operations commands (replay, audit, status), registered on the main app.

The work is in adapters.audit (replay, report, status); this module only turns options into
calls, picks the log (a run's store, the live store, a configured server, or
an export file) and maps outcomes to exit codes. `runs list|prune` is adapters/cli/runs.py.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigDir = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Directory with risk_parameters.yaml and "
                 "trading_config.yaml (default: the shipped defaults)."),
]
Run = Annotated[str | None, typer.Option("--run", help="Read a simulation or backtest run's "
                                         "log: its id, or 'latest'.")]
File = Annotated[Path | None, typer.Option("--file", help="Read an export (catalyst audit "
                                           "export) instead of NATS.")]
Day = Annotated[str | None, typer.Option("--date", help="New York session date, YYYY-MM-DD.")]


def _cli() -> Any:
    from adapters.cli import common

    return common


@contextlib.asynccontextmanager
async def _nats_log(settings: Any, run: str | None) -> AsyncIterator[Any]:
    from adapters.nats.connection import (
        StoreError,
        default_store,
        has_log,
        open_event_log,
        run_id_of,
    )

    try:
        store = default_store(settings, run)
    except StoreError as e:
        raise _cli().fail(str(e)) from None
    if not settings.trading.nats.server_urls and not has_log(store, settings):
        where = f"run {run!r}" if run else str(store)
        raise _cli().fail(f"no event log at {where} ({store}); run `catalyst run` first, "
                          "or pass --run ID / --file EXPORT.jsonl")
    async with open_event_log(settings, store, create_streams=False,
                              run_id=run_id_of(run) if run else None) as log:
        yield log


def _window(day: str | None, start: str | None, end: str | None) -> Any:
    from adapters.audit.window import ReplayError, make_window

    try:
        return make_window(day, start, end)
    except ReplayError as e:
        raise _cli().fail(str(e)) from None


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(help="Audit a trading day: report, export, import.",
                            no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @app.command("replay")
    def replay(
        day: Day = None,
        start: Annotated[str | None, typer.Option("--from", help="From this time (ISO; "
                                                  "New York when no offset).")] = None,
        end: Annotated[str | None, typer.Option("--to", help="Up to this time (a bare date: "
                                                "its end).")] = None,
        session: Annotated[str | None, typer.Option("--session", help="One session, by "
                                                    "its id (SessionStarted.session_id).")]
        = None,
        subject: Annotated[str | None, typer.Option("--subject", "-s", help="NATS subject "
                                                    "filter, e.g. 'catalyst.order.>'.")]
        = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
        = False,
        verify: Annotated[bool, typer.Option("--verify", help="Re-run the pure handlers over "
                                             "the recorded inputs and compare every decision; "
                                             "exit 1 on any divergence.")] = False,
        jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Processes "
                                                 "for --verify: 1 all in this one; 2 (the "
                                                 "default on two cores or more) the scanner "
                                                 "and executor in a helper; 3 every market "
                                                 "data handler in helpers. Same result "
                                                 "every way.")] = None,
        run: Run = None,
        file: File = None,
        config_dir: ConfigDir = None,
    ) -> None:
        """Read the event log in order (both streams merged) and print one line per event;
        --verify proves the log explains every decision."""
        cli = _cli()
        if file is not None:
            if run is not None:
                raise cli.fail("--run and --file: read one log, not both")
            cli.input_file(file, "--file")
        settings = cli.settings_or_exit(config_dir)
        window = _window(day, start, end)
        if verify and subject:
            raise cli.fail("--verify needs every input: it cannot take --subject")
        from adapters.audit import replay as rp
        from adapters.audit.divergence import print_result
        from adapters.audit.settings_history import plan_for_file, plan_for_nats
        from adapters.audit.verify import verify as verify_log
        from adapters.audit.verify_helper import HelperError
        from adapters.audit.window import ReplayError, Window
        from adapters.nats.log_file import FileSource
        from adapters.nats.log_source import LogReadError, NatsSource

        async def resolve_session(make_source: Any) -> Any:
            if not session:
                return window
            d = await rp.find_session_date(await make_source(), session)
            return Window.for_date(d)

        async def check_window(w: Any, found: int, make_source: Any) -> None:
            # Nothing read for a window: a date the log does not hold is an error that
            # names the dates it does (a subject that matched nothing is not).
            if found == 0 and (w.start is not None or w.end is not None):
                why = rp.window_misses(w, await rp.log_dates(await make_source()))
                if why:
                    raise cli.fail(why)

        async def go(source: Any, plan: Any, w: Any, make_source: Any) -> int:
            if verify:
                with rp.Progress(source.total, "verify") as bar:
                    result = await verify_log(source, plan, w, on_batch=bar.advance,
                                             jobs=jobs)
                if isinstance(source, FileSource):
                    rp.add_integrity(result, source.integrity())
                    if "digest" not in source.header:
                        result.notes.append("the export has no line count and digest (an "
                                            "older export): its completeness is unchecked")
                if not result.divergences:
                    await check_window(w, result.events, make_source)
                if as_json:
                    print(json.dumps({"events": result.events, "context": result.context,
                                      "decisions_checked": result.derived,
                                      "divergences": result.divergences,
                                      "notes": result.notes,
                                      "reported": [d.as_dict() for d in result.reported]},
                                     indent=2))
                else:
                    print_result(result)
                return 1 if result.divergences else 0
            n = await rp.print_entries(source, w, subject, as_json)
            await check_window(w, n, make_source)
            return 0

        async def main() -> int:
            try:
                if file is not None:
                    src = FileSource(file)
                    src.require_export()

                    async def file_source() -> Any:
                        return FileSource(file)

                    w = await resolve_session(file_source)
                    if w.start is None and w.end is None and src.header.get("window"):
                        w = Window.from_dict(src.header["window"])
                    plan = plan_for_file(src, settings) if verify else None
                    return await go(src, plan, w, file_source)
                async with _nats_log(settings, run) as log:

                    async def session_source() -> Any:
                        return await NatsSource(log, subject="catalyst.session.started",
                                                streams=("record",)).open()

                    w = await resolve_session(session_source)
                    plan = await plan_for_nats(log, settings) if verify else None
                    source = await NatsSource(log, subject=subject).open()

                    async def record_source() -> Any:
                        return await NatsSource(log, streams=("record",)).open()

                    return await go(source, plan, w, record_source)
            except (LogReadError, ReplayError, HelperError) as e:
                raise cli.fail(str(e)) from None

        code = cli.run_async(main())
        if code:
            raise typer.Exit(code)

    @audit_app.command("report")
    def audit_report(
        day: Day = None,
        fmt: Annotated[str, typer.Option("--format", "-f", help="html, json or csv.")]
        = "html",
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (default: "
                                                 "stdout).")] = None,
        run: Run = None,
        file: File = None,
        config_dir: ConfigDir = None,
    ) -> None:
        """One trading day: timeline, signals and scores, risk decisions, orders and fills,
        P&L curve, alerts, config in force and changes, emergency stops."""
        cli = _cli()
        if fmt not in ("html", "json", "csv"):
            raise cli.fail(f"--format {fmt!r}: use html, json or csv")
        if out is not None:
            cli.output_file(out, "--out")
        if file is not None:
            if run is not None:
                raise cli.fail("--run and --file: read one log, not both")
            cli.input_file(file, "--file")
        settings = cli.settings_or_exit(config_dir)
        window = _window(day, None, None)
        from adapters.audit.report import build_report
        from adapters.audit.report_render import render
        from adapters.audit.window import Window
        from adapters.nats.log_file import FileSource
        from adapters.nats.log_source import LogReadError, NatsSource

        async def missing_day(report: dict[str, Any], w: Any, source: Any) -> None:
            from adapters.audit.replay import log_dates, window_misses

            if report["summary"]["events"] == 0:
                why = window_misses(w, await log_dates(source))
                if why:
                    raise cli.fail(why)

        async def main() -> dict[str, Any]:
            try:
                if file is not None:
                    src = FileSource(file)
                    src.require_export()
                    w = window
                    if w.start is None and src.header.get("window"):
                        w = Window.from_dict(src.header["window"])
                    report = await build_report(src, w)
                    await missing_day(report, w, FileSource(file))
                    return report
                if window.start is None:
                    raise cli.fail("--date is required (the New York session date)")
                async with _nats_log(settings, run) as log:
                    report = await build_report(await NatsSource(log).open(), window)
                    await missing_day(report, window,
                                      await NatsSource(log, streams=("record",)).open())
                    return report
            except LogReadError as e:
                raise cli.fail(str(e)) from None

        report = cli.run_async(main())
        text = render(report, fmt)
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text, encoding="utf-8")
            s = report["summary"]
            cli.err.print(f"wrote {out} ({fmt}): {s['events']} events, {s['signals']} signals, "
                          f"{s['orders']} orders, {s['fills']} fills, "
                          f"{s['emergency_stops']} emergency stops")

    @audit_app.command("export")
    def audit_export(
        out: Annotated[Path, typer.Option("--out", "-o", help="The JSONL file to write.")],
        day: Day = None,
        context: Annotated[bool, typer.Option("--context/--no-context", help="Include the "
                                              "log before the day (needed to verify the "
                                              "day on its own).")] = True,
        run: Run = None,
        config_dir: ConfigDir = None,
    ) -> None:
        """Write a day's log (both streams, in order) as a portable JSONL file that
        `catalyst replay --file` and `replay --verify --file` read without NATS."""
        cli = _cli()
        cli.output_file(out, "--out")
        settings = cli.settings_or_exit(config_dir)
        window = _window(day, None, None)
        if window.start is None:
            raise cli.fail("--date is required (the New York session date)")
        from adapters.audit.replay import export
        from adapters.nats.connection import default_store, run_label
        from adapters.nats.log_source import LogReadError, NatsSource

        async def main() -> dict[str, int]:
            try:
                async with _nats_log(settings, run) as log:
                    label = run_label(default_store(settings, run), settings)
                    return await export(await NatsSource(log).open(), out, window, context,
                                        {"run": label})
            except LogReadError as e:
                raise cli.fail(str(e)) from None

        counts = cli.run_async(main())
        cli.err.print(f"wrote {out}: {counts['events']} events of {window.label}"
                      + (f" + {counts['context']} earlier events (context)"
                         if counts["context"] else ""))

    @audit_app.command("import")
    def audit_import(
        file: Annotated[Path, typer.Argument(help="An export written by `audit export`.")],
        run: Annotated[str | None, typer.Option("--run", help="Store it as this run "
                                                "(var/runs/NAME/nats; default: "
                                                "import-FILESTEM).")] = None,
        config_dir: ConfigDir = None,
    ) -> None:
        """Publish an export into a fresh log (same ids, same order), e.g. on another
        machine: `catalyst replay --run NAME` and `audit report --run NAME` then read it."""
        cli = _cli()
        cli.input_file(file, "FILE")
        if run is not None and (not run or run == "latest" or run.startswith(".")
                                or any(c in run for c in "/\\")):
            raise cli.fail(f"--run {run!r}: a run name is one path segment, not 'latest'")
        settings = cli.settings_or_exit(config_dir)
        from adapters.nats.connection import open_event_log, run_store
        from adapters.nats.log_file import FileSource, import_entries
        from adapters.nats.log_source import LogReadError

        name = run or f"import-{file.stem}"
        store = run_store(name)

        async def main() -> int:
            try:
                src = FileSource(file)
                src.require_export()
                if problems := src.integrity():  # never publish a tampered log as a run
                    raise cli.fail("; ".join(problems))
                async with open_event_log(settings, store, run_id=name) as log:
                    if await log.last_seq() or await log.last_seq(log.names.market_data):
                        raise cli.fail(f"{store} already holds a log; import into a new run")
                    return await import_entries(log, src)
            except LogReadError as e:
                raise cli.fail(str(e)) from None

        n = cli.run_async(main())
        where = (",".join(settings.trading.nats.server_urls) or str(store))
        cli.err.print(f"imported {n} events into {where}; read it with --run {name}")

    @app.command("status")
    def status(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
        = False,
        run: Run = None,
        config_dir: ConfigDir = None,
    ) -> None:
        """Session and trading state (active / halted since when, why), positions, today's
        P&L, consumer lag, NATS and broker. Exit 1 when NATS is not reachable."""
        cli = _cli()
        settings = cli.settings_or_exit(config_dir)
        from adapters.audit.status import gather, print_status
        from adapters.nats.connection import StoreError, default_store, run_id_of

        try:
            store = default_store(settings, run)
        except StoreError as e:
            raise cli.fail(str(e)) from None
        st = cli.run_async(gather(settings, store, run_id=run_id_of(run) if run else None))
        if as_json:
            print(json.dumps(st, indent=2, default=str))
        else:
            print_status(st, cli.console)
        if not st["nats"].get("connected"):
            raise typer.Exit(1)
