"""Async, keyword-only database access: rollout state, versions, request records.

Database exceptions are translated here, once: `StoreUnavailable` when the
database cannot be reached or timed out (retry later), `StoreRejected` when it
refused the values (retrying will not help).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.config import DatabaseSettings
from gateway.errors import ConfigError, StoreRejected, StoreUnavailable
from gateway.models import Deployment, RequestRecord, RolloutState, Version
from gateway.tables import DeploymentRow, RequestRecordRow, VersionRow


def create_engine(url: str, settings: DatabaseSettings) -> AsyncEngine:
    """An engine whose every statement is bounded in time; connects lazily."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": settings.statement_timeout})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    timeout_ms = str(int(settings.statement_timeout * 1000))
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.pool_timeout,
            "command_timeout": settings.statement_timeout + 1,
            "server_settings": {"statement_timeout": timeout_ms, "application_name": "canary-gateway"},
        },
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextlib.asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except DBAPIError as exc:
        if _refused_values(exc):
            raise StoreRejected(f"the database refused the values ({type(exc.orig).__name__})") from None
        raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from None
    except (PoolTimeout, SQLAlchemyError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"the database is unavailable ({type(exc).__name__})") from None


def _refused_values(exc: DBAPIError) -> bool:
    """A data exception or constraint violation (SQLSTATE classes 22 and 23), not an outage."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with translated_errors(), self.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    async def sync_declared(self, *, deployments: Mapping[str, Deployment], policies: Mapping[str, Any]) -> None:
        """Write declared deployments and versions that the database does not have yet.

        Several replicas may start with the same file at once: inserts ignore
        rows that exist. A declared version whose content differs from the
        stored one of the same name is a configuration error.
        """
        now = datetime.now(UTC)
        async with translated_errors(), self.engine.begin() as connection:
            for name, deployment in deployments.items():
                rollout = deployment.rollout
                await connection.execute(
                    self._insert(DeploymentRow)
                    .values(
                        name=name,
                        stable_version=rollout.stable,
                        canary_version=rollout.canary,
                        canary_percent=rollout.canary_percent,
                        stage=rollout.stage,
                        status=rollout.status,
                        paused=False,
                        revision=1,
                        anonymous=deployment.anonymous,
                        policy=policies[name],
                        stage_started_at=now if rollout.canary else None,
                        updated_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                for version in deployment.versions.values():
                    await connection.execute(
                        self._insert(VersionRow)
                        .values(deployment=name, **_version_values(version), created_at=now)
                        .on_conflict_do_nothing(index_elements=["deployment", "name"])
                    )
                stored = await connection.execute(
                    select(VersionRow.name, VersionRow.content_hash).where(VersionRow.deployment == name)
                )
                for version_name, content_hash in stored:
                    declared = deployment.versions.get(version_name)
                    if declared is not None and declared.content_hash() != content_hash:
                        raise ConfigError(
                            f"deployments.{name}.versions.{version_name}: differs from the stored version "
                            "of the same name; versions are immutable, declare a new name"
                        )
                await connection.execute(
                    update(DeploymentRow)
                    .where(DeploymentRow.name == name)
                    .values(policy=policies[name], anonymous=deployment.anonymous)
                )

    async def load_deployments(self) -> dict[str, Deployment]:
        async with translated_errors(), self.engine.connect() as connection:
            deployment_rows = (await connection.execute(select(DeploymentRow))).all()
            version_rows = (await connection.execute(select(VersionRow))).all()
        versions: dict[str, dict[str, Version]] = {}
        for row in version_rows:
            versions.setdefault(row.deployment, {})[row.name] = Version(
                name=row.name,
                provider=row.provider,
                model=row.model,
                system_prompt=row.system_prompt,
                few_shot=tuple(row.few_shot or ()),
                params=dict(row.params or {}),
                prompt_mode=row.prompt_mode,
            )
        return {
            row.name: Deployment(
                name=row.name,
                versions=versions.get(row.name, {}),
                rollout=RolloutState(
                    stable=row.stable_version,
                    canary=row.canary_version,
                    canary_percent=row.canary_percent,
                    stage=row.stage,
                    status=row.status,
                    paused=row.paused,
                    revision=row.revision,
                ),
                anonymous=row.anonymous,
            )
            for row in deployment_rows
        }

    async def revisions(self) -> dict[str, int]:
        """Each deployment's revision: a cheap way to tell whether anything changed."""
        async with translated_errors(), self.engine.connect() as connection:
            rows = await connection.execute(select(DeploymentRow.name, DeploymentRow.revision))
            return {name: revision for name, revision in rows}

    async def insert_records(self, records: Iterable[RequestRecord]) -> None:
        """Insert records; an id already stored is skipped, so a retried batch lands once."""
        values = [asdict(record) for record in records]
        if not values:
            return
        async with translated_errors(), self.engine.begin() as connection:
            await connection.execute(
                self._insert(RequestRecordRow).on_conflict_do_nothing(index_elements=["id"]), values
            )

    async def set_quality(self, *, request_id: str, score: float) -> bool:
        """Attach a quality score to a stored record; False if no such record is stored."""
        async with translated_errors(), self.engine.begin() as connection:
            result = await connection.execute(
                update(RequestRecordRow).where(RequestRecordRow.id == request_id).values(quality=score)
            )
            return bool(result.rowcount)


def _version_values(version: Version) -> dict[str, Any]:
    return {
        "name": version.name,
        "provider": version.provider,
        "model": version.model,
        "system_prompt": version.system_prompt,
        "few_shot": [dict(shot) for shot in version.few_shot],
        "params": dict(version.params),
        "prompt_mode": version.prompt_mode,
        "content_hash": version.content_hash(),
    }
