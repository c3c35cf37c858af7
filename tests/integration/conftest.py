"""Integration fixtures shared across modules."""

import pytest

from tests.fakes.alpaca_fixtures import alpaca_broker, fake_alpaca

__all__ = ["alpaca_broker", "fake_alpaca", "fast_lane_on_and_off"]


@pytest.fixture(params=["lane", "public-api"])
def fast_lane_on_and_off(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a read-path test twice: through the fast lane over nats-py's internals, and
    through nats-py's public API alone, which is what a nats-py release that changed those
    internals would get (adapters/nats/wire.py)."""
    monkeypatch.setenv("CATALYST_FAST_LANE", "1" if request.param == "lane" else "0")
    return str(request.param)
