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

from adapters.embedded_nats import EmbeddedNats
from adapters.event_log import EventLog, StreamNames, connect_options_from_settings
from config.settings import Settings

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


def resolve_run(run: str) -> str:
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


def default_store(settings: Settings, run: str | None = None) -> Path:
    """The store a reading command uses: an explicit run, the live store, or the latest run."""
    if run:
        return run_store(resolve_run(run))
    live = settings.trading.nats.store_dir
    if (live / "jetstream").exists():
        return live
    latest = RUNS_DIR / "latest"
    if latest.exists():
        return latest.resolve() / "nats"
    return live


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
