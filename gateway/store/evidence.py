"""Read-only analytics: a version's window numbers, time series, and a stage's per-user evidence.

Shadow copies (`mode = shadow`, the shadow stage's calls answered to no one)
are never a version's production traffic: the aggregates leave them out, and
they are read only as pairs (`shadow_evidence_on`) and as the copies' own
window numbers (`shadow_window_stats`), from the raw records (bounded by
`shadow.max_per_minute`).

Everything is read from the aggregates the record writer keeps
(`gateway.store.aggregates`), so the cost of a query follows the minutes in
its window (compare, time series) or the users in the stage (a check), not
the number of calls. Windows start at the minute boundary at or before
`since`; latency percentiles come from the merged minute histograms, within
`gateway.analysis.histogram.ALPHA` (1 %) of the exact ones.

A stage whose latency thresholds are not known yet (no baseline before it,
and fewer than `min_requests` answered stable calls so far) is judged from its
raw records, as few as they are; the first rollout check with enough of them
fixes the thresholds (`gateway.store.aggregates.fix_thresholds`). Raw
percentiles are PostgreSQL's `percentile_cont`, or the same definition in
Python on SQLite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, and_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from gateway.analysis.evidence import ArmEvidence, Evidence, LatencyThresholds, Sums, percentile_cont
from gateway.analysis.histogram import percentile
from gateway.analysis.shadow import PAIRWISE_SOURCE, ShadowEvidence, ShadowPair, shadow_evidence_from_pairs
from gateway.errors import Conflict
from gateway.models import RequestRecord, WindowStats
from gateway.policy import RolloutPolicy
from gateway.store.aggregates import Stage, fix_thresholds, minute_of, read_stage
from gateway.store.engine import Database, translated_errors
from gateway.tables import (
    HourLatencyRow,
    MinuteLatencyRow,
    MinuteSourceRow,
    MinuteStatsRow,
    QualityScoreRow,
    RequestRecordRow,
    StageVersionSourcesRow,
    StageVersionSumsRow,
)

_COUNTED = RequestRecordRow.status != "client_cancelled"
_ANSWERED = RequestRecordRow.status == "ok"
# Calls served to users: shadow copies (answered to no one) are never a version's production traffic.
_LIVE = RequestRecordRow.mode == "live"
_RECORD_FIELDS = tuple(field.name for field in fields(RequestRecord))


class EvidenceStore(Database):
    """The numbers the rollout checks, the compare view and the dashboard read."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._sql: _DialectSQL = _PostgresSQL() if self.dialect.postgresql else _SqliteSQL()

    async def window_stats(self, *, deployment: str, version: str, since: datetime) -> WindowStats:
        """One version's numbers from the minute of `since` on (see WindowStats for what counts)."""
        minutes = MinuteStatsRow
        window = [minutes.deployment == deployment, minutes.version == version, minutes.minute >= minute_of(since)]
        names = ("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls",
                 "prompt_tokens", "completion_calls", "completion_tokens")
        latency = MinuteLatencyRow
        sources = MinuteSourceRow
        async with translated_errors(), self.engine.connect() as connection:
            row = (await connection.execute(
                select(*(func.sum(getattr(minutes, name)) for name in names)).where(*window))).one()
            histograms: dict[str, dict[int, int]] = {"latency": {}, "ttft": {}}
            # The minutes before the first whole hour, then the hours: a day is ~24 rows per bucket, not 1,440.
            first, hour = minute_of(since), _hour_after(since)
            hours = HourLatencyRow
            parts = (
                select(latency.metric, latency.bucket, latency.calls)
                .where(latency.deployment == deployment, latency.version == version, latency.minute >= first,
                       latency.minute < hour),
                select(hours.metric, hours.bucket, hours.calls)
                .where(hours.deployment == deployment, hours.version == version, hours.hour >= hour),
            )
            for part in (query.subquery() for query in parts):
                for metric, bucket, calls in await connection.execute(
                        select(part.c.metric, part.c.bucket, func.sum(part.c.calls)).group_by(
                            part.c.metric, part.c.bucket)):
                    merged = histograms[metric]
                    merged[int(bucket)] = merged.get(int(bucket), 0) + int(calls)
            by_source = {
                source: (float(total) / int(count), int(count))
                for source, total, count in await connection.execute(
                    select(sources.source, func.sum(sources.score_sum), func.sum(sources.scores))
                    .where(sources.deployment == deployment, sources.version == version,
                           sources.minute >= minute_of(since))
                    .group_by(sources.source))
                if count
            }
        # Sums of BIGINT columns are NUMERIC on PostgreSQL: floats here, counts turned back into ints below.
        totals = dict(zip(names, (float(value or 0) for value in row), strict=True))

        def mean(total: str, count: str) -> float | None:
            return totals[total] / totals[count] if totals[count] else None

        return WindowStats(
            version=version,
            requests=int(totals["requests"]),
            errors=int(totals["errors"]),
            scored=int(totals["scored"]),
            avg_quality=mean("quality_sum", "scored"),
            p50_latency_ms=percentile(histograms["latency"], 0.5),
            p95_latency_ms=percentile(histograms["latency"], 0.95),
            p50_ttft_ms=percentile(histograms["ttft"], 0.5),
            p95_ttft_ms=percentile(histograms["ttft"], 0.95),
            avg_cost_usd=mean("cost_sum", "priced"),
            total_cost_usd=totals["cost_sum"] if totals["priced"] else None,
            avg_prompt_tokens=mean("prompt_tokens", "prompt_calls"),
            avg_completion_tokens=mean("completion_tokens", "completion_calls"),
            quality_by_source=by_source,
        )

    async def stage_evidence(self, *, deployment: str, stable: str, canary: str, since: datetime, until: datetime,
                             policy: RolloutPolicy) -> Evidence:
        """Both versions' per-user evidence of the stage started at `since`, on a connection of its own.

        Reads only (see `stage_evidence_on`, which a rollout check calls with `fix`).
        """
        async with translated_errors(), self.engine.connect() as connection:
            return await self.stage_evidence_on(connection, deployment=deployment, stable=stable, canary=canary,
                                                since=since, until=until, policy=policy)

    async def stage_evidence_on(self, connection: AsyncConnection, *, deployment: str, stable: str, canary: str,
                                since: datetime, until: datetime, policy: RolloutPolicy,
                                fix: bool = False) -> Evidence:
        """What a rollout check judges: both versions' calls in the stage started at `since`, summed per user.

        The same numbers as `gateway.analysis.evidence_from_records` over the
        stage's records written so far (`until` is the check's time; a test
        holds them equal on SQLite and PostgreSQL), read from the stage's
        version sums (the per-user sums summed over users as they change): a
        row per version and one per version and quality source, and the
        stage's count of users. Anonymous and client-cancelled
        calls are left out. The latency thresholds are the stage's (fixed
        when it started from stable's p95 before it); while they are unknown
        the evidence is computed from the raw records with stable's p95 over
        `policy.latency_baseline` before the stage, else in the stage so far
        (`latency_reference`), and with `fix` a check that finds
        `policy.min_requests` calls behind that p95 fixes them for the rest
        of the stage. Runs on `connection`, so the rollout check reads under
        its lock. Raises Conflict when `since` is not the start of the
        deployment's judged stage (the rollout changed meanwhile).
        """
        stage = await read_stage(connection, deployment)
        if stage is None or stage.started_at != since:
            raise Conflict(f"deployment '{deployment}' is no longer in the stage started at {since.isoformat()}")
        if stage.thresholds is None:
            count, reference = await self._raw_reference(connection, deployment=deployment, stable=stable,
                                                         since=since, until=until, policy=policy)
            thresholds = LatencyThresholds.of(reference, policy) if reference is not None else None
            if thresholds is None or count < policy.min_requests or not fix:
                return await self._raw_evidence(connection, deployment=deployment, stable=stable, canary=canary,
                                                since=since, until=until, thresholds=thresholds)
            stage = await fix_thresholds(connection, self.dialect, deployment=deployment, stage=stage,
                                         thresholds=thresholds)
        return await self._summed_evidence(connection, deployment=deployment, stable=stable, canary=canary,
                                           stage=stage, until=until)

    async def shadow_window_stats(self, *, deployment: str, version: str, since: datetime) -> WindowStats:
        """The numbers of `version`'s shadow copies since `since`, from their raw records (scores aside)."""
        window = [RequestRecordRow.deployment == deployment, RequestRecordRow.version == version,
                  RequestRecordRow.created_at >= since, RequestRecordRow.mode == "shadow"]
        async with translated_errors(), self.engine.connect() as connection:
            row = (await connection.execute(select(
                func.count().filter(_COUNTED), func.count().filter(RequestRecordRow.status == "error"),
                func.count(RequestRecordRow.cost_usd).filter(_COUNTED),
                func.sum(RequestRecordRow.cost_usd).filter(_COUNTED),
                func.avg(RequestRecordRow.prompt_tokens).filter(_COUNTED),
                func.avg(RequestRecordRow.completion_tokens).filter(_COUNTED),
            ).where(*window))).one()
            latencies = (await connection.scalars(
                select(RequestRecordRow.latency_ms).where(*window, _ANSWERED)
                .order_by(RequestRecordRow.latency_ms))).all()
        requests, errors, priced, spent, prompt, completion = row
        return WindowStats(
            version=version, requests=int(requests), errors=int(errors), scored=0, avg_quality=None,
            p50_latency_ms=percentile_cont(latencies, 0.5), p95_latency_ms=percentile_cont(latencies, 0.95),
            p50_ttft_ms=None, p95_ttft_ms=None,
            avg_cost_usd=float(spent) / int(priced) if priced else None,
            total_cost_usd=float(spent) if priced else None,
            avg_prompt_tokens=float(prompt) if prompt is not None else None,
            avg_completion_tokens=float(completion) if completion is not None else None,
        )

    async def shadow_evidence_on(self, connection: AsyncConnection, *, deployment: str, stable: str, canary: str,
                                 since: datetime, until: datetime, policy: RolloutPolicy) -> ShadowEvidence:
        """What a shadow-stage check judges: the pairs whose user's call (on `stable`) was made in [since, until).

        A pair is a shadow copy (`mode = shadow`, on `canary`) and the stable
        record it copies (`shadow_of`); each side's scores are averaged per
        source, and the copy's `pairwise` score is the judge's win score. The
        pairs are read row by row and summed by
        `gateway.analysis.shadow.shadow_evidence_from_pairs` (the function the
        tests use): shadow copies are bounded by `shadow.max_per_minute`, so a
        stage holds at most tens of thousands. Runs on `connection`.
        """
        copy, served = aliased(RequestRecordRow), aliased(RequestRecordRow)
        # A copy is made after its user's call began: with the deployment, that tells a client-chosen
        # request id used again at another time apart.
        pairs_where = [copy.deployment == deployment, copy.version == canary, copy.mode == "shadow",
                       copy.created_at >= since, served.deployment == deployment, served.version == stable,
                       served.created_at >= since, served.created_at < until,
                       served.created_at <= copy.created_at]
        columns = [getattr(served, name).label(f"s_{name}") for name in _RECORD_FIELDS]
        columns += [getattr(copy, name).label(f"c_{name}") for name in _RECORD_FIELDS]
        rows = (await connection.execute(
            select(*columns).select_from(copy).join(served, served.id == copy.shadow_of).where(*pairs_where)
        )).all()

        async def scores(side: Any) -> dict[str, dict[str, float]]:
            ids = select(side.id).select_from(copy).join(served, served.id == copy.shadow_of).where(*pairs_where)
            found: dict[str, dict[str, float]] = {}
            for request_id, source, score in await connection.execute(
                select(QualityScoreRow.request_id, QualityScoreRow.source, func.avg(QualityScoreRow.score))
                .where(QualityScoreRow.request_id.in_(ids))
                .group_by(QualityScoreRow.request_id, QualityScoreRow.source)
            ):
                found.setdefault(request_id, {})[source] = float(score)
            return found

        stable_scores, canary_scores = await scores(served), await scores(copy)
        pairs = []
        for row in rows:
            values = row._mapping
            pair_stable = RequestRecord(**{name: values[f"s_{name}"] for name in _RECORD_FIELDS})
            pair_canary = RequestRecord(**{name: values[f"c_{name}"] for name in _RECORD_FIELDS})
            judged = dict(canary_scores.get(pair_canary.id, {}))
            win = judged.pop(PAIRWISE_SOURCE, None)
            pairs.append(ShadowPair(pair_stable, pair_canary, stable_scores.get(pair_stable.id, {}), judged, win))
        return shadow_evidence_from_pairs(pairs, since=since, until=until, policy=policy)

    async def timeseries(
        self, *, deployment: str, since: datetime, step_s: int
    ) -> dict[str, list[dict[str, Any]]]:
        """Per version, one point per `step_s` bucket (a multiple of 60) from the minute of `since` on.

        Each point: `t` (ISO 8601 start of the bucket, UTC), `requests`,
        `errors`, `error_rate`, `p95_latency_ms`, `avg_quality`, `avg_cost`
        (USD per call). Buckets without calls are absent; the chart draws gaps.
        """
        step = max(int(step_s), 60)
        minutes = MinuteStatsRow
        point = self._sql.point(minutes.minute, step).label("point")
        async with translated_errors(), self.engine.connect() as connection:
            rows = (await connection.execute(
                select(point, minutes.version, func.sum(minutes.requests).label("requests"),
                       func.sum(minutes.errors).label("errors"), func.sum(minutes.scored).label("scored"),
                       func.sum(minutes.quality_sum).label("quality_sum"), func.sum(minutes.priced).label("priced"),
                       func.sum(minutes.cost_sum).label("cost_sum"))
                .where(minutes.deployment == deployment, minutes.minute >= minute_of(since))
                .group_by(point, minutes.version)
                .order_by(point)
            )).all()
            latency = MinuteLatencyRow
            latency_point = self._sql.point(latency.minute, step)
            histograms: dict[tuple[int, str], dict[int, int]] = {}
            for at, version, bucket, calls in await connection.execute(
                select(latency_point, latency.version, latency.bucket, func.sum(latency.calls))
                .where(latency.deployment == deployment, latency.minute >= minute_of(since),
                       latency.metric == "latency")
                .group_by(latency_point, latency.version, latency.bucket)):
                histograms.setdefault((int(at), version), {})[int(bucket)] = int(calls)
        series: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            at = int(row.point)
            requests, errors, scored, priced = int(row.requests), int(row.errors), int(row.scored), int(row.priced)
            series.setdefault(row.version, []).append({
                "t": datetime.fromtimestamp(at * step, UTC).isoformat(),
                "requests": requests,
                "errors": errors,
                "error_rate": errors / requests if requests else None,
                "p95_latency_ms": percentile(histograms.get((at, row.version), {}), 0.95),
                "avg_quality": float(row.quality_sum) / scored if scored else None,
                "avg_cost": float(row.cost_sum) / priced if priced else None,
            })
        return series

    async def _summed_evidence(self, connection: AsyncConnection, *, deployment: str, stable: str, canary: str,
                               stage: Stage, until: datetime) -> Evidence:
        """From the stage's version sums: a few rows, whatever the users and calls."""
        versions = StageVersionSumsRow
        rows = {row.version: row._mapping for row in await connection.execute(
            select(versions).where(versions.deployment == deployment, versions.started_at == stage.started_at,
                                   versions.version.in_((stable, canary))))}
        sources = StageVersionSourcesRow
        by_source: dict[str, dict[str, Sums]] = {stable: {}, canary: {}}
        for row in await connection.execute(
            select(sources).where(sources.deployment == deployment, sources.started_at == stage.started_at,
                                  sources.version.in_((stable, canary)))):
            by_source[row.version][row.source] = _sums_of(row._mapping, "s")
        # Users of both = users of each, less the users of either (counted once each as they arrived).
        both = sum(int(rows[version]["users"]) for version in (stable, canary) if version in rows) - stage.users
        if (stage.stable, stage.canary) != (stable, canary):
            both = 0  # the stage counts the users of other versions: no such figure for these
        return _evidence(rows, by_source, stable=stable, canary=canary, since=stage.started_at, until=until,
                         thresholds=stage.thresholds, users_in_both=max(both, 0))

    async def _raw_reference(self, connection: AsyncConnection, *, deployment: str, stable: str, since: datetime,
                             until: datetime, policy: RolloutPolicy) -> tuple[int, float | None]:
        """Stable's answered calls behind its p95 latency, and that p95: over the baseline, else the stage so far."""
        answered_stable = [RequestRecordRow.deployment == deployment, RequestRecordRow.version == stable, _ANSWERED,
                           _LIVE]
        baseline_since = since - timedelta(seconds=policy.latency_baseline)
        count, p95 = await self._sql.p95(connection, [*answered_stable, RequestRecordRow.created_at >= baseline_since,
                                                      RequestRecordRow.created_at < since])
        if count < policy.min_requests:
            count, p95 = await self._sql.p95(connection, [*answered_stable, RequestRecordRow.created_at >= since,
                                                          RequestRecordRow.created_at < until])
        return count, p95

    async def _raw_evidence(self, connection: AsyncConnection, *, deployment: str, stable: str, canary: str,
                            since: datetime, until: datetime, thresholds: LatencyThresholds | None) -> Evidence:
        """The evidence summed per user in SQL from the stage's raw records (a stage without thresholds yet)."""
        stage = [RequestRecordRow.deployment == deployment, RequestRecordRow.version.in_((stable, canary)),
                 RequestRecordRow.created_at >= since, RequestRecordRow.created_at < until,
                 RequestRecordRow.user_hash.is_not(None), _COUNTED, _LIVE]
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
        return _evidence(rows, sources, stable=stable, canary=canary, since=since, until=until,
                         thresholds=thresholds, users_in_both=users_in_both)


def _hour_after(moment: datetime) -> datetime:
    """The first whole hour (UTC) at or after the minute of `moment`."""
    minute = minute_of(moment)
    hour = minute.replace(minute=0)
    return hour if hour == minute else hour + timedelta(hours=1)


def _evidence(rows: Mapping[str, Any], sources: Mapping[str, Mapping[str, Sums]], *, stable: str, canary: str,
              since: datetime, until: datetime, thresholds: LatencyThresholds | None,
              users_in_both: int) -> Evidence:
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


class _DialectSQL(ABC):
    """The parts of the queries that differ between PostgreSQL and SQLite."""

    @abstractmethod
    async def p95(self, connection: AsyncConnection, where: list[Any]) -> tuple[int, float | None]:
        """How many records match `where`, and the p95 (percentile_cont) of their latency_ms."""

    @abstractmethod
    def point(self, minute: Any, step: int) -> Any:
        """The time-series point of a minute column: its seconds since the epoch, over `step`."""


class _PostgresSQL(_DialectSQL):
    async def p95(self, connection: AsyncConnection, where: list[Any]) -> tuple[int, float | None]:
        row = (await connection.execute(
            select(func.count(), _percentile(0.95, RequestRecordRow.latency_ms)).where(*where))).one()
        return int(row[0]), float(row[1]) if row[1] is not None else None

    def point(self, minute: Any, step: int) -> Any:
        return func.floor(func.extract("epoch", minute) / step)


class _SqliteSQL(_DialectSQL):
    async def p95(self, connection: AsyncConnection, where: list[Any]) -> tuple[int, float | None]:
        latencies = (await connection.scalars(
            select(RequestRecordRow.latency_ms).where(*where).order_by(RequestRecordRow.latency_ms))).all()
        return len(latencies), percentile_cont(latencies, 0.95)

    def point(self, minute: Any, step: int) -> Any:
        return cast(func.strftime("%s", minute), Integer) // step


def _percentile(fraction: float, column: Any) -> Any:
    return func.percentile_cont(fraction).within_group(column.asc())


# Ratio metrics of the evidence: name → (denominator, numerator) columns of the raw records' per-user subquery.
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
