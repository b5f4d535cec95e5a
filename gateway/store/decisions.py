"""The rollout check's session: the decision lock, the reads and the write on one connection.

A check takes a transaction-level advisory lock (PostgreSQL) on a
connection, then reads the deployment and the evidence and writes its
decision (compare-and-set on the revision, with the audit event) on that
same connection, in that same transaction. So the decision is committed
only while this replica holds the lock: a replica whose session was killed
(its lock released, another replica may now decide) can no longer write
anything, because every later statement of the transaction fails and the
write is rolled back with it. SQLite serves one process: a local lock per
deployment, and one connection all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.analysis.evidence import Evidence
from gateway.analysis.shadow import ShadowEvidence
from gateway.models import Deployment, RolloutEvent, RolloutState
from gateway.policy import RolloutPolicy
from gateway.store.engine import translated_errors
from gateway.store.evidence import EvidenceStore
from gateway.store.rollouts import (
    RolloutStore,
    apply_rollout_on,
    list_events_on,
    read_deployment,
    record_event_on,
)


class DecisionSession:
    """Reads and writes of one rollout check, on the connection that holds its decision lock.

    Every method raises `StoreUnavailable` when the connection is lost (for
    example because the session was terminated): the caller must stop, and
    nothing it wrote in the session is committed.
    """

    def __init__(self, store: DecisionStore, connection: AsyncConnection, deployment: str) -> None:
        self._store = store
        self._connection = connection
        self.deployment_name = deployment

    async def deployment(self) -> Deployment | None:
        async with translated_errors():
            return await read_deployment(self._connection, self.deployment_name)

    async def evidence(self, *, stable: str, canary: str, since: datetime, until: datetime,
                       policy: RolloutPolicy) -> Evidence:
        """The stage's evidence; fixes the stage's latency thresholds once they can be (see `stage_evidence_on`).

        Raises Conflict when the deployment is no longer in the stage started at `since`.
        """
        async with translated_errors():
            return await self._store.stage_evidence_on(self._connection, deployment=self.deployment_name,
                                                       stable=stable, canary=canary, since=since, until=until,
                                                       policy=policy, fix=True)

    async def shadow_evidence(self, *, stable: str, canary: str, since: datetime, until: datetime,
                              policy: RolloutPolicy) -> ShadowEvidence:
        async with translated_errors():
            return await self._store.shadow_evidence_on(self._connection, deployment=self.deployment_name,
                                                        stable=stable, canary=canary, since=since, until=until,
                                                        policy=policy)

    async def recent_events(self, limit: int) -> list[RolloutEvent]:
        async with translated_errors():
            return await list_events_on(self._connection, deployment=self.deployment_name, limit=limit)

    async def apply(self, *, expected_revision: int, state: RolloutState, event: RolloutEvent) -> RolloutState:
        """Compare-and-set on the revision with the event; Conflict when another change committed first."""
        async with translated_errors():
            return await apply_rollout_on(self._connection, expected_revision=expected_revision, state=state,
                                          event=event)

    async def record(self, event: RolloutEvent) -> None:
        async with translated_errors():
            await record_event_on(self._connection, event)


class DecisionStore(RolloutStore, EvidenceStore):
    """Opens decision sessions: one replica at a time per deployment.

    Sessions run on `check_engine` (default: the store's engine): a stage's
    per-user sums may take seconds over millions of calls, longer than the
    hot queries' statement timeout (see `create_engine(checks=True)`).
    """

    def __init__(self, engine: AsyncEngine, *, check_engine: AsyncEngine | None = None) -> None:
        super().__init__(engine)
        self.check_engine = check_engine or engine

    async def close(self) -> None:
        await super().close()
        if self.check_engine is not self.engine:
            await self.check_engine.dispose()

    async def stage_evidence(self, *, deployment: str, stable: str, canary: str, since: datetime, until: datetime,
                             policy: RolloutPolicy) -> Evidence:
        """As `EvidenceStore.stage_evidence`, on the checks' engine."""
        async with translated_errors(), self.check_engine.connect() as connection:
            return await self.stage_evidence_on(connection, deployment=deployment, stable=stable, canary=canary,
                                                since=since, until=until, policy=policy)

    async def shadow_evidence(self, *, deployment: str, stable: str, canary: str, since: datetime, until: datetime,
                              policy: RolloutPolicy) -> ShadowEvidence:
        """As `EvidenceStore.shadow_evidence_on`, on the checks' engine."""
        async with translated_errors(), self.check_engine.connect() as connection:
            return await self.shadow_evidence_on(connection, deployment=deployment, stable=stable, canary=canary,
                                                 since=since, until=until, policy=policy)

    @contextlib.asynccontextmanager
    async def decision_session(self, deployment: str) -> AsyncIterator[DecisionSession | None]:
        """A session holding `deployment`'s decision lock, or None when another replica holds it.

        The session's transaction commits when the block ends normally and
        rolls back when it raises.
        """
        if not self.dialect.postgresql:
            lock = self._local_locks.setdefault(deployment, asyncio.Lock())
            if lock.locked():
                yield None
                return
            async with lock, translated_errors(), self.check_engine.connect() as connection, connection.begin():
                yield DecisionSession(self, connection, deployment)
            return
        namespace, key = self.lock_key(deployment)
        async with translated_errors(), self.check_engine.connect() as connection, connection.begin():
            acquired = await connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"), {"namespace": namespace, "key": key}
            )
            if not acquired:
                yield None
                return
            yield DecisionSession(self, connection, deployment)
