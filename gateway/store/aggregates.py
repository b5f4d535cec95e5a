"""Aggregates kept in the transaction that writes the records: what checks, compare and charts read.

Two families of sums (tables in `gateway.tables`), each a batch adds to:

- per deployment, version and minute (`minute_stats`, `minute_sources`,
  `minute_latency`): what `compare`, the time series and the dashboard read;
  latency as a mergeable histogram (`gateway.analysis.histogram`);
- per user of the stage a rollout check judges (`stage_user_sums`,
  `stage_source_sums`, keyed by the stage's start in `rollout_stages`): the
  per-user sums of `gateway.analysis.evidence`, so a check reads one row per
  user instead of every call.

Exactly once. The writer aggregates only the rows its INSERT actually
inserted (`ON CONFLICT DO NOTHING ... RETURNING`), so a batch written again
(a retry after a lost acknowledgement, a replayed spool file) adds nothing;
a call's quality that changes when a score arrives adds the difference. The
sums of a batch are computed here in Python (`Tally`); rebuilding a stage
from stored records (`open_stage`, `fix_thresholds`) and the migrations'
backfill compute the same sums in SQL.

Which stage a record counts in: the stage of its deployment read in the
writer's transaction, when the record was created at or after its start (a
late record of an earlier stage counts in no stage; that stage was already
judged). On PostgreSQL every writer holds a shared advisory lock per
deployment (namespace STAGE_LOCK) from before it reads the stage until it
commits; a stage change takes it exclusively and rebuilds the new stage's
sums from the records stored by then, so each record is counted by exactly
one of the two. SQLite serializes write transactions (`BEGIN IMMEDIATE`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Float, Integer, and_, case, cast, delete, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.analysis.evidence import LatencyThresholds
from gateway.analysis.histogram import bucket_of, merge, percentile
from gateway.models import RecordStatus
from gateway.policy import RolloutPolicy
from gateway.store.engine import Dialect
from gateway.tables import (
    MinuteLatencyRow,
    MinuteSourceRow,
    MinuteStatsRow,
    QualityScoreRow,
    RequestRecordRow,
    RolloutStageRow,
    StageSourceSumsRow,
    StageUserSumsRow,
)

# Advisory-lock namespace of the stages' per-user sums ("CGTS"): writers share it, stage changes take it alone.
STAGE_LOCK = 0x43475453

_MINUTE_FIELDS = ("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls",
                  "prompt_tokens", "completion_calls", "completion_tokens")
_USER_FIELDS = ("calls", "errors", "answered", "slow_gate", "slow_reference", "slow_rollback", "priced", "cost",
                "actual_cost", "scored", "quality")
_SOURCE_FIELDS = ("scores", "score_sum")


@dataclass(frozen=True, slots=True)
class Stage:
    """The judged stage of a deployment: its start and latency thresholds (ms; None until known)."""

    started_at: datetime
    reference_ms: float | None = None
    gate_ms: float | None = None
    rollback_ms: float | None = None

    @property
    def thresholds(self) -> LatencyThresholds | None:
        if self.reference_ms is None or self.gate_ms is None:
            return None
        return LatencyThresholds(self.reference_ms, self.gate_ms, self.rollback_ms)


@dataclass(frozen=True, slots=True)
class Fact:
    """What the aggregates read of one stored call."""

    deployment: str
    version: str
    user_hash: str | None
    created_at: datetime
    status: RecordStatus
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    uncached_cost_usd: float | None
    quality: float | None

    @property
    def counted(self) -> bool:
        return self.status != "client_cancelled"

    def minute(self) -> datetime:
        return minute_of(self.created_at)

    def in_stage(self, stage: Stage | None) -> bool:
        return (stage is not None and self.user_hash is not None and self.counted
                and self.created_at >= stage.started_at)


FACT_COLUMNS = tuple(RequestRecordRow.__table__.c[name] for name in Fact.__dataclass_fields__)


def minute_of(moment: datetime) -> datetime:
    """The UTC minute a moment falls in."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


class Tally:
    """The changes a batch makes to every aggregate, summed in memory, then written in one go."""

    def __init__(self) -> None:
        self.minutes: dict[tuple[str, str, datetime], list[Any]] = {}
        self.minute_sources: dict[tuple[str, str, datetime, str], list[Any]] = {}
        self.latency: dict[tuple[str, str, datetime, str, int], int] = {}
        self.users: dict[tuple[str, datetime, str, str], list[Any]] = {}
        self.user_sources: dict[tuple[str, datetime, str, str, str], list[Any]] = {}

    def add_record(self, fact: Fact, stage: Stage | None) -> None:
        """A newly stored call: every sum it belongs to."""
        minute = fact.minute()
        row = self._minute(fact, minute)
        if fact.counted:
            row[0] += 1
            if fact.quality is not None:
                row[2] += 1
                row[3] += fact.quality
            if fact.cost_usd is not None:
                row[4] += 1
                row[5] += fact.cost_usd
            if fact.prompt_tokens is not None:
                row[6] += 1
                row[7] += fact.prompt_tokens
            if fact.completion_tokens is not None:
                row[8] += 1
                row[9] += fact.completion_tokens
        if fact.status == "error":
            row[1] += 1
        if fact.status == "ok":
            self._count_latency(fact, minute, "latency", fact.latency_ms)
            if fact.ttft_ms is not None:
                self._count_latency(fact, minute, "ttft", fact.ttft_ms)
        if stage is None or not fact.in_stage(stage):
            return
        user = self._user(fact, stage)
        user[0] += 1
        user[1] += fact.status == "error"
        if fact.status == "ok":
            user[2] += 1
            user[3] += stage.gate_ms is not None and fact.latency_ms > stage.gate_ms
            user[4] += stage.reference_ms is not None and fact.latency_ms > stage.reference_ms
            user[5] += stage.rollback_ms is not None and fact.latency_ms > stage.rollback_ms
        neutral = fact.uncached_cost_usd if fact.uncached_cost_usd is not None else fact.cost_usd
        if neutral is not None:
            user[6] += 1
            user[7] += neutral
            user[8] += fact.cost_usd if fact.cost_usd is not None else neutral
        if fact.quality is not None:
            user[9] += 1
            user[10] += fact.quality

    def change_quality(self, fact: Fact, before: float | None, after: float | None, stage: Stage | None) -> None:
        """A stored call whose quality went from `before` to `after` (`fact` may hold either)."""
        if not fact.counted or before == after:
            return
        scored = (after is not None) - (before is not None)
        change = (after or 0.0) - (before or 0.0)
        row = self._minute(fact, fact.minute())
        row[2] += scored
        row[3] += change
        if stage is not None and fact.in_stage(stage):
            user = self._user(fact, stage)
            user[9] += scored
            user[10] += change

    def add_score(self, fact: Fact, source: str, score: float, stage: Stage | None) -> None:
        """A score of a stored call, counted once: when the score or the call is stored, whichever is later."""
        if not fact.counted:
            return
        key = (fact.deployment, fact.version, fact.minute(), source)
        row = self.minute_sources.setdefault(key, [0, 0.0])
        row[0] += 1
        row[1] += score
        if stage is not None and fact.in_stage(stage):
            assert fact.user_hash is not None
            user_key = (fact.deployment, stage.started_at, fact.version, fact.user_hash, source)
            user_row = self.user_sources.setdefault(user_key, [0, 0.0])
            user_row[0] += 1
            user_row[1] += score

    async def write(self, connection: AsyncConnection, dialect: Dialect) -> None:
        """Add the tally to the tables: one statement per table, rows in key order (no deadlock between writers)."""
        tables: list[tuple[Any, tuple[str, ...], tuple[str, ...], Iterable[tuple[Any, Sequence[Any]]]]] = [
            (MinuteStatsRow, ("deployment", "version", "minute"), _MINUTE_FIELDS, self.minutes.items()),
            (MinuteSourceRow, ("deployment", "version", "minute", "source"), _SOURCE_FIELDS,
             self.minute_sources.items()),
            (MinuteLatencyRow, ("deployment", "version", "minute", "metric", "bucket"), ("calls",),
             ((key, (count,)) for key, count in self.latency.items())),
            (StageUserSumsRow, ("deployment", "started_at", "version", "user_hash"), _USER_FIELDS,
             self.users.items()),
            (StageSourceSumsRow, ("deployment", "started_at", "version", "user_hash", "source"), _SOURCE_FIELDS,
             self.user_sources.items()),
        ]
        for table, keys, fields, items in tables:
            ordered = sorted(items, key=lambda item: item[0])
            if not ordered:
                continue
            if dialect.postgresql:
                # One statement over arrays: a round trip and a plan for the whole batch.
                columns = tuple(list(column) for column in zip(*(key + tuple(values) for key, values in ordered),
                                                                  strict=True))
                await connection.exec_driver_sql(_adding_arrays(table, keys, fields), columns)
            else:
                rows = [{**dict(zip(keys, key, strict=True)), **dict(zip(fields, values, strict=True))}
                        for key, values in ordered]
                await connection.execute(_adding(dialect, table, keys, fields), rows)

    def _minute(self, fact: Fact, minute: datetime) -> list[Any]:
        key = (fact.deployment, fact.version, minute)
        row = self.minutes.get(key)
        if row is None:
            row = self.minutes[key] = [0, 0, 0, 0.0, 0, 0.0, 0, 0, 0, 0]
        return row

    def _user(self, fact: Fact, stage: Stage) -> list[Any]:
        assert fact.user_hash is not None
        key = (fact.deployment, stage.started_at, fact.version, fact.user_hash)
        row = self.users.get(key)
        if row is None:
            row = self.users[key] = [0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, 0.0]
        return row

    def _count_latency(self, fact: Fact, minute: datetime, metric: str, value: float) -> None:
        key = (fact.deployment, fact.version, minute, metric, bucket_of(value))
        self.latency[key] = self.latency.get(key, 0) + 1


def _adding(dialect: Dialect, table: Any, keys: tuple[str, ...], fields: tuple[str, ...]) -> Any:
    statement = dialect.insert(table)
    columns = table.__table__.c
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: columns[name] + statement.excluded[name] for name in fields})


_ARRAY_TYPES = {"String": "text", "UTCDateTime": "timestamptz", "BigInteger": "bigint", "Integer": "integer",
                "Float": "double precision"}


@cache
def _adding_arrays(table: Any, keys: tuple[str, ...], fields: tuple[str, ...]) -> str:
    """PostgreSQL: INSERT ... SELECT FROM unnest($1, $2, ...) adding to the rows that exist, in array order."""
    columns = table.__table__.c
    names = (*keys, *fields)
    arrays = ", ".join(f"CAST(${index} AS {_ARRAY_TYPES[type(columns[name].type).__name__]}[])"
                       for index, name in enumerate(names, start=1))
    updates = ", ".join(f"{name} = {table.__tablename__}.{name} + EXCLUDED.{name}" for name in fields)
    return (f"INSERT INTO {table.__tablename__} ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


def stage_lock_key(deployment: str) -> int:
    """The key, in namespace STAGE_LOCK, of `deployment`'s stage lock."""
    return zlib.crc32(deployment.encode()) - 2**31


async def lock_stages(connection: AsyncConnection, dialect: Dialect, deployments: Iterable[str]) -> dict[str, Stage]:
    """Take the writers' shared stage locks of `deployments` (PostgreSQL) and read their stages.

    Held until the transaction ends: a stage change waits for this write,
    and this write for a stage change in progress.
    """
    names = sorted(set(deployments))
    if not names:
        return {}
    if dialect.postgresql:
        keys = sorted({stage_lock_key(name) for name in names})
        await connection.execute(
            text("SELECT pg_advisory_xact_lock_shared(:namespace, k) FROM "
                 "(SELECT k FROM unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS ordered"),
            {"namespace": STAGE_LOCK, "keys": keys})
    rows = await connection.execute(select(RolloutStageRow).where(RolloutStageRow.deployment.in_(names)))
    return {row.deployment: Stage(row.started_at, row.reference_ms, row.gate_ms, row.rollback_ms) for row in rows}


async def lock_stage_exclusively(connection: AsyncConnection, dialect: Dialect, *deployments: str) -> None:
    """Wait for the writers of `deployments` and keep new ones out until the transaction ends (PostgreSQL).

    Locks in key order, as writers do, so two lockers never wait for each other in a circle.
    """
    if dialect.postgresql:
        for key in sorted({stage_lock_key(name) for name in deployments}):
            await connection.execute(text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
                                     {"namespace": STAGE_LOCK, "key": key})


async def read_stage(connection: AsyncConnection, deployment: str) -> Stage | None:
    row = (await connection.execute(
        select(RolloutStageRow).where(RolloutStageRow.deployment == deployment))).first()
    return Stage(row.started_at, row.reference_ms, row.gate_ms, row.rollback_ms) if row is not None else None


async def open_stage(connection: AsyncConnection, dialect: Dialect, *, deployment: str, started_at: datetime | None,
                     stable: str, policy: RolloutPolicy) -> None:
    """Make `started_at` the judged stage of `deployment` (None: no stage is judged), inside a rollout change.

    Nothing happens when it already is. Otherwise, holding the stage lock
    exclusively (the caller takes it first, see `lock_stage_exclusively`),
    the latency thresholds are set from stable's answered calls over the
    `policy.latency_baseline` before the stage (the whole minutes of it, from
    the minute histograms) when there are `policy.min_requests` of them, else
    left unknown for the first check to fix (`fix_thresholds`); and the
    stage's per-user sums are built from the records already stored. Sums of
    earlier stages are left in place (the rollout checks read only the judged stage).
    """
    current = await read_stage(connection, deployment)
    if current is not None and started_at is not None and current.started_at == started_at:
        return
    if started_at is None:
        if current is not None:
            await connection.execute(delete(RolloutStageRow).where(RolloutStageRow.deployment == deployment))
        return
    thresholds = await _baseline_thresholds(connection, deployment=deployment, stable=stable, since=started_at,
                                            policy=policy)
    stage = Stage(started_at) if thresholds is None else Stage(
        started_at, thresholds.reference_ms, thresholds.gate_ms, thresholds.rollback_ms)
    values = {"started_at": stage.started_at, "reference_ms": stage.reference_ms, "gate_ms": stage.gate_ms,
              "rollback_ms": stage.rollback_ms}
    statement = dialect.insert(RolloutStageRow).values(deployment=deployment, **values)
    await connection.execute(statement.on_conflict_do_update(index_elements=["deployment"], set_=values))
    for step in rebuild_stage(deployment, stage):
        await connection.execute(step)


async def fix_thresholds(connection: AsyncConnection, dialect: Dialect, *, deployment: str, stage: Stage,
                         thresholds: LatencyThresholds) -> Stage:
    """Set a stage's unknown latency thresholds and rebuild its sums with them; returns the stage as it now is.

    Takes the stage lock exclusively: the stage's writers wait until the
    caller's transaction ends.
    """
    await lock_stage_exclusively(connection, dialect, deployment)
    await connection.execute(
        update(RolloutStageRow)
        .where(RolloutStageRow.deployment == deployment, RolloutStageRow.started_at == stage.started_at)
        .values(reference_ms=thresholds.reference_ms, gate_ms=thresholds.gate_ms, rollback_ms=thresholds.rollback_ms))
    fixed = Stage(stage.started_at, thresholds.reference_ms, thresholds.gate_ms, thresholds.rollback_ms)
    for step in rebuild_stage(deployment, fixed):
        await connection.execute(step)
    return fixed


async def _baseline_thresholds(connection: AsyncConnection, *, deployment: str, stable: str, since: datetime,
                               policy: RolloutPolicy) -> LatencyThresholds | None:
    first = minute_of(since - timedelta(seconds=policy.latency_baseline) + timedelta(seconds=59, microseconds=999999))
    rows = await connection.execute(
        select(MinuteLatencyRow.bucket, func.sum(MinuteLatencyRow.calls))
        .where(MinuteLatencyRow.deployment == deployment, MinuteLatencyRow.version == stable,
               MinuteLatencyRow.metric == "latency", MinuteLatencyRow.minute >= first,
               MinuteLatencyRow.minute <= since - timedelta(seconds=60))
        .group_by(MinuteLatencyRow.bucket))
    histogram = merge([{int(bucket): int(calls) for bucket, calls in rows}])
    if sum(histogram.values()) < policy.min_requests:
        return None
    reference = percentile(histogram, 0.95)
    return LatencyThresholds.of(reference, policy) if reference is not None else None


def rebuild_stage(deployment: str, stage: Stage) -> list[Any]:
    """Statements that recompute a stage's per-user sums from the stored records and scores (SQL twin of Tally)."""
    record = RequestRecordRow
    in_stage = [record.deployment == deployment, record.created_at >= stage.started_at,
                record.user_hash.is_not(None), record.status != "client_cancelled"]

    def count_if(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def slower(limit: float | None) -> Any:
        return literal(0) if limit is None else count_if(and_(record.status == "ok", record.latency_ms > limit))

    neutral = func.coalesce(record.uncached_cost_usd, record.cost_usd)
    started = literal(stage.started_at, StageUserSumsRow.__table__.c.started_at.type)
    users = (
        select(record.deployment, started, record.version, record.user_hash, func.count(),
               count_if(record.status == "error"), count_if(record.status == "ok"), slower(stage.gate_ms),
               slower(stage.reference_ms), slower(stage.rollback_ms), func.count(neutral),
               cast(func.coalesce(func.sum(neutral), 0.0), Float),
               cast(func.coalesce(func.sum(func.coalesce(record.cost_usd, neutral)), 0.0), Float),
               func.count(record.quality), cast(func.coalesce(func.sum(record.quality), 0.0), Float))
        .where(*in_stage)
        .group_by(record.deployment, record.version, record.user_hash)
    )
    score = QualityScoreRow
    sources = (
        select(record.deployment, started, record.version, record.user_hash, score.source, func.count(),
               cast(func.sum(score.score), Float))
        .select_from(score)
        .join(record, record.id == score.request_id)
        .where(*in_stage)
        .group_by(record.deployment, record.version, record.user_hash, score.source)
    )
    same_stage = {"deployment": deployment, "started_at": stage.started_at}
    return [
        delete(StageUserSumsRow).filter_by(**same_stage),
        delete(StageSourceSumsRow).filter_by(**same_stage),
        insert(StageUserSumsRow).from_select(
            ["deployment", "started_at", "version", "user_hash", *_USER_FIELDS], users),
        insert(StageSourceSumsRow).from_select(
            ["deployment", "started_at", "version", "user_hash", "source", *_SOURCE_FIELDS], sources),
    ]


def backfill_minutes(postgresql: bool) -> list[Any]:
    """Statements that build the minute sums from every stored record and score (for a migration).

    Assumes the minute tables are empty. The latency bucket is
    `canary_latency_bucket(ms)` (see `gateway.analysis.histogram`): a SQL
    function on PostgreSQL, a Python one registered on SQLite connections.
    """
    record = RequestRecordRow
    if postgresql:
        minute: Any = func.timezone("UTC", func.date_trunc("minute", func.timezone("UTC", record.created_at)))
    else:
        minute = func.substr(record.created_at, 1, 16).concat(":00.000000")
    counted = record.status != "client_cancelled"

    def count_if(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def sum_if(condition: Any, value: Any) -> Any:
        return func.coalesce(func.sum(case((condition, value), else_=None)), 0)

    stats = (
        select(record.deployment, record.version, minute.label("minute"), count_if(counted),
               count_if(record.status == "error"), count_if(and_(counted, record.quality.is_not(None))),
               cast(sum_if(counted, record.quality), Float),
               count_if(and_(counted, record.cost_usd.is_not(None))), cast(sum_if(counted, record.cost_usd), Float),
               count_if(and_(counted, record.prompt_tokens.is_not(None))), sum_if(counted, record.prompt_tokens),
               count_if(and_(counted, record.completion_tokens.is_not(None))),
               sum_if(counted, record.completion_tokens))
        .group_by(record.deployment, record.version, minute)
    )
    score = QualityScoreRow
    sources = (
        select(record.deployment, record.version, minute.label("minute"), score.source, func.count(),
               cast(func.sum(score.score), Float))
        .select_from(score).join(record, record.id == score.request_id)
        .where(counted)
        .group_by(record.deployment, record.version, minute, score.source)
    )
    statements: list[Any] = [
        insert(MinuteStatsRow).from_select(["deployment", "version", "minute", *_MINUTE_FIELDS], stats),
        insert(MinuteSourceRow).from_select(["deployment", "version", "minute", "source", *_SOURCE_FIELDS], sources),
    ]
    for metric, column in (("latency", record.latency_ms), ("ttft", record.ttft_ms)):
        bucket = cast(func.canary_latency_bucket(column), Integer)
        histogram = (
            select(record.deployment, record.version, minute.label("minute"), literal(metric), bucket.label("bucket"),
                   func.count())
            .where(record.status == "ok", column.is_not(None))
            .group_by(record.deployment, record.version, minute, bucket)
        )
        statements.append(insert(MinuteLatencyRow).from_select(
            ["deployment", "version", "minute", "metric", "bucket", "calls"], histogram))
    return statements
