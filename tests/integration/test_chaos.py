"""A short chaos drill on the test cluster: the quota Redis killed and restarted, then a
storm of streams left by their clients, each under a mixed load. The cluster must
recover from both, and no quota lease may outlive its request."""

from __future__ import annotations

import asyncio

import pytest

from loadtests.chaos.drill import PhaseTiming, run_drill
from loadtests.chaos.faults import Disconnects, DrillTarget, RedisKill
from loadtests.chaos.load import LoadMix, Tenant
from tests.integration.conftest import APP_NAME, MAIN_KEY, Cluster

pytestmark = pytest.mark.integration


def test_short_drill_recovers_and_leaks_no_leases(cluster: Cluster) -> None:
    target = DrillTarget(
        base_url=cluster.base_url,
        tenants=[Tenant("main", MAIN_KEY)],
        quota_redis=cluster.redis,
        app_name=APP_NAME,
        primary_model=cluster.llm_id,
    )
    mix = LoadMix(
        stream_model=cluster.llm_id,
        chat_model=cluster.llm_id,
        embed_model=cluster.embedder_id,
        workers=(("stream", 2), ("chat", 1), ("embed", 1)),
    )
    timing = PhaseTiming(warmup_s=3, duration_s=15, recovery_cap_s=60, ready_timeout_s=120)
    faults = [RedisKill(down_s=3), Disconnects(streams=60)]
    drill = asyncio.run(run_drill(target, faults, mix, timing))
    for phase in drill["phases"]:
        assert "error" not in phase, phase
        summary = {k: phase[k] for k in ("phase", "ok", "leaked_leases", "recovery_s")}
        assert phase["ok"] > 0, summary
        assert None not in phase["recovery_s"].values(), summary  # every kind served again
        assert phase["leaked_leases"] == 0, summary
    assert drill["healthy_after_drill"]
