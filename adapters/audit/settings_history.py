"""Which settings and handler set a verification runs under: those the log recorded
(RunStarted, then every ConfigChanged), never silently others."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from adapters.audit.window import ReplayError
from domain.events import (
    ConfigChanged,
    Event,
    RunStarted,
)
from handlers.base import Handler

if TYPE_CHECKING:
    from config.settings import Settings


SETTINGS_EVENTS = frozenset({"RunStarted", "ConfigChanged"})


def settings_from_config(config: dict[str, Any]) -> Settings | None:
    from config.settings import Settings

    try:
        return Settings.model_validate(config)
    except ValidationError:
        return None


def recorded_settings(ev: Event) -> Settings:
    """The settings a RunStarted or ConfigChanged records. One that does not validate is an
    error: verifying under other settings than those in force would report what the run
    did as divergences, or worse, hide one."""
    from config.settings import Settings

    try:
        return Settings.model_validate(ev.config)  # type: ignore[attr-defined]
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ReplayError(
            f"{ev.type} {ev.event_id} at {ev.occurred_at.isoformat()} records a config that "
            f"does not validate ({where}: {first['msg']}); the settings in force are unknown"
        ) from None


def _parse_value(new: str, current: Any) -> Any:
    if new == "None":
        return None
    if isinstance(current, str):  # Decimal, Path, enum and text values are all strings
        return new
    try:
        return ast.literal_eval(new)
    except (ValueError, SyntaxError):
        return new


def apply_changes(settings: Settings, changes: dict[str, list[str]]) -> Settings:
    """The settings after a recorded ConfigChanged (dotted key -> [old, new])."""
    from config.loader import redacted
    from config.settings import Settings

    data = redacted(settings)
    for key, pair in changes.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and len(pair) == 2:
            node[parts[-1]] = _parse_value(pair[1], node.get(parts[-1]))
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ReplayError(f"recorded config changes {sorted(changes)} do not validate "
                          f"against the settings in force: {e.errors()[0]['msg']}") from None


def next_settings(settings: Settings, ev: Event) -> Settings:
    """The settings in force after a recorded RunStarted or ConfigChanged: the whole config
    it records, or (a ConfigChanged written before events carried it) its changes applied."""
    if isinstance(ev, (RunStarted, ConfigChanged)) and ev.config:
        return recorded_settings(ev)
    if isinstance(ev, ConfigChanged):
        return apply_changes(settings, ev.changes)
    return settings


@dataclass
class Plan:
    """What a verification runs: settings, broker name, handler set, and how it knows."""

    settings: Settings
    broker: str
    scanner: bool
    notes: list[str] = field(default_factory=list)

    def handlers(self) -> list[Handler]:
        from adapters.runtime.composition import build_handlers

        return build_handlers(self.settings, self.broker, scanner=self.scanner)


def make_plan(current: Settings, run_started: Event | None, session_started: Event | None,
              has_scan_completed: bool, has_scan_requested: bool) -> Plan:
    notes: list[str] = []
    if isinstance(run_started, RunStarted):
        settings = settings_from_config(run_started.config) if run_started.config else None
        if settings is None:
            settings = current
            notes.append("the config recorded by RunStarted does not load with this version; "
                         "verifying with the current config")
        else:
            notes.append(f"config and handlers recorded by RunStarted ({run_started.run_id})")
        return Plan(settings, run_started.broker, "scanner" in run_started.handlers, notes)
    broker = getattr(session_started, "broker", None) or current.trading.broker.effective_kind
    scanner = has_scan_completed or not has_scan_requested
    notes.append("no RunStarted in the log: verifying with the current config; broker "
                 f"{broker!r} from SessionStarted, scanner {'on' if scanner else 'off'} "
                 "(inferred)")
    return Plan(current, broker, scanner, notes)


async def plan_for_nats(log: Any, current: Settings) -> Plan:
    from adapters.nats.log_source import first_event

    return make_plan(
        current,
        await first_event(log, "catalyst.ops.run_started"),
        await first_event(log, "catalyst.session.started"),
        await first_event(log, "catalyst.scan.completed", last=True) is not None,
        await first_event(log, "catalyst.session.scan_requested", last=True) is not None,
    )


def plan_for_file(source: Any, current: Settings) -> Plan:
    found = source.scan_types(["RunStarted", "SessionStarted", "ScanCompleted",
                               "ScanRequested"])
    return make_plan(current, found.get("RunStarted"), found.get("SessionStarted"),
                     "ScanCompleted" in found, "ScanRequested" in found)
