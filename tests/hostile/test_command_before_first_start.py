"""`catalyst session start` with no runtime answering used to fall back to publishing to the
log, where the next first start took it as history and nobody decided it (found here). It is
now refused with a clear error (adapters/nats/inbox.py)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.api.commands import start_requested
from adapters.nats.inbox import NoSystemListening, submit_command
from config.settings import Settings
from tests.fakes.alpaca_server import FakeAlpaca
from tests.integration.test_alpaca_runtime import fresh_log
from tests.integration.test_paper_session_verifies import _start

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
async def test_a_start_request_with_no_runtime_answering_is_refused_not_dropped(
        nats_url: str) -> None:
    now = datetime(2025, 11, 26, 14, 31, tzinfo=UTC)
    async with fresh_log(nats_url) as log:
        with pytest.raises(NoSystemListening, match="was not recorded"):
            await submit_command(log, start_requested(now, "cli", None, None))
        assert [s async for s in log.read()] == []


@pytest.mark.timeout(120)
async def test_control_the_same_request_after_the_start_is_decided(
        fake_alpaca: FakeAlpaca, nats_url: str, tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"trading": {"alerts": {"mailbox_dir": str(tmp_path / "mail")}}})
    now = datetime(2025, 11, 26, 14, 31, tzinfo=UTC)
    fake_alpaca.clock = lambda: now
    async with fresh_log(nats_url) as log:
        services, slog = await _start(nats_url, log.names, settings, fake_alpaca, lambda: now)
        try:
            await submit_command(log, start_requested(now, "cli", None, None))
            started = bool([s async for s in log.read(["catalyst.session.started"])])
        finally:
            await services.stop()
            await slog.close()
    assert started
