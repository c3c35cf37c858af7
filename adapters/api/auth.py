"""Bearer tokens and the POST rate limit.

Tokens come from CATALYST_API_TOKEN or CATALYST_API_TOKEN_FILE (the file wins). Either holds
one or more entries separated by commas or new lines, each `name:token` or a bare `token`
(named "api"). The name is what the log records as the caller; the token itself never
leaves this module (not in responses, logs or events). Comparison is constant time over
every configured token, so the time taken does not tell which one nearly matched.
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from domain.errors import CatalystError

TOKEN_ENV = "CATALYST_API_TOKEN"
TOKEN_FILE_ENV = "CATALYST_API_TOKEN_FILE"
HOW_TO_SET = (f"no API token is configured: set {TOKEN_ENV}=<name>:<secret> (or "
              f"{TOKEN_FILE_ENV}=/path/to/file) before starting the API, e.g. "
              f"{TOKEN_ENV}=alice:$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")


class TokenConfigError(CatalystError, ValueError):
    pass


@dataclass(frozen=True)
class Tokens:
    entries: tuple[tuple[str, bytes], ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.entries)

    @classmethod
    def parse(cls, text: str) -> Tokens:
        entries: list[tuple[str, bytes]] = []
        for raw in text.replace(",", "\n").splitlines():
            item = raw.strip()
            if not item or item.startswith("#"):
                continue
            name, sep, secret = item.partition(":")
            if not sep:
                name, secret = "api", item
            name, secret = name.strip(), secret.strip()
            if not name or not secret:
                raise TokenConfigError("an API token entry is empty (use name:token)")
            if len(secret) < 16:
                # Short tokens are guessable even through a rate limit; say so, do not echo it.
                raise TokenConfigError(f"API token {name!r} is shorter than 16 characters")
            entries.append((name, secret.encode()))
        return cls(tuple(entries))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Tokens:
        env = dict(os.environ) if env is None else env
        path = env.get(TOKEN_FILE_ENV)
        if path:
            try:
                return cls.parse(Path(path).read_text())
            except OSError as e:
                raise TokenConfigError(f"{TOKEN_FILE_ENV}: cannot read {path}: "
                                       f"{e.strerror}") from None
        return cls.parse(env.get(TOKEN_ENV, ""))

    def who(self, authorization: str | None) -> str | None:
        """The name of the token in an `Authorization: Bearer ...` header, else None."""
        if not authorization:
            return None
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        presented = given.strip().encode()
        found: str | None = None
        for name, secret in self.entries:  # every entry compared: no early exit
            if hmac.compare_digest(presented, secret) and found is None:
                found = name
        return found


@dataclass
class RateLimiter:
    """A token bucket per client address for POSTs: `burst` at once, `per_second` after."""

    burst: float = 10.0
    per_second: float = 1.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, client: str, now: float | None = None) -> float:
        """0 when allowed; else the seconds to wait before the next one is."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.per_second
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget idle clients
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return 0.0
