"""Where the event log lives: a configured NATS server, or an embedded one on a store dir.

- `nats.url` (or CATALYST_NATS_URL) set: connect there (auth and TLS from config).
- Otherwise an embedded nats-server on a store directory. A running Catalyst writes its
  server's URL to `<store>/server.url`, so `catalyst session start` or `events tail` from
  another shell talks to the same server; with no server running, a command that only reads
  starts its own on the store for as long as it runs.
- Simulations and backtests each get their own store under `var/runs/<run id>/`, with
  `var/runs/latest` pointing at the newest: a simulated account is not the live account.
"""

from __future__ import annotations

import contextlib
import os
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
        return run_store(run)
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
                         sync_always: bool = True) -> AsyncIterator[EventLog]:
    """Connect to the configured server, a running embedded one, or start one."""
    nats_cfg = settings.trading.nats
    names = StreamNames(nats_cfg.record_stream, nats_cfg.market_data_stream)
    kwargs = dict(names=names, duplicate_window=nats_cfg.duplicate_window_seconds,
                  md_max_age_days=nats_cfg.market_data_max_age_days,
                  create_streams=create_streams)
    if nats_cfg.url:
        log = await EventLog.connect(connect_options_from_settings(nats_cfg, nats_cfg.url),
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
