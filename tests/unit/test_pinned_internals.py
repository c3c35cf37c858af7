"""The two places that lean on a client library's private internals, checked against the
versions pinned in pyproject.toml. A failure here after moving a pin means: read the new
release's code for these names before trusting the adapters that use them."""

from __future__ import annotations

import inspect

from alpaca.trading.stream import TradingStream

from adapters.nats.wire import PRIVATE_API_OK


def test_nats_py_internals_used_by_the_fast_lane_are_there() -> None:
    assert PRIVATE_API_OK


def test_alpaca_trading_stream_still_connects_through_start_ws() -> None:
    start_ws = getattr(TradingStream, "_start_ws", None)
    assert start_ws is not None and inspect.iscoroutinefunction(start_ws)
