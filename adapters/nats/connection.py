"""Where the event log lives: a configured NATS server, or an embedded one on a store dir.

- `nats.servers` / `nats.url` (or CATALYST_NATS_URL, comma-separated for a cluster) set:
  connect there (auth and TLS from config).
- Otherwise an embedded nats-server on a store directory. A running Catalyst writes its
  server's URL to `<store>/server.url`, so `catalyst session start` or `events tail` from
  another shell talks to the same server; with no server running, a command that only reads
  starts its own on the store for as long as it runs.
- Simulations and backtests each get their own store under `var/runs/<run id>/`, with
  `var/runs/latest` pointing at the newest: a simulated account is not the live account.
  On a configured server they get their own streams instead, named after the run id
  (`run_names`), and publish under their own subject prefix, so a run never mixes with live
  trading or another run; `--run ID` derives the same names. `var/runs/<run id>/run.json`
  records where the run's log is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

from adapters.nats.embedded import EmbeddedNats
from adapters.nats.event_log import EventLog, StreamNames, connect_options_from_settings
from config.settings import Settings
from domain.errors import CatalystError

RUNS_DIR = Path("var/runs")
URL_FILE = "server.url"


def _reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout=0.3):
            return True
    except OSError:
        return False


def run_store(run_id: str) -> Path:
    return RUNS_DIR / run_id / "nats"


def run_names(settings: Settings, run_id: str) -> tuple[StreamNames, str]:
    """A run's own streams and publish prefix on a shared server, from its id alone (so
    `replay --run ID` finds them from any machine): CATALYST_SIM_20261202T080000_123456 and
    subjects `run.<id>.catalyst.>` stored as `catalyst.>`."""
    token = re.sub(r"[^A-Za-z0-9_-]", "_", run_id)  # a stream name and a subject token
    suffix = token.upper().replace("-", "_")
    nats_cfg = settings.trading.nats
    return (StreamNames(f"{nats_cfg.record_stream}_{suffix}",
                        f"{nats_cfg.market_data_stream}_{suffix}"), f"run.{token}.")


def run_id_of(run: str) -> str:
    """'latest' -> the newest run's id; any other id as given."""
    if run != "latest":
        return run
    link = RUNS_DIR / "latest"
    return os.readlink(link) if link.is_symlink() else run  # none yet: reads say so


def mark_latest_run(run_id: str) -> None:
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    link = RUNS_DIR / "latest"
    tmp = RUNS_DIR / f".latest-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_id)
    tmp.replace(link)


class StoreError(CatalystError):
    """No log where a command looks for one: an unknown run id, or no store at all."""


def running_url(store: Path) -> str | None:
    """The URL of the embedded server a running Catalyst announced for `store`, if it still
    answers. A stale announcement (the process was killed) counts as nothing running."""
    url_file = store / URL_FILE
    try:
        url = url_file.read_text().strip()
    except OSError:
        return None
    return url if url and _reachable(url) else None


def has_log(store: Path, settings: Settings) -> bool:
    """Whether `store` holds the record stream, judged from the directory alone: a reading
    command must not start a server (which creates files) just to find out."""
    stream = settings.trading.nats.record_stream
    return any(p.is_dir() for p in store.glob(f"jetstream/*/streams/{stream}"))


def known_runs() -> list[str]:
    """Run ids with a store under var/runs, oldest first (ids start with their time)."""
    if not RUNS_DIR.is_dir():
        return []
    return sorted(p.name for p in RUNS_DIR.iterdir()
                  if p.name != "latest" and not p.name.startswith(".")
                  and (p / "nats").is_dir())


def resolve_run(run: str, settings: Settings) -> Path:
    """The store of run `run` ('latest' included). An unknown id is an error naming the
    nearest ones: a typo must never read (or create) an empty store."""
    import difflib

    if run == "latest":
        link = RUNS_DIR / "latest"
        if not link.exists():
            raise StoreError("--run latest: there is no simulation or backtest run yet "
                             "(start one with `catalyst run`)")
        return link.resolve() / "nats"
    runs = known_runs()
    if run in runs and has_log(run_store(run), settings):
        return run_store(run)
    near = difflib.get_close_matches(run, runs, n=3, cutoff=0.5) or runs[-3:]
    hint = f"; nearest: {', '.join(near)}" if near else "; there are no runs yet"
    why = "has no event log" if run in runs else "is not a known run id"
    raise StoreError(f"--run {run!r} {why}{hint} (catalyst runs list)")


def live_in_use(settings: Settings) -> bool:
    """The live store counts when it holds a log or a running system announced itself; an
    empty or absent one never shadows the simulation runs."""
    live = settings.trading.nats.store_dir
    return running_url(live) is not None or has_log(live, settings)


def default_store(settings: Settings, run: str | None = None) -> Path:
    """The store a reading command uses: an explicit run, the live store, or the latest run.
    Raises StoreError when there is nothing to read (reading never creates a store)."""
    if run:
        if settings.trading.nats.server_urls:
            # On a configured server a run is its own streams (the id names them), not a
            # directory here: the reading command says so if the server has none.
            return run_store(run_id_of(run))
        return resolve_run(run, settings)
    live = settings.trading.nats.store_dir
    if settings.trading.nats.server_urls or live_in_use(settings):
        return live
    latest = RUNS_DIR / "latest"
    if latest.exists() and has_log(latest.resolve() / "nats", settings):
        return latest.resolve() / "nats"
    raise StoreError(f"no event log: nothing at {live} and no simulation run under "
                     f"{RUNS_DIR}; run `catalyst run` first, or pass --file EXPORT.jsonl")


def run_label(store: Path, settings: Settings) -> str:
    """The run a store belongs to, for an export's header: a run id, or 'live'."""
    if settings.trading.nats.server_urls:
        return "live"
    runs = RUNS_DIR.resolve()
    resolved = store.resolve()
    return resolved.parent.name if resolved.parent.parent == runs else "live"


def live_system(settings: Settings) -> Path:
    """The store of the running live/paper system, for commands that write to it (resume,
    session start). A finished simulation's log is closed: never written after the fact."""
    live = settings.trading.nats.store_dir
    if settings.trading.nats.server_urls or running_url(live):
        return live
    raise StoreError(f"no running Catalyst system (no server announced in {live / URL_FILE}"
                     " and no nats.url); a finished simulation's log is closed: in a "
                     "simulation, start a new run with `catalyst run`")


@contextlib.asynccontextmanager
async def open_event_log(settings: Settings, store: Path | None = None,
                         create_streams: bool = True,
                         announce: bool = False,
                         sync_always: bool = True,
                         run_id: str | None = None) -> AsyncIterator[EventLog]:
    """Connect to the configured server, a running embedded one, or start one.

    `run_id`: the log of a simulated run or backtest. On an embedded server its store is
    already its own; on a configured server it gets its own streams (run_names)."""
    nats_cfg = settings.trading.nats
    names = StreamNames(nats_cfg.record_stream, nats_cfg.market_data_stream)
    kwargs = dict(names=names, duplicate_window=nats_cfg.duplicate_window_seconds,
                  md_max_age_days=nats_cfg.market_data_max_age_days,
                  create_streams=create_streams, replicas=nats_cfg.replicas,
                  retry_timeout=nats_cfg.retry_timeout_seconds)
    servers = ",".join(nats_cfg.server_urls)
    if servers:
        if run_id:
            kwargs["names"], kwargs["subject_prefix"] = run_names(settings, run_id)
            if create_streams:
                _record_run(run_id, servers, kwargs["names"])  # type: ignore[arg-type]
        log = await EventLog.connect(connect_options_from_settings(nats_cfg, servers),
                                     **kwargs)  # type: ignore[arg-type]
        try:
            yield log
        finally:
            await log.close()
        return
    store = Path(store or nats_cfg.store_dir)
    if not create_streams and not store.is_dir():
        raise StoreError(f"no event log at {store}")  # a read must not create the store
    url_file = store / URL_FILE
    if url_file.exists():
        url = url_file.read_text().strip()
        if _reachable(url):
            log = await EventLog.connect(url, **kwargs)  # type: ignore[arg-type]
            try:
                yield log
            finally:
                await log.close()
            return
    # The embedded server is a single node whatever the config says about a cluster.
    kwargs["replicas"] = 1
    server = EmbeddedNats(store_dir=store, sync_always=sync_always)
    server.start()
    if announce:
        url_file.write_text(server.url + "\n")
    try:
        log = await EventLog.connect(server.url, **kwargs)  # type: ignore[arg-type]
        try:
            yield log
        finally:
            await log.close()
    finally:
        if announce:
            with contextlib.suppress(FileNotFoundError):
                url_file.unlink()
        server.stop()


def _record_run(run_id: str, servers: str, names: StreamNames) -> None:
    """Where a run on a configured server keeps its log, for a person (and `--run latest`,
    through var/runs/latest pointing at this directory). Credentials stay out."""
    directory = RUNS_DIR / run_id
    directory.mkdir(parents=True, exist_ok=True)
    shown = [re.sub(r"//[^@/]*@", "//", u) for u in servers.split(",")]
    (directory / "run.json").write_text(json.dumps(
        {"run_id": run_id, "servers": shown, "record_stream": names.record,
         "market_data_stream": names.market_data}, indent=2) + "\n")
