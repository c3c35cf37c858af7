"""Chaos in CI: one trial of every fault on the 3-node cluster (tests/chaos/harness.py).
`bench/chaos.py --trials N` runs many and prints the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.nats.local_cluster import LocalCluster
from tests.chaos.harness import Trial

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
async def test_a_session_under_every_fault_loses_and_doubles_nothing_and_verifies(
    nats_cluster: LocalCluster, tmp_path: Path
) -> None:
    r = await Trial(nats_cluster, tmp_path, seed=18, minutes=35).run()
    print(r.as_json())
    assert len(r.faults) == 7, r.faults
    assert r.orders > 0 and r.fills > 0 and r.alerts > 0, "the session traded and alerted"
    assert r.duplicate_orders == 0
    assert (r.lost_fills, r.doubled_fills) == (0, 0)
    assert (r.lost_alerts, r.doubled_alerts) == (0, 0)
    assert r.divergences == 0
    assert len(r.failovers) == 3
