"""Hot reload: a changed config file takes effect within a second, or is refused whole.

The watcher polls modification times (cheap, no extra dependency, works on every
filesystem) every `interval` seconds. A valid change swaps the settings atomically and
publishes ConfigChanged; an invalid one publishes ConfigRejected and keeps the last good
settings in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from uuid import uuid4

from config.loader import DEFAULT_DIR, FILES, ConfigError, diff, load_settings, redacted
from config.settings import Settings
from domain.events import ConfigChanged, ConfigRejected, Event

log = logging.getLogger("catalyst.config")


class SettingsHolder:
    """The settings in force. Handlers read `current` on every event."""

    def __init__(self, settings: Settings, config_dir: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.current = settings
        self.config_dir = Path(config_dir) if config_dir else DEFAULT_DIR
        self.env = env
        # Stamped at load, so an edit made before the watcher starts is still noticed.
        self._last = self._stamp()

    def _stamp(self) -> tuple[float, ...]:
        stamps = []
        for filename, _ in FILES.values():
            try:
                stamps.append(os.stat(self.config_dir / filename).st_mtime_ns)
            except FileNotFoundError:
                stamps.append(-1)
        return tuple(stamps)

    def reload(self, now: datetime, correlation_id: str = "config") -> Event | None:
        """Re-read the files; return ConfigChanged / ConfigRejected, or None if unchanged."""
        source = str(self.config_dir)
        try:
            new = load_settings(self.config_dir, self.env).settings
        except ConfigError as e:
            log.error("config change rejected, keeping the last good config: %s", e)
            return ConfigRejected(event_id=uuid4(), type="ConfigRejected", occurred_at=now,
                                  correlation_id=correlation_id, source=source, error=str(e))
        changes = diff(self.current, new)
        if not changes:
            return None
        self.current = new
        log.info("config changed: %s", ", ".join(changes))
        return ConfigChanged(event_id=uuid4(), type="ConfigChanged", occurred_at=now,
                             correlation_id=correlation_id, changes=changes, source=source,
                             config=redacted(new))

    def changed(self) -> bool:
        """Whether a config file changed since the last call (or the load)."""
        stamp = self._stamp()
        if stamp == self._last:
            return False
        self._last = stamp
        return True

    async def watch(self, publish: Callable[[Event], Awaitable[object]],
                    clock: Callable[[], datetime], interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.changed():
                continue
            event = self.reload(clock())
            if event is not None:
                await publish(event)
