"""Deployments, versions, rollout state and the audit trail.

A rollout change is stored with a compare-and-set on the deployment's
revision together with its audit event, in one transaction. Versions are
insert-only. The rules for the declared configuration (which rows the file
creates, when a declared canary starts) live in `gateway.control`; this
module only offers the writes they need.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import Conflict, NotFound, StoreRejected
from gateway.models import Deployment, RolloutEvent, RolloutState, Version
from gateway.policy import RolloutPolicy
from gateway.store.aggregates import lock_stage_exclusively, open_stage
from gateway.store.engine import Database, Dialect, translated_errors
from gateway.tables import DeploymentRow, GatewaySettingRow, RolloutEventRow, VersionRow

# Advisory-lock namespace of the rollout checks ("CGTW").
_LOCK_NAMESPACE = 0x43475457
_SALT_KEY = "user_id_salt"


class RolloutStore(Database):
    """Reads and writes of deployments, versions, rollout state and events."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._local_locks: dict[str, asyncio.Lock] = {}

    async def insert_declared(
        self,
        *,
        deployments: Mapping[str, Deployment],
        policies: Mapping[str, Mapping[str, Any]],
        created_events: Mapping[str, RolloutEvent],
        now: datetime,
    ) -> None:
        """In one transaction, write what the database lacks of `deployments`.

        A deployment that does not exist is inserted with its declared rollout
        state and `created_events[name]` is recorded; versions that do not
        exist are inserted; every deployment's policy and `anonymous` flag are
        set from the declaration. Rows that exist are left alone, so several
        replicas may run this at once. `policies[name]` is the JSON form of
        the deployment's policy.
        """
        insert_ignoring = self.dialect.insert
        async with translated_errors(), self.engine.begin() as connection:
            # A declared canary of a new deployment opens its stage: before any of its records are counted.
            await lock_stage_exclusively(connection, self.dialect, *(
                name for name, deployment in deployments.items() if deployment.rollout.canary))
            for name, deployment in deployments.items():
                state = deployment.rollout
                created = await connection.execute(
                    insert_ignoring(DeploymentRow)
                    .values(
                        name=name,
                        stable_version=state.stable,
                        canary_version=state.canary,
                        canary_percent=state.canary_percent,
                        stage=state.stage,
                        status=state.status,
                        paused=False,
                        revision=1,
                        anonymous=deployment.anonymous,
                        policy=policies[name],
                        stage_started_at=now if state.canary else None,
                        updated_at=now,
                        kind=state.kind,
                        shadow=state.shadow,
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                if created.rowcount == 1:
                    await connection.execute(insert(RolloutEventRow).values(**_event_values(created_events[name], now)))
                    if state.canary:
                        await open_stage(connection, self.dialect, deployment=name, started_at=now,
                                         stable=state.stable, canary=state.canary, policy=deployment.policy)
                for version in deployment.versions.values():
                    await connection.execute(
                        insert_ignoring(VersionRow)
                        .values(deployment=name, **_version_values(version), created_at=now)
                        .on_conflict_do_nothing(index_elements=["deployment", "name"])
                    )
                await connection.execute(
                    update(DeploymentRow)
                    .where(DeploymentRow.name == name)
                    .values(policy=policies[name], anonymous=deployment.anonymous)
                )

    async def version_hashes(self, *, deployments: Collection[str]) -> dict[str, dict[str, str]]:
        """The stored content hash of every version of `deployments`: deployment → version → hash."""
        async with translated_errors(), self.engine.connect() as connection:
            rows = await connection.execute(
                select(VersionRow.deployment, VersionRow.name, VersionRow.content_hash).where(
                    VersionRow.deployment.in_(list(deployments))
                )
            )
            hashes: dict[str, dict[str, str]] = {}
            for deployment, name, content_hash in rows:
                hashes.setdefault(deployment, {})[name] = content_hash
        return hashes

    async def load_deployments(self) -> dict[str, Deployment]:
        """Every stored deployment with its versions, by name."""
        async with translated_errors(), self.engine.connect() as connection:
            deployment_rows = (await connection.execute(select(DeploymentRow))).all()
            version_rows = (await connection.execute(select(VersionRow))).all()
        versions: dict[str, dict[str, Version]] = {}
        for row in version_rows:
            versions.setdefault(row.deployment, {})[row.name] = _version_of(row)
        return {row.name: _deployment_of(row, versions.get(row.name, {})) for row in deployment_rows}

    async def get_deployment(self, name: str) -> Deployment | None:
        """One deployment as stored now (not the snapshot): what a change is computed from."""
        async with translated_errors(), self.engine.connect() as connection:
            return await read_deployment(connection, name)

    async def revisions(self) -> dict[str, int]:
        """Each deployment's revision: a cheap way to tell whether anything changed."""
        async with translated_errors(), self.engine.connect() as connection:
            rows = await connection.execute(select(DeploymentRow.name, DeploymentRow.revision))
            return {name: revision for name, revision in rows}

    async def apply_rollout(self, *, expected_revision: int, state: RolloutState, event: RolloutEvent) -> RolloutState:
        """Store `state` if the revision is still `expected_revision`, with its audit event, atomically.

        Returns `state` at its new revision (`expected_revision + 1`). Raises
        Conflict when another change committed first.
        """
        async with translated_errors(), self.engine.begin() as connection:
            return await apply_rollout_on(connection, expected_revision=expected_revision, state=state, event=event)

    async def record_event(self, event: RolloutEvent) -> None:
        """An event that changes no state (a version created, a check that held)."""
        async with translated_errors(), self.engine.begin() as connection:
            await record_event_on(connection, event)

    async def create_version(self, *, deployment: str, version: Version, actor: str) -> None:
        """Insert a new version; Conflict if the name is taken, NotFound if the deployment is unknown."""
        now = datetime.now(UTC)
        try:
            async with translated_errors(), self.engine.begin() as connection:
                exists = await connection.scalar(select(DeploymentRow.name).where(DeploymentRow.name == deployment))
                if exists is None:
                    raise NotFound(f"deployment '{deployment}' does not exist")
                await connection.execute(
                    insert(VersionRow).values(deployment=deployment, **_version_values(version), created_at=now)
                )
                event = RolloutEvent(
                    deployment=deployment,
                    action="version_created",
                    actor=actor,
                    before=None,
                    after={"version": version.name, **version.content()},
                )
                await connection.execute(insert(RolloutEventRow).values(**_event_values(event, now)))
        except StoreRejected as exc:
            raise Conflict(f"deployment '{deployment}' already has a version '{version.name}'", param="name") from exc

    async def list_events(self, *, deployment: str, limit: int, before_id: int | None = None) -> list[RolloutEvent]:
        """At most `limit` events of `deployment`, newest first, older than `before_id` when given."""
        async with translated_errors(), self.engine.connect() as connection:
            return await list_events_on(connection, deployment=deployment, limit=limit, before_id=before_id)

    async def user_id_salt(self, candidate: str) -> str:
        """The salt every replica hashes user ids with: `candidate` if none is stored yet, else the stored one.

        Insert-if-absent then read, in one transaction: replicas starting
        together all end with the salt of whichever inserted first.
        """
        async with translated_errors(), self.engine.begin() as connection:
            await connection.execute(
                self.dialect.insert(GatewaySettingRow)
                .values(key=_SALT_KEY, value=candidate)
                .on_conflict_do_nothing(index_elements=["key"])
            )
            stored = await connection.scalar(select(GatewaySettingRow.value).where(GatewaySettingRow.key == _SALT_KEY))
        return str(stored)

    def lock_key(self, deployment: str) -> tuple[int, int]:
        """The (namespace, key) of the PostgreSQL advisory lock that rollout checks of `deployment` take."""
        return _LOCK_NAMESPACE, zlib.crc32(deployment.encode()) - 2**31


async def read_deployment(connection: AsyncConnection, name: str) -> Deployment | None:
    """One deployment with its versions, read on `connection`."""
    row = (await connection.execute(select(DeploymentRow).where(DeploymentRow.name == name))).first()
    if row is None:
        return None
    version_rows = (await connection.execute(select(VersionRow).where(VersionRow.deployment == name))).all()
    return _deployment_of(row, {version.name: _version_of(version) for version in version_rows})


async def apply_rollout_on(connection: AsyncConnection, *, expected_revision: int, state: RolloutState,
                           event: RolloutEvent) -> RolloutState:
    """The compare-and-set of `RolloutStore.apply_rollout`, inside the caller's transaction on `connection`.

    A new stage of a running canary becomes the judged stage of the per-user
    sums, and a rollout that ended stops them (`gateway.store.aggregates.open_stage`);
    the stage lock is taken first, in the order every stage change takes it.
    """
    now = event.at or datetime.now(UTC)
    dialect = Dialect.of(connection.engine)
    await lock_stage_exclusively(connection, dialect, event.deployment)
    changed = (await connection.execute(
        update(DeploymentRow)
        .where(DeploymentRow.name == event.deployment, DeploymentRow.revision == expected_revision)
        .values(
            stable_version=state.stable,
            canary_version=state.canary,
            canary_percent=state.canary_percent,
            stage=state.stage,
            status=state.status,
            paused=state.paused,
            stage_started_at=state.stage_started_at,
            revision=expected_revision + 1,
            updated_at=now,
            kind=state.kind,
            shadow=state.shadow,
        )
        .returning(DeploymentRow.policy)
    )).first()
    if changed is None:
        raise Conflict(
            f"deployment '{event.deployment}' changed while this change was being made; reload and try again"
        )
    await connection.execute(insert(RolloutEventRow).values(**_event_values(event, now)))
    judged = state.status == "canary" and state.canary is not None
    await open_stage(connection, dialect, deployment=event.deployment,
                     started_at=state.stage_started_at if judged else None, stable=state.stable,
                     canary=state.canary, policy=RolloutPolicy.model_validate(changed.policy or {}))
    return replace(state, revision=expected_revision + 1)


async def record_event_on(connection: AsyncConnection, event: RolloutEvent) -> None:
    """Insert one audit event inside the caller's transaction."""
    await connection.execute(insert(RolloutEventRow).values(**_event_values(event, event.at or datetime.now(UTC))))


async def list_events_on(connection: AsyncConnection, *, deployment: str, limit: int,
                         before_id: int | None = None) -> list[RolloutEvent]:
    """At most `limit` events of `deployment`, newest first, read on `connection`."""
    query = select(RolloutEventRow).where(RolloutEventRow.deployment == deployment)
    if before_id is not None:
        query = query.where(RolloutEventRow.id < before_id)
    rows = (await connection.execute(query.order_by(RolloutEventRow.id.desc()).limit(limit))).all()
    return [
        RolloutEvent(id=row.id, at=row.at, deployment=row.deployment, action=row.action, actor=row.actor,
                     before=row.from_state, after=row.to_state, reason=row.reason, snapshot=row.snapshot)
        for row in rows
    ]


def _version_values(version: Version) -> dict[str, Any]:
    return {
        "name": version.name,
        "provider": version.provider,
        "model": version.model,
        "system_prompt": version.system_prompt,
        "few_shot": [dict(shot) for shot in version.few_shot],
        "params": dict(version.params),
        "prompt_mode": version.prompt_mode,
        "response_schema": dict(version.response_schema) if version.response_schema is not None else None,
        "content_hash": version.content_hash(),
    }


def _version_of(row: Any) -> Version:
    return Version(
        name=row.name,
        provider=row.provider,
        model=row.model,
        system_prompt=row.system_prompt,
        few_shot=tuple(row.few_shot or ()),
        params=dict(row.params or {}),
        prompt_mode=row.prompt_mode,
        response_schema=row.response_schema,
    )


def _deployment_of(row: Any, versions: dict[str, Version]) -> Deployment:
    return Deployment(
        name=row.name,
        versions=versions,
        rollout=RolloutState(
            stable=row.stable_version,
            canary=row.canary_version,
            canary_percent=row.canary_percent,
            stage=row.stage,
            status=row.status,
            paused=row.paused,
            revision=row.revision,
            stage_started_at=row.stage_started_at,
            kind=row.kind,
            shadow=row.shadow,
        ),
        anonymous=row.anonymous,
        policy=RolloutPolicy.model_validate(row.policy or {}),
    )


def _event_values(event: RolloutEvent, at: datetime) -> dict[str, Any]:
    return {
        "at": at,
        "deployment": event.deployment,
        "action": event.action,
        "actor": event.actor,
        "from_state": dict(event.before) if event.before is not None else None,
        "to_state": dict(event.after) if event.after is not None else None,
        "reason": event.reason,
        "snapshot": dict(event.snapshot) if event.snapshot is not None else None,
    }
