"""`catalyst alerts test|pending|deliver`: the alert channels from the command line.

Delivery itself is adapters.alerts (delivery, pending); here options become calls and
outcomes become lines and exit codes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from adapters.cli.common import ConfigDir, console, fail, run_async, settings_or_exit
from config.settings import Settings

alerts_app = typer.Typer(help="Alert channels.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")


@alerts_app.command("test")
def alerts_test(
    severity: Annotated[str, typer.Option("--severity", help="INFO, WARNING or CRITICAL.")]
    = "INFO",
    config_dir: ConfigDir = None,
) -> None:
    """Send a test alert through every configured channel; report success or the error."""
    settings = settings_or_exit(config_dir)
    from adapters.alerts.delivery import AlertDeliveryError, send_test_alert

    if severity.upper() not in ("INFO", "WARNING", "CRITICAL"):
        raise fail(f"--severity {severity!r}: use INFO, WARNING or CRITICAL")
    try:
        report = run_async(send_test_alert(settings, severity.upper()))
    except AlertDeliveryError as e:
        raise fail(str(e)) from None
    console.print(report)


Run = Annotated[str | None, typer.Option("--run", help="A simulation run's log: its id, or "
                                         "'latest' (default: the live log, else the latest "
                                         "run).")]


def _alert_log(settings: Settings, run: str | None) -> Any:
    """The log to read or complete; never creates a store that is not there."""
    from adapters.nats.connection import default_store, open_event_log

    store = default_store(settings, run)
    if not settings.trading.nats.server_urls and not (store / "jetstream").exists():
        raise fail(f"no event log at {store}; run `catalyst run` first, or pass --run ID")
    return open_event_log(settings, store, create_streams=False)


@alerts_app.command("pending")
def alerts_pending(run: Run = None, config_dir: ConfigDir = None,
                   as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                   ) -> None:
    """List alerts that a channel has not delivered yet (per channel, from the whole log)."""
    settings = settings_or_exit(config_dir)
    from adapters.alerts.pending import pending_in_log
    from adapters.alerts.render import new_york

    async def main() -> Any:
        async with _alert_log(settings, run) as log:
            return await pending_in_log(settings, log)

    items = run_async(main())
    if as_json:
        print(json.dumps([{"alert_id": p.alert.alert_id, "kind": p.alert.kind,
                           "severity": str(p.alert.severity), "title": p.alert.title,
                           "occurred_at": p.alert.occurred_at.isoformat(),
                           "channels": list(p.channels), "attempts": p.attempts,
                           "last_error": p.last_error} for p in items], indent=2))
        return
    if not items:
        console.print("[green]no alerts pending delivery[/]")
        return
    for p in items:
        colour = {"CRITICAL": "red", "WARNING": "yellow"}.get(str(p.alert.severity), "")
        sev = f"[{colour}]{p.alert.severity}[/]" if colour else str(p.alert.severity)
        console.print(f"{new_york(p.alert.occurred_at, '%Y-%m-%d %H:%M ET')}  {sev}  "
                      f"{escape(p.alert.title)}  -> {', '.join(p.channels)}"
                      + (f"  ({p.attempts} attempts; last: {escape(p.last_error)})"
                         if p.attempts else ""), highlight=False)
    console.print(f"[bold red]{len(items)} alerts pending delivery[/]; send them with: "
                  f"catalyst alerts deliver{f' --run {run}' if run else ''}")


@alerts_app.command("deliver")
def alerts_deliver(run: Run = None, config_dir: ConfigDir = None) -> None:
    """Deliver every pending alert once, on the channels that owe it (same Message-ID), and
    record the outcome in the log. Exit 1 when some channel still fails."""
    settings = settings_or_exit(config_dir)
    from adapters.alerts.pending import deliver_pending

    async def main() -> Any:
        async with _alert_log(settings, run) as log:
            return await deliver_pending(settings, log)

    report = run_async(main())
    for ev in report.delivered:
        console.print(f"{ev.channel}: sent {escape(ev.subject_line)} to "
                      f"{', '.join(ev.recipients)}", highlight=False)
    for ev in report.failed:
        console.print(f"[red]{ev.channel}: FAILED[/] {escape(ev.kind)}: {escape(ev.reason)}",
                      highlight=False)
    for alert_id, channel in report.unconfigured:
        console.print(f"[yellow]{channel}: not configured now[/]; alert {alert_id} stays "
                      "pending")
    if not (report.delivered or report.failed or report.unconfigured):
        console.print("[green]nothing pending: every alert has been delivered[/]")
    elif report.ok:
        console.print(f"[green]{len(report.delivered)} deliveries recorded[/]")
    else:
        raise fail(f"{len(report.failed) + len(report.unconfigured)} deliveries failed; "
                   "they stay pending (catalyst alerts pending)")
