"""Async, keyword-only database access: rollout state, versions, request records.

Database exceptions are translated here, once: `StoreUnavailable` when the
database cannot be reached or timed out (retry later), `StoreRejected` when it
refused the values (retrying will not help).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, any_, event, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from gateway import rollout
from gateway.config import DatabaseSettings
from gateway.errors import ConfigError, Conflict, NotFound, StoreRejected, StoreUnavailable
from gateway.models import (
    Deployment,
    QualityScore,
    RequestRecord,
    RolloutEvent,
    RolloutState,
    Version,
    WindowStats,
)
from gateway.tables import DeploymentRow, QualityScoreRow, RequestRecordRow, RolloutEventRow, VersionRow


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


# Advisory-lock namespace of the rollout checks ("CGTW").
_LOCK_NAMESPACE = 0x43475457


def _refused_values(exc: DBAPIError) -> bool:
    """A data exception or constraint violation (SQLSTATE classes 22 and 23), not an outage."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._record_insert = _record_insert_sql(engine.dialect.paramstyle)
        self._sqlite = engine.dialect.name == "sqlite"

    def _record_row(self, record: RequestRecord) -> tuple[Any, ...]:
        row = [getattr(record, name) for name in _RECORD_FIELDS]
        created = record.created_at.astimezone(UTC)
        # As UTCDateTime stores it: naive UTC text on SQLite, an aware timestamp on PostgreSQL.
        row[_CREATED_AT] = created.strftime("%Y-%m-%d %H:%M:%S.%f") if self._sqlite else created
        return tuple(row)

    async def close(self) -> None:
        await self.engine.dispose()

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
                created = await connection.execute(
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
                if created.rowcount == 1:
                    event = RolloutEvent(
                        deployment=name,
                        action="deployment_created",
                        actor="config",
                        before=None,
                        after=rollout.public(),
                        reason="declared in the configuration",
                    )
                    await connection.execute(insert(RolloutEventRow).values(**_event_values(event, now)))
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
        for name, deployment in deployments.items():
            if deployment.rollout.canary is not None:
                await self._start_declared_canary(name, deployment.rollout.canary, policies[name]["stages"])

    async def _start_declared_canary(self, name: str, canary: str, stages: Sequence[float]) -> None:
        """A declared canary the database has not seen yet starts a new rollout at the first stage.

        Several replicas may try at once: the compare-and-set lets one win, and
        the others find the rollout already started when they look again.
        """
        for _ in range(3):
            stored = await self.get_deployment(name)
            assert stored is not None
            state = stored.rollout
            if canary in (state.canary, state.stable):
                return
            after = rollout.start_canary(
                stored, version=canary, percent=None, stages=stages, now=datetime.now(UTC), replace_running=True
            )
            event = RolloutEvent(
                deployment=name,
                action="canary_started",
                actor="config",
                before=state.public(),
                after=after.public(),
                reason="declared in the configuration"
                + (f" (replaces canary '{state.canary}')" if state.status == "canary" else ""),
            )
            try:
                await self.apply_rollout(expected_revision=state.revision, state=after, event=event)
                return
            except Conflict:
                continue

    async def load_deployments(self) -> dict[str, Deployment]:
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
            row = (await connection.execute(select(DeploymentRow).where(DeploymentRow.name == name))).first()
            if row is None:
                return None
            version_rows = (await connection.execute(select(VersionRow).where(VersionRow.deployment == name))).all()
        return _deployment_of(row, {version.name: _version_of(version) for version in version_rows})

    async def apply_rollout(self, *, expected_revision: int, state: RolloutState, event: RolloutEvent) -> RolloutState:
        """Store `state` if the revision is still `expected_revision`, with its audit event, atomically.

        Raises Conflict when another change committed first.
        """
        now = event.at or datetime.now(UTC)
        async with translated_errors(), self.engine.begin() as connection:
            result = await connection.execute(
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
                )
            )
            if result.rowcount != 1:
                raise Conflict(
                    f"deployment '{event.deployment}' changed while this change was being made; "
                    "reload and try again"
                )
            await connection.execute(insert(RolloutEventRow).values(**_event_values(event, now)))
        return replace(state, revision=expected_revision + 1)

    async def record_event(self, event: RolloutEvent) -> None:
        """An event that changes no state (a version created, a check that held)."""
        async with translated_errors(), self.engine.begin() as connection:
            await connection.execute(insert(RolloutEventRow).values(**_event_values(event, event.at or datetime.now(UTC))))

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
        except StoreRejected:
            raise Conflict(f"deployment '{deployment}' already has a version '{version.name}'", param="name") from None

    async def list_events(self, *, deployment: str, limit: int, before_id: int | None = None) -> list[RolloutEvent]:
        """Newest first."""
        query = select(RolloutEventRow).where(RolloutEventRow.deployment == deployment)
        if before_id is not None:
            query = query.where(RolloutEventRow.id < before_id)
        async with translated_errors(), self.engine.connect() as connection:
            rows = (await connection.execute(query.order_by(RolloutEventRow.id.desc()).limit(limit))).all()
        return [
            RolloutEvent(
                id=row.id,
                at=row.at,
                deployment=row.deployment,
                action=row.action,
                actor=row.actor,
                before=row.from_state,
                after=row.to_state,
                reason=row.reason,
                snapshot=row.snapshot,
            )
            for row in rows
        ]

    @contextlib.asynccontextmanager
    async def decision_lock(self, deployment: str) -> AsyncIterator[bool]:
        """Whether this process may decide for `deployment` now; held until the block ends.

        PostgreSQL: a transaction-level advisory lock, so one replica decides at a
        time and a lost session releases it. SQLite is one process: a local lock.
        """
        if self.engine.dialect.name != "postgresql":
            lock = self._local_locks.setdefault(deployment, asyncio.Lock())
            if lock.locked():
                yield False
                return
            async with lock:
                yield True
            return
        key = zlib.crc32(deployment.encode()) - 2**31
        async with translated_errors(), self.engine.connect() as connection, connection.begin():
            acquired = await connection.scalar(
                text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"), {"namespace": _LOCK_NAMESPACE, "key": key}
            )
            yield bool(acquired)

    async def window_stats(self, *, deployment: str, version: str, since: datetime) -> WindowStats:
        """One version's numbers since `since` (see WindowStats for what counts)."""
        async with translated_errors(), self.engine.connect() as connection:
            if self.engine.dialect.name == "postgresql":
                stats = await _stats_postgresql(connection, deployment, version, since)
            else:
                stats = await _stats_sqlite(connection, deployment, version, since)
            if not stats.scored:
                return stats
            # Start from the window's scored calls and look their scores up by index; a join
            # would scan every score ever stored (measured on 10M records: 150 ms vs 10 ms).
            scored = select(RequestRecordRow.id).where(
                *_window(deployment, version, since), _COUNTED, RequestRecordRow.quality.is_not(None)
            )
            in_window = (
                QualityScoreRow.request_id == any_(func.array(scored.scalar_subquery()))
                if self.engine.dialect.name == "postgresql"
                else QualityScoreRow.request_id.in_(scored)
            )
            by_source = await connection.execute(
                select(QualityScoreRow.source, func.avg(QualityScoreRow.score), func.count())
                .where(in_window)
                .group_by(QualityScoreRow.source)
            )
            return replace(stats, quality_by_source={source: (float(avg), int(n)) for source, avg, n in by_source})

    async def timeseries(
        self, *, deployment: str, since: datetime, step_s: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Per version, one point per `step_s` bucket since `since`: traffic, errors, p95 latency, quality, cost.

        Buckets without calls are absent; the chart draws gaps.
        """
        step = max(int(step_s), 1)
        postgres = self.engine.dialect.name == "postgresql"
        epoch: Any = (
            func.floor(func.extract("epoch", RequestRecordRow.created_at) / step)
            if postgres
            else func.cast(func.strftime("%s", RequestRecordRow.created_at), Integer) / step
        )
        bucket = epoch.label("bucket")
        columns = [
            bucket,
            RequestRecordRow.version,
            func.count().filter(_COUNTED).label("requests"),
            func.count().filter(RequestRecordRow.status == "error").label("errors"),
            func.avg(RequestRecordRow.quality).filter(_COUNTED).label("avg_quality"),
            func.avg(RequestRecordRow.cost_usd).filter(_COUNTED).label("avg_cost"),
        ]
        if postgres:
            columns.append(
                _percentile(0.95, RequestRecordRow.latency_ms).filter(RequestRecordRow.status == "ok").label("p95")
            )
        window = [RequestRecordRow.deployment == deployment, RequestRecordRow.created_at >= since]
        async with translated_errors(), self.engine.connect() as connection:
            rows = (await connection.execute(
                select(*columns).where(*window).group_by(bucket, RequestRecordRow.version).order_by(bucket)
            )).all()
            latencies: dict[tuple[int, str], list[float]] = {}
            if not postgres:
                # SQLite: the p95 of each bucket from its sorted latencies.
                for point, version, latency in await connection.execute(
                    select(bucket, RequestRecordRow.version, RequestRecordRow.latency_ms)
                    .where(*window, RequestRecordRow.status == "ok")
                    .order_by(RequestRecordRow.latency_ms)
                ):
                    latencies.setdefault((int(point), version), []).append(latency)
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            point = int(row.bucket)
            requests = int(row.requests)
            p95 = row.p95 if postgres else percentile_cont(latencies.get((point, row.version), []), 0.95)
            series.setdefault(row.version, []).append({
                "t": datetime.fromtimestamp(point * step, UTC).isoformat(),
                "requests": requests,
                "errors": int(row.errors),
                "error_rate": row.errors / requests if requests else None,
                "p95_latency_ms": float(p95) if p95 is not None else None,
                "avg_quality": float(row.avg_quality) if row.avg_quality is not None else None,
                "avg_cost": float(row.avg_cost) if row.avg_cost is not None else None,
            })
        return series

    async def revisions(self) -> dict[str, int]:
        """Each deployment's revision: a cheap way to tell whether anything changed."""
        async with translated_errors(), self.engine.connect() as connection:
            rows = await connection.execute(select(DeploymentRow.name, DeploymentRow.revision))
            return {name: revision for name, revision in rows}

    async def insert_batch(self, *, records: Sequence[RequestRecord], scores: Sequence[QualityScore]) -> None:
        """Insert records and quality scores in one transaction, then derive the calls' quality.

        Ids already stored are skipped, so a retried batch lands once. Scores
        may arrive before or after their call's record: both orders end with
        the record's `quality` following QUALITY_RULE.
        """
        if not records and not scores:
            return
        async with translated_errors(), self.engine.begin() as connection:
            if records:
                # The hottest write: a prepared plain-SQL executemany, a fraction of the ORM
                # insert's per-row cost, which is paid on the event loop.
                await connection.exec_driver_sql(self._record_insert, [self._record_row(r) for r in records])
            if scores:
                await connection.execute(
                    self._insert(QualityScoreRow).on_conflict_do_nothing(index_elements=["id"]),
                    [_values(score, _SCORE_FIELDS) for score in scores],
                )
                # A score is written after (or with) its call's record: the recorder keeps
                # them in order, so only the scored calls need their quality derived again.
                await connection.execute(
                    update(RequestRecordRow)
                    .where(RequestRecordRow.id.in_({score.request_id for score in scores}))
                    .values(quality=_QUALITY)
                )

    async def record_labels(self, request_id: str) -> tuple[str, str] | None:
        """The deployment and version of a stored call, or None if no such call is stored."""
        async with translated_errors(), self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(RequestRecordRow.deployment, RequestRecordRow.version).where(
                        RequestRecordRow.id == request_id
                    )
                )
            ).first()
            return (row.deployment, row.version) if row is not None else None


_RECORD_FIELDS = tuple(field.name for field in fields(RequestRecord))
_CREATED_AT = _RECORD_FIELDS.index("created_at")


def _record_insert_sql(paramstyle: str) -> str:
    marks = {
        "qmark": ["?"] * len(_RECORD_FIELDS),
        "numeric_dollar": [f"${index}" for index in range(1, len(_RECORD_FIELDS) + 1)],
        "format": ["%s"] * len(_RECORD_FIELDS),
    }[paramstyle]
    return (
        f"INSERT INTO request_records ({', '.join(_RECORD_FIELDS)}) VALUES ({', '.join(marks)}) "
        "ON CONFLICT (id) DO NOTHING"
    )
_SCORE_FIELDS = tuple(field.name for field in fields(QualityScore))


def _values(item: Any, names: tuple[str, ...]) -> dict[str, Any]:
    # Flat dataclasses: cheaper than dataclasses.asdict, which deep-copies.
    return {name: getattr(item, name) for name in names}


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
        ),
        anonymous=row.anonymous,
        policy=dict(row.policy or {}),
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


# QUALITY_RULE: a call's quality is its user feedback when it has any (the
# average of its feedback scores), else the average of its automatic scores
# (evaluators and the judge).
_QUALITY = func.coalesce(
    select(func.avg(QualityScoreRow.score))
    .where(QualityScoreRow.request_id == RequestRecordRow.id, QualityScoreRow.source == "feedback")
    .scalar_subquery(),
    select(func.avg(QualityScoreRow.score)).where(QualityScoreRow.request_id == RequestRecordRow.id).scalar_subquery(),
)
_COUNTED = RequestRecordRow.status != "client_cancelled"


def _window(deployment: str, version: str, since: datetime) -> list[Any]:
    return [
        RequestRecordRow.deployment == deployment,
        RequestRecordRow.version == version,
        RequestRecordRow.created_at >= since,
    ]


def _aggregates() -> list[Any]:
    return [
        func.count().filter(_COUNTED).label("requests"),
        func.count().filter(RequestRecordRow.status == "error").label("errors"),
        func.count(RequestRecordRow.quality).filter(_COUNTED).label("scored"),
        func.avg(RequestRecordRow.quality).filter(_COUNTED).label("avg_quality"),
        func.avg(RequestRecordRow.cost_usd).filter(_COUNTED).label("avg_cost"),
        func.sum(RequestRecordRow.cost_usd).filter(_COUNTED).label("total_cost"),
        func.avg(RequestRecordRow.prompt_tokens).filter(_COUNTED).label("avg_prompt_tokens"),
        func.avg(RequestRecordRow.completion_tokens).filter(_COUNTED).label("avg_completion_tokens"),
    ]


def _percentile(fraction: float, column: Any) -> Any:
    return func.percentile_cont(fraction).within_group(column.asc())


async def _stats_postgresql(connection: AsyncConnection, deployment: str, version: str, since: datetime) -> WindowStats:
    answered = RequestRecordRow.status == "ok"
    row = (
        await connection.execute(
            select(
                *_aggregates(),
                _percentile(0.5, RequestRecordRow.latency_ms).filter(answered).label("p50_latency_ms"),
                _percentile(0.95, RequestRecordRow.latency_ms).filter(answered).label("p95_latency_ms"),
                _percentile(0.5, RequestRecordRow.ttft_ms).filter(answered).label("p50_ttft_ms"),
                _percentile(0.95, RequestRecordRow.ttft_ms).filter(answered).label("p95_ttft_ms"),
            ).where(*_window(deployment, version, since))
        )
    ).one()
    return _stats_of(version, dict(row._mapping))


async def _stats_sqlite(connection: AsyncConnection, deployment: str, version: str, since: datetime) -> WindowStats:
    # SQLite has no percentile function: aggregate in SQL, then interpolate the
    # percentiles over the window's sorted values (SQLite serves one node's scale).
    totals = (await connection.execute(select(*_aggregates()).where(*_window(deployment, version, since)))).one()
    answered = [*_window(deployment, version, since), RequestRecordRow.status == "ok"]
    latencies = (
        await connection.scalars(
            select(RequestRecordRow.latency_ms).where(*answered).order_by(RequestRecordRow.latency_ms)
        )
    ).all()
    ttfts = (
        await connection.scalars(
            select(RequestRecordRow.ttft_ms)
            .where(*answered, RequestRecordRow.ttft_ms.is_not(None))
            .order_by(RequestRecordRow.ttft_ms)
        )
    ).all()
    values = dict(totals._mapping)
    ttft_values = [value for value in ttfts if value is not None]
    values["p50_latency_ms"] = percentile_cont(latencies, 0.5)
    values["p95_latency_ms"] = percentile_cont(latencies, 0.95)
    values["p50_ttft_ms"] = percentile_cont(ttft_values, 0.5)
    values["p95_ttft_ms"] = percentile_cont(ttft_values, 0.95)
    return _stats_of(version, values)


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return float(ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower))


def _stats_of(version: str, values: Mapping[str, Any]) -> WindowStats:
    def number(key: str) -> float | None:
        value = values.get(key)
        return float(value) if value is not None else None

    return WindowStats(
        version=version,
        requests=int(values["requests"] or 0),
        errors=int(values["errors"] or 0),
        scored=int(values["scored"] or 0),
        avg_quality=number("avg_quality"),
        p50_latency_ms=number("p50_latency_ms"),
        p95_latency_ms=number("p95_latency_ms"),
        p50_ttft_ms=number("p50_ttft_ms"),
        p95_ttft_ms=number("p95_ttft_ms"),
        avg_cost=number("avg_cost"),
        total_cost=number("total_cost"),
        avg_prompt_tokens=number("avg_prompt_tokens"),
        avg_completion_tokens=number("avg_completion_tokens"),
    )
