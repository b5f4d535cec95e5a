"""Read-only analytics over request records: a version's window numbers and time series.

PostgreSQL computes percentiles in SQL (`percentile_cont`); SQLite has no
percentile function, so its percentiles are interpolated in Python over the
window's sorted values with the same definition (SQLite serves one node's
scale). The per-dialect parts are one class each, chosen once per engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, and_, any_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.analysis.evidence import ArmEvidence, Evidence, LatencyThresholds, Sums, percentile_cont
from gateway.models import WindowStats
from gateway.policy import RolloutPolicy
from gateway.store.engine import Database, translated_errors
from gateway.tables import QualityScoreRow, RequestRecordRow

_COUNTED = RequestRecordRow.status != "client_cancelled"
_ANSWERED = RequestRecordRow.status == "ok"


class EvidenceStore(Database):
    """The numbers the rollout checks, the compare view and the dashboard read."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._sql: _DialectSQL = _PostgresSQL() if self.dialect.postgresql else _SqliteSQL()

    async def window_stats(self, *, deployment: str, version: str, since: datetime) -> WindowStats:
        """One version's numbers since `since` (see WindowStats for what counts)."""
        window = _window(deployment, version, since)
        async with translated_errors(), self.engine.connect() as connection:
            stats = _stats_of(version, await self._sql.window_numbers(connection, window))
            if not stats.scored:
                return stats
            # Start from the window's scored calls and look their scores up by index; a join
            # would scan every score ever stored (measured on 10M records: 150 ms vs 10 ms).
            scored = select(RequestRecordRow.id).where(*window, _COUNTED, RequestRecordRow.quality.is_not(None))
            by_source = await connection.execute(
                select(QualityScoreRow.source, func.avg(QualityScoreRow.score), func.count())
                .where(self._sql.scores_of(scored))
                .group_by(QualityScoreRow.source)
            )
            return replace(stats, quality_by_source={source: (float(avg), int(n)) for source, avg, n in by_source})

    async def stage_evidence(self, *, deployment: str, stable: str, canary: str, since: datetime, until: datetime,
                             policy: RolloutPolicy) -> Evidence:
        """Both versions' per-user evidence over [since, until) on a connection of its own (see `stage_evidence_on`)."""
        async with translated_errors(), self.engine.connect() as connection:
            return await self.stage_evidence_on(connection, deployment=deployment, stable=stable, canary=canary,
                                                since=since, until=until, policy=policy)

    async def stage_evidence_on(self, connection: AsyncConnection, *, deployment: str, stable: str, canary: str,
                                since: datetime, until: datetime, policy: RolloutPolicy) -> Evidence:
        """What a rollout check judges: both versions over [since, until), summed per user in SQL.

        The same numbers as `gateway.analysis.evidence_from_records` over the
        same rows (a test holds them equal on SQLite and PostgreSQL): one
        query for stable's p95 (`latency_reference`), one GROUP BY user_hash
        per version for the calls, one per version and source for the
        quality scores. Anonymous and client-cancelled calls are left out.
        Runs on `connection`, so the rollout check reads under its lock.
        """
        answered_stable = [RequestRecordRow.deployment == deployment, RequestRecordRow.version == stable, _ANSWERED]
        baseline_since = since - timedelta(seconds=policy.latency_baseline)
        count, p95 = await self._sql.p95(connection, [*answered_stable, RequestRecordRow.created_at >= baseline_since,
                                                      RequestRecordRow.created_at < since])
        if count < policy.min_requests:
            count, p95 = await self._sql.p95(connection, [*answered_stable, RequestRecordRow.created_at >= since,
                                                          RequestRecordRow.created_at < until])
        thresholds = LatencyThresholds.of(p95, policy) if p95 is not None else None
        stage = [RequestRecordRow.deployment == deployment, RequestRecordRow.version.in_((stable, canary)),
                 RequestRecordRow.created_at >= since, RequestRecordRow.created_at < until,
                 RequestRecordRow.user_hash.is_not(None), _COUNTED]
        per_user = select(RequestRecordRow.version, RequestRecordRow.user_hash,
                          *_per_user_columns(thresholds)).where(*stage).group_by(
            RequestRecordRow.version, RequestRecordRow.user_hash).subquery()
        outer = [per_user.c.version, func.count().label("users"), func.sum(per_user.c.n).label("calls"),
                 func.sum(per_user.c.actual_cost).label("actual_cost")]
        for name, (x, y) in _PAIRS.items():
            outer.extend(_sums_columns(name, per_user.c[x], per_user.c[y]))
        rows: dict[str, Any] = {row.version: row._mapping
                for row in await connection.execute(select(*outer).group_by(per_user.c.version))}
        scores = (
            select(RequestRecordRow.version, RequestRecordRow.user_hash, QualityScoreRow.source,
                   func.count().label("m"), func.sum(QualityScoreRow.score).label("q"))
            .select_from(QualityScoreRow)
            .join(RequestRecordRow, RequestRecordRow.id == QualityScoreRow.request_id)
            .where(*stage)
            .group_by(RequestRecordRow.version, RequestRecordRow.user_hash, QualityScoreRow.source)
            .subquery()
        )
        sources: dict[str, dict[str, Sums]] = {stable: {}, canary: {}}
        for row in await connection.execute(
            select(scores.c.version, scores.c.source, *_sums_columns("s", scores.c.m, scores.c.q))
            .group_by(scores.c.version, scores.c.source)
        ):
            sources[row.version][row.source] = _sums_of(row._mapping, "s")

        movers = (
            select(RequestRecordRow.user_hash).where(*stage).group_by(RequestRecordRow.user_hash)
            .having(func.count(func.distinct(RequestRecordRow.version)) == 2).subquery()
        )
        users_in_both = int(await connection.scalar(select(func.count()).select_from(movers)) or 0)

        def arm(version: str) -> ArmEvidence:
            row = rows.get(version)
            if row is None:
                return ArmEvidence(version=version)
            return ArmEvidence(
                version=version, users=int(row["users"]), calls=int(row["calls"] or 0),
                errors=_sums_of(row, "errors"), quality=_sums_of(row, "quality"), slow=_sums_of(row, "slow"),
                slow_reference=_sums_of(row, "slow_reference"), slow_rollback=_sums_of(row, "slow_rollback"),
                cost=_sums_of(row, "cost"), actual_cost=float(row["actual_cost"] or 0.0), sources=sources[version],
            )

        return Evidence(stable=arm(stable), canary=arm(canary), since=since, until=until, latency=thresholds,
                        users_in_both=users_in_both)

    async def timeseries(
        self, *, deployment: str, since: datetime, step_s: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Per version, one point per `step_s` bucket since `since`: traffic, errors, p95 latency, quality, cost.

        Each point: `t` (ISO 8601 start of the bucket, UTC), `requests`,
        `errors`, `error_rate`, `p95_latency_ms`, `avg_quality`, `avg_cost`
        (USD per call). Buckets without calls are absent; the chart draws gaps.
        """
        step = max(int(step_s), 1)
        bucket = self._sql.bucket(step).label("bucket")
        columns = [
            bucket,
            RequestRecordRow.version,
            func.count().filter(_COUNTED).label("requests"),
            func.count().filter(RequestRecordRow.status == "error").label("errors"),
            func.avg(RequestRecordRow.quality).filter(_COUNTED).label("avg_quality"),
            func.avg(RequestRecordRow.cost_usd).filter(_COUNTED).label("avg_cost_usd"),
        ]
        window = [RequestRecordRow.deployment == deployment, RequestRecordRow.created_at >= since]
        async with translated_errors(), self.engine.connect() as connection:
            rows = (await connection.execute(
                select(*columns, *self._sql.bucket_p95())
                .where(*window)
                .group_by(bucket, RequestRecordRow.version)
                .order_by(bucket)
            )).all()
            p95s = await self._sql.p95_by_bucket(connection, bucket, window, rows)
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            point = int(row.bucket)
            requests = int(row.requests)
            p95 = p95s.get((point, row.version))
            series.setdefault(row.version, []).append({
                "t": datetime.fromtimestamp(point * step, UTC).isoformat(),
                "requests": requests,
                "errors": int(row.errors),
                "error_rate": row.errors / requests if requests else None,
                "p95_latency_ms": float(p95) if p95 is not None else None,
                "avg_quality": float(row.avg_quality) if row.avg_quality is not None else None,
                "avg_cost": float(row.avg_cost_usd) if row.avg_cost_usd is not None else None,
            })
        return series


class _DialectSQL(ABC):
    """The parts of the evidence queries that differ between PostgreSQL and SQLite."""

    @abstractmethod
    async def p95(self, connection: AsyncConnection, where: list[Any]) -> tuple[int, float | None]:
        """How many records match `where`, and the p95 (percentile_cont) of their latency_ms."""

    @abstractmethod
    async def window_numbers(self, connection: AsyncConnection, window: list[Any]) -> dict[str, Any]:
        """The aggregates of `_aggregates()` plus the four latency/TTFT percentiles over `window`."""

    @abstractmethod
    def scores_of(self, scored: Any) -> Any:
        """A condition on quality_scores: its call id is one of the ids `scored` selects."""

    @abstractmethod
    def bucket(self, step: int) -> Any:
        """The bucket number of a record: its creation time in seconds since the epoch, over `step`."""

    def bucket_p95(self) -> list[Any]:
        """Columns computing each bucket's p95 latency in SQL, labelled `p95`; none if it cannot."""
        return []

    @abstractmethod
    async def p95_by_bucket(
        self, connection: AsyncConnection, bucket: Any, window: list[Any], rows: Sequence[Any]
    ) -> dict[tuple[int, str], float | None]:
        """(bucket, version) → p95 latency in milliseconds of the answered calls."""


class _PostgresSQL(_DialectSQL):
    async def p95(self, connection: AsyncConnection, where: list[Any]) -> tuple[int, float | None]:
        row = (await connection.execute(
            select(func.count(), _percentile(0.95, RequestRecordRow.latency_ms)).where(*where))).one()
        return int(row[0]), float(row[1]) if row[1] is not None else None

    async def window_numbers(self, connection: AsyncConnection, window: list[Any]) -> dict[str, Any]:
        row = (
            await connection.execute(
                select(
                    *_aggregates(),
                    _percentile(0.5, RequestRecordRow.latency_ms).filter(_ANSWERED).label("p50_latency_ms"),
                    _percentile(0.95, RequestRecordRow.latency_ms).filter(_ANSWERED).label("p95_latency_ms"),
                    _percentile(0.5, RequestRecordRow.ttft_ms).filter(_ANSWERED).label("p50_ttft_ms"),
                    _percentile(0.95, RequestRecordRow.ttft_ms).filter(_ANSWERED).label("p95_ttft_ms"),
                ).where(*window)
            )
        ).one()
        return dict(row._mapping)

    def scores_of(self, scored: Any) -> Any:
        return QualityScoreRow.request_id == any_(func.array(scored.scalar_subquery()))

    def bucket(self, step: int) -> Any:
        return func.floor(func.extract("epoch", RequestRecordRow.created_at) / step)

    def bucket_p95(self) -> list[Any]:
        return [_percentile(0.95, RequestRecordRow.latency_ms).filter(_ANSWERED).label("p95")]

    async def p95_by_bucket(
        self, connection: AsyncConnection, bucket: Any, window: list[Any], rows: Sequence[Any]
    ) -> dict[tuple[int, str], float | None]:
        return {(int(row.bucket), row.version): row.p95 for row in rows}


class _SqliteSQL(_DialectSQL):
    async def p95(self, connection: AsyncConnection, where: list[Any]) -> tuple[int, float | None]:
        latencies = (await connection.scalars(
            select(RequestRecordRow.latency_ms).where(*where).order_by(RequestRecordRow.latency_ms))).all()
        return len(latencies), percentile_cont(latencies, 0.95)

    async def window_numbers(self, connection: AsyncConnection, window: list[Any]) -> dict[str, Any]:
        totals = (await connection.execute(select(*_aggregates()).where(*window))).one()
        answered = [*window, _ANSWERED]
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
        return values

    def scores_of(self, scored: Any) -> Any:
        return QualityScoreRow.request_id.in_(scored)

    def bucket(self, step: int) -> Any:
        return func.cast(func.strftime("%s", RequestRecordRow.created_at), Integer) / step

    async def p95_by_bucket(
        self, connection: AsyncConnection, bucket: Any, window: list[Any], rows: Sequence[Any]
    ) -> dict[tuple[int, str], float | None]:
        latencies: dict[tuple[int, str], list[float]] = {}
        for point, version, latency in await connection.execute(
            select(bucket, RequestRecordRow.version, RequestRecordRow.latency_ms)
            .where(*window, _ANSWERED)
            .order_by(RequestRecordRow.latency_ms)
        ):
            latencies.setdefault((int(point), version), []).append(latency)
        return {key: percentile_cont(values, 0.95) for key, values in latencies.items()}


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
        func.avg(RequestRecordRow.cost_usd).filter(_COUNTED).label("avg_cost_usd"),
        func.sum(RequestRecordRow.cost_usd).filter(_COUNTED).label("total_cost_usd"),
        func.avg(RequestRecordRow.prompt_tokens).filter(_COUNTED).label("avg_prompt_tokens"),
        func.avg(RequestRecordRow.completion_tokens).filter(_COUNTED).label("avg_completion_tokens"),
    ]


def _percentile(fraction: float, column: Any) -> Any:
    return func.percentile_cont(fraction).within_group(column.asc())


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
        avg_cost_usd=number("avg_cost_usd"),
        total_cost_usd=number("total_cost_usd"),
        avg_prompt_tokens=number("avg_prompt_tokens"),
        avg_completion_tokens=number("avg_completion_tokens"),
    )


# Ratio metrics of the evidence: name → (denominator, numerator) columns of the per-user subquery.
_PAIRS = {
    "errors": ("n", "e"),
    "quality": ("m", "q"),
    "slow": ("a", "s1"),
    "slow_reference": ("a", "s0"),
    "slow_rollback": ("a", "s2"),
    "cost": ("k", "c"),
}


def _per_user_columns(thresholds: LatencyThresholds | None) -> list[Any]:
    record = RequestRecordRow
    neutral = func.coalesce(record.uncached_cost_usd, record.cost_usd)

    def count_if(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    def slower(limit: float | None) -> Any:
        if limit is None:
            return literal(0)
        return count_if(and_(_ANSWERED, record.latency_ms > limit))

    return [
        func.count().label("n"),
        count_if(record.status == "error").label("e"),
        count_if(_ANSWERED).label("a"),
        slower(thresholds.gate_ms if thresholds else None).label("s1"),
        slower(thresholds.reference_ms if thresholds else None).label("s0"),
        slower(thresholds.rollback_ms if thresholds else None).label("s2"),
        func.count(neutral).label("k"),
        func.coalesce(func.sum(neutral), 0.0).label("c"),
        func.coalesce(func.sum(func.coalesce(record.cost_usd, neutral)), 0.0).label("actual_cost"),
        func.count(record.quality).label("m"),
        func.coalesce(func.sum(record.quality), 0.0).label("q"),
    ]


def _sums_columns(name: str, x: Any, y: Any) -> list[Any]:
    """Σ over users of x, y, x², y², x·y and the users with x > 0, as floats."""
    fx, fy = cast(x, Float), cast(y, Float)
    return [
        func.sum(case((x > 0, 1), else_=0)).label(f"{name}_units"),
        func.sum(fx).label(f"{name}_x"),
        func.sum(fy).label(f"{name}_y"),
        func.sum(fx * fx).label(f"{name}_xx"),
        func.sum(fy * fy).label(f"{name}_yy"),
        func.sum(fx * fy).label(f"{name}_xy"),
    ]


def _sums_of(row: Any, name: str) -> Sums:
    def number(key: str) -> float:
        value = row[f"{name}_{key}"]
        return float(value) if value is not None else 0.0

    return Sums(int(number("units")), number("x"), number("y"), number("xx"), number("yy"), number("xy"))
