"""What both Alpaca adapters (trading and market data) need from alpaca-py's HTTP session."""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter


class TimeoutAdapter(HTTPAdapter):
    """Gives every request on alpaca-py's session a timeout (alpaca-py sets none itself)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def mount_timeouts(session: Any, timeout: float) -> None:
    adapter = TimeoutAdapter(timeout)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
