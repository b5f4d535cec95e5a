"""A stage to judge, and the stored aggregates held to their recomputation from the raw records.

The recomputation is `gateway.store.recount`, written from the definitions
(README, "Aggregates") independently of `gateway.store.aggregates`.
`declare` and `start_canary` make deployment `bot` and its judged stage
through the store, as the control plane does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import datetime

from sqlalchemy.ext.asyncio import create_async_engine

from gateway import rollout
from gateway.models import Deployment, RolloutEvent, RolloutState, Version
from gateway.policy import RolloutPolicy
from gateway.store import Store
from gateway.store.recount import Audit, Tables, audit_aggregates, moment

__all__ = ["POLICY", "VERSIONS", "assert_aggregates_match", "declare", "moment", "start_canary"]

POLICY = RolloutPolicy(min_requests=50, latency_baseline=3600, rollback_when={"p95_latency_ratio_above": 1.5})
VERSIONS = {"v1": Version("v1", "p", "m"), "v2": Version("v2", "p", "m"), "v3": Version("v3", "p", "m")}


def assert_aggregates_match(url: str) -> Tables:
    """Fail unless every stored aggregate equals its recomputation (`gateway.store.recount`); returns it."""

    async def run() -> Audit:
        engine = create_async_engine(url)
        try:
            return await audit_aggregates(engine)
        finally:
            await engine.dispose()

    # A thread of its own: async tests call this while their loop is running.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        audit = pool.submit(asyncio.run, run()).result()
    assert not audit.differences, audit.differences[:5]
    return audit.recounted


async def declare(store: Store, *, now: datetime) -> Deployment:
    deployment = Deployment("bot", VERSIONS, RolloutState(stable="v1"), policy=POLICY)
    created = RolloutEvent(deployment="bot", action="deployment_created", actor="test", before=None, after=None)
    await store.insert_declared(deployments={"bot": deployment}, policies={"bot": POLICY.model_dump(mode="json")},
                                created_events={"bot": created}, now=now)
    stored = await store.get_deployment("bot")
    assert stored is not None
    return stored


async def start_canary(store: Store, deployment: Deployment, *, at: datetime) -> Deployment:
    state = rollout.start_canary(deployment, version="v2", percent=None, stages=POLICY.stages, now=at)
    await store.apply_rollout(expected_revision=deployment.rollout.revision, state=state,
                              event=RolloutEvent(deployment="bot", action="canary_started", actor="test",
                                                 before=None, after=None, at=at))
    started = await store.get_deployment("bot")
    assert started is not None and started.rollout.stage_started_at == at
    return started
