"""`catalyst runs list|prune`: the simulation and backtest runs kept under var/runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from adapters.cli import common as cli


def register(app: typer.Typer) -> None:
    """`catalyst runs list|prune`: every simulation and backtest keeps its own store under
    var/runs, so var/ grows with every demo; these show and bound it."""
    runs_app = typer.Typer(help="Simulation and backtest runs under var/runs: list, prune.",
                           no_args_is_help=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.command("list")
    def runs_list(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Every run with its kind, start time, size on disk and whether it is running;
        the newest last, `latest` marked."""
        from adapters.nats.runs import list_runs

        rows = list_runs()
        if as_json:
            print(json.dumps([r.as_dict() for r in rows], indent=2))
            return
        if not rows:
            cli.console.print("no runs under var/runs (start one with `catalyst run`)")
            return
        from rich.table import Table

        table = Table(title="runs (var/runs)")
        table.add_column("run id", no_wrap=True)  # ids are copied into --run
        for col in ("kind", "started (UTC)", "size", "state"):
            table.add_column(col)
        for r in rows:
            table.add_row(r.run_id + (" (latest)" if r.latest else ""), r.kind,
                          r.started.strftime("%Y-%m-%d %H:%M:%S") if r.started else "-",
                          r.size_text, "running" if r.running else "")
        cli.console.print(table)

    @runs_app.command("prune")
    def runs_prune(
        keep: Annotated[int | None, typer.Option("--keep", min=0, help="Keep this many of "
                                                 "the newest simulation and backtest runs; "
                                                 "delete the older ones.")] = None,
        older_than: Annotated[float | None, typer.Option(
            "--older-than", min=0, help="Delete simulation and backtest runs started more "
            "than this many days ago.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be "
                                              "deleted.")] = False,
    ) -> None:
        """Delete old simulation and backtest runs (their stores under var/runs). A running
        one, imported audits (import-*) and the live store (var/nats) are never touched."""
        from datetime import UTC, datetime, timedelta

        from adapters.nats.runs import list_runs, prune_plan, remove_run

        if keep is None and older_than is None:
            raise cli.fail("say what to keep: --keep N and/or --older-than DAYS")
        if older_than is not None and not 0 <= older_than <= 36500:  # (nan and inf too)
            raise cli.fail(f"--older-than {older_than}: a number of days, 0 to 36500")
        cutoff = (datetime.now(UTC) - timedelta(days=older_than)
                  if older_than is not None else None)
        doomed = prune_plan(keep, cutoff)
        for r in doomed:
            if not dry_run:
                remove_run(r)
            cli.console.print(f"{'would delete' if dry_run else 'deleted'} {r.run_id} "
                              f"({r.size_text})", highlight=False)
        kept = len(list_runs())
        cli.console.print(f"{len(doomed)} run{'s' if len(doomed) != 1 else ''} "
                          f"{'to delete' if dry_run else 'deleted'}; {kept} left",
                          highlight=False)
