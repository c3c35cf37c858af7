"""Fixtures for the fake Alpaca server: `fake_alpaca` (the server) and `alpaca_broker` (an
`AlpacaBroker` pointed at it, with test-sized backoffs and timeouts).

Use from a conftest: `from tests.fakes.alpaca_fixtures import alpaca_broker, fake_alpaca`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from adapters.broker.alpaca import AlpacaBroker
from config.settings import Broker
from tests.fakes.alpaca_server import FakeAlpaca


@pytest.fixture
async def fake_alpaca() -> AsyncIterator[FakeAlpaca]:
    server = FakeAlpaca()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def broker_settings(fake: FakeAlpaca, **overrides: object) -> Broker:
    values: dict[str, object] = {
        "kind": "alpaca",
        "mode": "paper",
        "api_key": SecretStr(fake.api_key),
        "secret_key": SecretStr(fake.secret_key),
        "paper_url": fake.url,
        "timeout_seconds": 2.0,
        "max_retries": 3,
    }
    values.update(overrides)
    return Broker.model_validate(values)


@pytest.fixture
async def alpaca_broker(fake_alpaca: FakeAlpaca) -> AsyncIterator[AlpacaBroker]:
    broker = AlpacaBroker(
        broker_settings(fake_alpaca),
        backoff_initial=0.01,
        backoff_max=0.05,
        stream_reconnect_min=0.05,
    )
    try:
        yield broker
    finally:
        await broker.close()
