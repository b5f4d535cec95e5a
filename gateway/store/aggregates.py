"""Aggregates kept in the transaction that writes the records: what checks, compare and charts read.

Two families of sums (tables in `gateway.tables`), each a batch adds to:

- per deployment, version and minute (`minute_stats`, `minute_sources`,
  `minute_latency`, and `hour_latency` per hour): what `compare`, the time
  series and the dashboard read; latency as a mergeable histogram
  (`gateway.analysis.histogram`);
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

Why one module over 400 lines: the aggregates' definition, their update in
the writer's transaction and their rebuild from stored records must compute
the same sums; kept together, one reading shows they agree.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Float, Integer, and_, case, cast, delete, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.analysis.evidence import LatencyThresholds
from gateway.analysis.histogram import bucket_of, merge, percentile
from gateway.models import RecordMode, RecordStatus
from gateway.policy import RolloutPolicy
from gateway.store.engine import Dialect, few_shapes
from gateway.tables import (
    HourLatencyRow,
    MinuteLatencyRow,
    MinuteSourceRow,
    MinuteStatsRow,
    QualityScoreRow,
    RequestRecordRow,
    RolloutStageRow,
    StagePresenceRow,
    StageSourceSumsRow,
    StageUserSumsRow,
    StageVersionSourcesRow,
    StageVersionSumsRow,
)

# Advisory-lock namespace of the stages' per-user sums ("CGTS"): writers share it, stage changes take it alone.
STAGE_LOCK = 0x43475453

_MINUTE_FIELDS = ("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls",
                  "prompt_tokens", "completion_calls", "completion_tokens")
_USER_FIELDS = ("calls", "errors", "answered", "slow_gate", "slow_reference", "slow_rollback", "priced", "cost",
                "actual_cost", "scored", "quality")
_SOURCE_FIELDS = ("scores", "score_sum")
_USER_KEY = ("deployment", "started_at", "version", "user_hash")
_USER_SOURCE_KEY = (*_USER_KEY, "source")
# Ratio metrics Σy/Σx of the evidence: name → indexes of x and y in _USER_FIELDS.
METRICS = {"errors": (0, 1), "quality": (9, 10), "slow": (2, 3), "slow_reference": (2, 4), "slow_rollback": (2, 5),
           "cost": (6, 7)}
MOMENTS = ("units", "x", "y", "xx", "yy", "xy")
_VERSION_FIELDS = ("users", "calls", "actual_cost",
                   *(f"{metric}_{moment}" for metric in METRICS for moment in MOMENTS))
_VERSION_SOURCE_FIELDS = tuple(f"s_{moment}" for moment in MOMENTS)


@dataclass(frozen=True, slots=True)
class Stage:
    """The judged stage of a deployment: its start and latency thresholds (ms; None until known)."""

    started_at: datetime
    reference_ms: float | None = None
    gate_ms: float | None = None
    rollback_ms: float | None = None
    stable: str | None = None
    canary: str | None = None
    # Users with calls of either judged version in the stage.
    users: int = 0

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
    mode: RecordMode = "live"

    @property
    def counted(self) -> bool:
        return self.status != "client_cancelled"

    @property
    def live(self) -> bool:
        """Served to a user: a shadow copy (answered to no one) is in no aggregate."""
        return self.mode == "live"

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
        self.stages: dict[str, Stage] = {}

    def add_record(self, fact: Fact, stage: Stage | None) -> None:
        """A newly stored call: every sum it belongs to (none for a shadow copy)."""
        if not fact.live:
            return
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
        if not fact.counted or not fact.live or before == after:
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
        if not fact.counted or not fact.live:
            return
        key = (fact.deployment, fact.version, fact.minute(), source)
        row = self.minute_sources.setdefault(key, [0, 0.0])
        row[0] += 1
        row[1] += score
        if stage is not None and fact.in_stage(stage):
            assert fact.user_hash is not None
            self.stages[fact.deployment] = stage
            user_key = (fact.deployment, stage.started_at, fact.version, fact.user_hash, source)
            user_row = self.user_sources.setdefault(user_key, [0, 0.0])
            user_row[0] += 1
            user_row[1] += score

    async def write(self, connection: AsyncConnection, dialect: Dialect) -> None:
        """Add the tally to the tables: one statement per table, rows in key order (no deadlock between writers).

        The per-user sums come back as they now are, so the versions' sums of
        squares over users change by exactly what these users' rows changed.
        """
        tables: list[tuple[Any, tuple[str, ...], tuple[str, ...], Iterable[tuple[Any, Sequence[Any]]]]] = [
            (MinuteStatsRow, ("deployment", "version", "minute"), _MINUTE_FIELDS, self.minutes.items()),
            (MinuteSourceRow, ("deployment", "version", "minute", "source"), _SOURCE_FIELDS,
             self.minute_sources.items()),
            (MinuteLatencyRow, ("deployment", "version", "minute", "metric", "bucket"), ("calls",),
             ((key, (count,)) for key, count in self.latency.items())),
            (HourLatencyRow, ("deployment", "version", "hour", "metric", "bucket"), ("calls",),
             ((key, (count,)) for key, count in self._hours().items())),
        ]
        for table, keys, fields, items in tables:
            await _add(connection, dialect, table, keys, fields, sorted(items, key=lambda item: item[0]))
        if not self.users and not self.user_sources:
            return
        versions: dict[tuple[Any, ...], list[Any]] = {}
        arrivals: dict[tuple[str, datetime], list[str]] = {}
        changed = await _add_returning(connection, dialect, StageUserSumsRow, _USER_KEY, _USER_FIELDS,
                                       sorted(self.users.items()))
        for key, change, now in changed:
            before = [value - delta for value, delta in zip(now, change, strict=True)]
            row = versions.setdefault(key[:3], [0] * len(_VERSION_FIELDS))
            row[0] += (now[0] > 0) - (before[0] > 0)
            row[1] += change[0]
            row[2] += change[8]
            for index, (x, y) in enumerate(METRICS.values()):
                _add_moments(row, 3 + 6 * index, now[x], now[y], before[x], before[y])
            stage = self.stages[key[0]]
            if before[0] == 0 and key[2] in (stage.stable, stage.canary):
                arrivals.setdefault(key[:2], []).append(key[3])
        version_sources: dict[tuple[Any, ...], list[Any]] = {}
        changed = await _add_returning(connection, dialect, StageSourceSumsRow, _USER_SOURCE_KEY, _SOURCE_FIELDS,
                                       sorted(self.user_sources.items()))
        for key, change, now in changed:
            row = version_sources.setdefault((*key[:3], key[4]), [0] * len(_VERSION_SOURCE_FIELDS))
            _add_moments(row, 0, now[0], now[1], now[0] - change[0], now[1] - change[1])
        for (deployment, started_at), users in sorted(arrivals.items()):
            new = await _present(connection, dialect, deployment, started_at, sorted(set(users)))
            if new:
                await connection.execute(
                    update(RolloutStageRow)
                    .where(RolloutStageRow.deployment == deployment, RolloutStageRow.started_at == started_at)
                    .values(users=RolloutStageRow.users + new))
        await _add(connection, dialect, StageVersionSumsRow, ("deployment", "started_at", "version"), _VERSION_FIELDS,
                   sorted(versions.items()))
        await _add(connection, dialect, StageVersionSourcesRow, ("deployment", "started_at", "version", "source"),
                   _VERSION_SOURCE_FIELDS, sorted(version_sources.items()))

    def _hours(self) -> dict[tuple[str, str, datetime, str, int], int]:
        hours: dict[tuple[str, str, datetime, str, int], int] = {}
        for (deployment, version, minute, metric, bucket), count in self.latency.items():
            key = (deployment, version, minute.replace(minute=0), metric, bucket)
            hours[key] = hours.get(key, 0) + count
        return hours

    def _minute(self, fact: Fact, minute: datetime) -> list[Any]:
        key = (fact.deployment, fact.version, minute)
        row = self.minutes.get(key)
        if row is None:
            row = self.minutes[key] = [0, 0, 0, 0.0, 0, 0.0, 0, 0, 0, 0]
        return row

    def _user(self, fact: Fact, stage: Stage) -> list[Any]:
        assert fact.user_hash is not None
        self.stages[fact.deployment] = stage
        key = (fact.deployment, stage.started_at, fact.version, fact.user_hash)
        row = self.users.get(key)
        if row is None:
            row = self.users[key] = [0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, 0.0]
        return row

    def _count_latency(self, fact: Fact, minute: datetime, metric: str, value: float) -> None:
        key = (fact.deployment, fact.version, minute, metric, bucket_of(value))
        self.latency[key] = self.latency.get(key, 0) + 1


def _add_moments(row: list[Any], at: int, x: float, y: float, x_before: float, y_before: float) -> None:
    """Into row[at:at + 6]: the change of (x > 0, x, y, x², y², x·y) when a user's (x, y) went from before to now."""
    row[at] += (x > 0) - (x_before > 0)
    row[at + 1] += x - x_before
    row[at + 2] += y - y_before
    row[at + 3] += x * x - x_before * x_before
    row[at + 4] += y * y - y_before * y_before
    row[at + 5] += x * y - x_before * y_before


async def _add(connection: AsyncConnection, dialect: Dialect, table: Any, keys: tuple[str, ...],
               fields: tuple[str, ...], ordered: Sequence[tuple[Any, Sequence[Any]]]) -> None:
    """Add `ordered` (key, values) to `table`'s rows, creating those that do not exist."""
    if not ordered:
        return
    if dialect.postgresql:
        # One statement over arrays: a round trip and a plan for the whole batch.
        await connection.exec_driver_sql(_adding_arrays(table, keys, fields), _arrays(ordered))
    else:
        await connection.exec_driver_sql(_adding_rows(table, keys, fields), _sqlite_rows(ordered))


async def _add_returning(connection: AsyncConnection, dialect: Dialect, table: Any, keys: tuple[str, ...],
                         fields: tuple[str, ...], ordered: Sequence[tuple[Any, Sequence[Any]]]
                         ) -> list[tuple[Any, Sequence[Any], Sequence[Any]]]:
    """`_add`, and each row as it is afterwards: (key, what was added, the row's values now)."""
    if not ordered:
        return []
    if dialect.postgresql:
        returned = await connection.exec_driver_sql(
            _adding_arrays(table, keys, fields) + f" RETURNING {', '.join((*keys, *fields))}", _arrays(ordered))
        now = {tuple(row[: len(keys)]): row[len(keys):] for row in returned.all()}
        return [(key, change, now[tuple(key)]) for key, change in ordered]
    # SQLite: write transactions are serialized, so the rows read first are the rows the upsert adds to.
    # Keys start (deployment, started_at, version, user_hash); the rows are read per (deployment, started_at,
    # version) by user, and matched by the rest of their key (user_hash, and the source if any).
    before: dict[tuple[Any, ...], Sequence[Any]] = {}
    groups: dict[tuple[Any, ...], set[str]] = {}
    for key, _ in ordered:
        groups.setdefault(tuple(key[:3]), set()).add(key[3])
    rest = keys[3:]
    for group, users in groups.items():
        chosen = sorted(users)
        for start in range(0, len(chosen), 512):
            some = few_shapes(chosen[start : start + 512])
            sql = (f"SELECT {', '.join((*rest, *fields))} FROM {table.__tablename__} WHERE deployment = ? AND "
                   f"started_at = ? AND version = ? AND user_hash IN ({', '.join('?' * len(some))})")
            rows = await connection.exec_driver_sql(sql, (group[0], _sqlite_time(group[1]), group[2], *some))
            before.update({(*group, *row[: len(rest)]): row[len(rest):] for row in rows})
    await connection.exec_driver_sql(_adding_rows(table, keys, fields), _sqlite_rows(ordered))
    zeros = [0] * len(fields)
    return [(key, change, [old + delta for old, delta in zip(before.get(tuple(key), zeros), change, strict=True)])
            for key, change in ordered]


async def _present(connection: AsyncConnection, dialect: Dialect, deployment: str, started_at: datetime,
                   users: list[str]) -> int:
    """Note `users` as present in the stage; returns how many were not yet (exactly, whatever writes alongside)."""
    if dialect.postgresql:
        return len((await connection.exec_driver_sql(
            "INSERT INTO stage_presence (deployment, started_at, user_hash) SELECT $1, $2, unnest(CAST($3 AS text[])) "
            "ON CONFLICT DO NOTHING RETURNING user_hash", (deployment, started_at, users))).all())
    known: set[str] = set()
    started = _sqlite_time(started_at)
    for start in range(0, len(users), 512):
        some = few_shapes(users[start : start + 512])
        known.update(row[0] for row in await connection.exec_driver_sql(
            "SELECT user_hash FROM stage_presence WHERE deployment = ? AND started_at = ? AND user_hash IN "
            f"({', '.join('?' * len(some))})", (deployment, started, *some)))
    new = [user for user in users if user not in known]
    if new:
        await connection.exec_driver_sql(
            "INSERT INTO stage_presence (deployment, started_at, user_hash) VALUES (?, ?, ?)",
            [(deployment, started, user) for user in new])
    return len(new)


def _arrays(ordered: Sequence[tuple[Any, Sequence[Any]]]) -> tuple[list[Any], ...]:
    return tuple(list(column) for column in zip(*(tuple(key) + tuple(values) for key, values in ordered), strict=True))


def _sqlite_rows(ordered: Sequence[tuple[Any, Sequence[Any]]]) -> list[tuple[Any, ...]]:
    """SQLite: each (key, values) as one row of parameters, times as `UTCDateTime` stores them there.

    Sent to the driver as they are: SQLAlchemy's per-row parameter processing
    of an executemany costs more than the statement itself for a batch of calls.
    """
    return [(*(_sqlite_time(part) if isinstance(part, datetime) else part for part in key), *values)
            for key, values in ordered]


def _sqlite_time(moment: datetime) -> str:
    """A time as `UTCDateTime` stores it on SQLite: naive UTC text, to the microsecond."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@cache
def _adding_rows(table: Any, keys: tuple[str, ...], fields: tuple[str, ...]) -> str:
    """SQLite: INSERT of one row adding to the row that exists (run once per row, as an executemany)."""
    names = (*keys, *fields)
    updates = ", ".join(f"{name} = {table.__tablename__}.{name} + excluded.{name}" for name in fields)
    return (f"INSERT INTO {table.__tablename__} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


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
    return {row.deployment: _stage_of(row) for row in rows}


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
    return _stage_of(row) if row is not None else None


def _stage_of(row: Any) -> Stage:
    return Stage(row.started_at, row.reference_ms, row.gate_ms, row.rollback_ms, row.stable, row.canary,
                 int(row.users or 0))


async def open_stage(connection: AsyncConnection, dialect: Dialect, *, deployment: str, started_at: datetime | None,
                     stable: str, canary: str | None, policy: RolloutPolicy) -> None:
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
    stage = Stage(started_at, stable=stable, canary=canary) if thresholds is None else Stage(
        started_at, thresholds.reference_ms, thresholds.gate_ms, thresholds.rollback_ms, stable, canary)
    values = {"started_at": stage.started_at, "reference_ms": stage.reference_ms, "gate_ms": stage.gate_ms,
              "rollback_ms": stage.rollback_ms, "stable": stable, "canary": canary, "users": 0}
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
    fixed = replace(stage, reference_ms=thresholds.reference_ms, gate_ms=thresholds.gate_ms,
                    rollback_ms=thresholds.rollback_ms)
    for step in rebuild_stage(deployment, fixed):
        await connection.execute(step)
    rebuilt = await read_stage(connection, deployment)
    assert rebuilt is not None
    return rebuilt


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


def rebuild_stage(deployment: str, stage: Stage, *, live_only: bool = True) -> list[Any]:
    """Statements that recompute a stage's per-user sums from the stored records and scores (SQL twin of Tally).

    `live_only` leaves shadow copies out; False only for a migration older
    than the `mode` column (0010), when no copy can exist yet.
    """
    record = RequestRecordRow
    in_stage = [record.deployment == deployment, record.created_at >= stage.started_at,
                record.user_hash.is_not(None), record.status != "client_cancelled"]
    if live_only:
        in_stage.append(record.mode == "live")

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
        *(delete(table).filter_by(**same_stage) for table in (StageUserSumsRow, StageSourceSumsRow,
                                                              StageVersionSumsRow, StageVersionSourcesRow,
                                                              StagePresenceRow)),
        insert(StageUserSumsRow).from_select(
            ["deployment", "started_at", "version", "user_hash", *_USER_FIELDS], users),
        insert(StageSourceSumsRow).from_select(
            ["deployment", "started_at", "version", "user_hash", "source", *_SOURCE_FIELDS], sources),
        *version_sums(deployment, stage),
    ]


def version_sums(deployment: str, stage: Stage) -> list[Any]:
    """Statements that build a stage's version sums and user count from its per-user sums (already built)."""
    user = StageUserSumsRow
    same = [user.deployment == deployment, user.started_at == stage.started_at]
    columns: list[Any] = [func.count(), func.sum(user.calls), cast(func.sum(user.actual_cost), Float)]
    for x, y in METRICS.values():
        columns.extend(_moment_sums(getattr(user, _USER_FIELDS[x]), getattr(user, _USER_FIELDS[y])))
    source = StageSourceSumsRow
    judged = [name for name in (stage.stable, stage.canary) if name is not None]
    return [
        insert(StageVersionSumsRow).from_select(
            ["deployment", "started_at", "version", *_VERSION_FIELDS],
            select(user.deployment, user.started_at, user.version, *columns).where(*same)
            .group_by(user.deployment, user.started_at, user.version)),
        insert(StageVersionSourcesRow).from_select(
            ["deployment", "started_at", "version", "source", *_VERSION_SOURCE_FIELDS],
            select(source.deployment, source.started_at, source.version, source.source,
                   *_moment_sums(source.scores, source.score_sum))
            .where(source.deployment == deployment, source.started_at == stage.started_at)
            .group_by(source.deployment, source.started_at, source.version, source.source)),
        insert(StagePresenceRow).from_select(
            ["deployment", "started_at", "user_hash"],
            select(user.deployment, user.started_at, user.user_hash).distinct()
            .where(*same, user.version.in_(judged))),
        update(RolloutStageRow).where(RolloutStageRow.deployment == deployment).values(
            users=select(func.count()).select_from(StagePresenceRow)
            .where(StagePresenceRow.deployment == deployment, StagePresenceRow.started_at == stage.started_at)
            .scalar_subquery()),
    ]


def _moment_sums(x: Any, y: Any) -> list[Any]:
    """Σ over users of (x > 0), x, y, x², y², x·y."""
    fx, fy = cast(x, Float), cast(y, Float)
    return [func.sum(case((x > 0, 1), else_=0)), func.sum(fx), func.sum(fy), func.sum(fx * fx), func.sum(fy * fy),
            func.sum(fx * fy)]


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


def backfill_hours(postgresql: bool) -> Any:
    """The statement that builds hour_latency from minute_latency (for a migration; assumes it empty)."""
    minute = MinuteLatencyRow
    if postgresql:
        hour: Any = func.timezone("UTC", func.date_trunc("hour", func.timezone("UTC", minute.minute)))
    else:
        hour = func.substr(minute.minute, 1, 13).concat(":00:00.000000")
    return insert(HourLatencyRow).from_select(
        ["deployment", "version", "hour", "metric", "bucket", "calls"],
        select(minute.deployment, minute.version, hour.label("hour"), minute.metric, minute.bucket,
               func.sum(minute.calls)).group_by(minute.deployment, minute.version, hour, minute.metric, minute.bucket))
