"""What both Alpaca adapters (trading and market data) need from alpaca-py's HTTP session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from requests.adapters import HTTPAdapter

T = TypeVar("T")


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


async def next_or_stopped(queue: asyncio.Queue[T], task: asyncio.Task[None],
                          stopped: Callable[[], Exception]) -> T:
    """The next item an alpaca-py stream callback queued, or `stopped()` raised when the
    stream's task ends first (a stream that died must not leave its reader waiting)."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        raise stopped()
    finally:
        if not getter.done():
            getter.cancel()
