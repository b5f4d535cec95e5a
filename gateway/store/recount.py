"""The aggregates recomputed from the raw records and scores, and held against the stored ones.

Owns the audit of what `gateway.store.aggregates` keeps: every aggregate
table is rebuilt here in Python from `request_records` and `quality_scores`,
written from the definitions (README, "Aggregates") and sharing nothing with
the writer's SQL but the histogram's bucket formula
(`gateway.analysis.histogram.bucket_of`), so that a mistake in one is not
repeated in the other. It reads every live record into memory: it is for
tests, benchmarks and a check of a copy after an incident, not for a day of
internet traffic.

Tables are compared as `table → key → values`, the key and value columns of
each table as listed in `_KEYS`; timestamps are aware UTC datetimes.
Stage tables are compared for the stages still judged (`rollout_stages`);
sums of squares kept by adding differences drift by rounding, so numbers are
equal within a relative 1e-7 (absolute 1e-9), far below what a check reads.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.analysis.histogram import bucket_of

Tables = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]

MINUTE_FIELDS = ("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls", "prompt_tokens",
                 "completion_calls", "completion_tokens")
USER_FIELDS = ("calls", "errors", "answered", "slow_gate", "slow_reference", "slow_rollback", "priced", "cost",
               "actual_cost", "scored", "quality")
_MOMENTS = tuple(f"{metric}_{name}" for metric in ("errors", "quality", "slow", "slow_reference", "slow_rollback",
                                                    "cost") for name in ("units", "x", "y", "xx", "yy", "xy"))
_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "stage_version_sums": (("deployment", "started_at", "version"), ("users", "calls", "actual_cost", *_MOMENTS)),
    "stage_version_sources": (("deployment", "started_at", "version", "source"),
                              tuple(f"s_{name}" for name in ("units", "x", "y", "xx", "yy", "xy"))),
    "stage_presence": (("deployment", "started_at", "user_hash"), ()),
    "rollout_stages": (("deployment", "started_at"), ("users",)),
    "minute_stats": (("deployment", "version", "minute"), MINUTE_FIELDS),
    "minute_sources": (("deployment", "version", "minute", "source"), ("scores", "score_sum")),
    "minute_latency": (("deployment", "version", "minute", "metric", "bucket"), ("calls",)),
    "hour_latency": (("deployment", "version", "hour", "metric", "bucket"), ("calls",)),
    "stage_user_sums": (("deployment", "started_at", "version", "user_hash"), USER_FIELDS),
    "stage_source_sums": (("deployment", "started_at", "version", "user_hash", "source"), ("scores", "score_sum")),
}
_TIMES = frozenset({"minute", "hour", "started_at"})
_RECORD_COLUMNS = ("id", "created_at", "deployment", "version", "user_hash", "status", "latency_ms", "ttft_ms",
                   "cost_usd", "uncached_cost_usd", "quality", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Difference:
    """One aggregate row that differs: `stored` or `recounted` is None where that side has no such row."""

    table: str
    key: tuple[Any, ...]
    stored: tuple[Any, ...] | None
    recounted: tuple[Any, ...] | None


@dataclass(frozen=True)
class Audit:
    """The recomputation, the number of rows compared (keys of either side, every table) and what differs."""

    recounted: Tables
    compared: int
    differences: list[Difference]


def moment(value: Any) -> datetime:
    """A timestamp as either database returns it from a plain query (text on SQLite), as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(parsed, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def audit_aggregates(engine: AsyncEngine) -> Audit:
    """Recount every aggregate and compare it with the stored one, from one snapshot on PostgreSQL.

    Raises what SQLAlchemy raises when the database cannot be read.
    """
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            recounted = await recount(connection)
            found = await stored_aggregates(connection)
    return Audit(recounted, sum(len(set(recounted[table]) | set(found[table])) for table in recounted),
                 differences(recounted, found))


def differences(recounted: Tables, found: Tables) -> list[Difference]:
    """The rows of `recounted` and `found` that differ, table by table, keys in order."""
    different: list[Difference] = []
    for table, rows in recounted.items():
        stored_rows = found.get(table, {})
        for key in sorted(set(rows) | set(stored_rows), key=repr):
            mine, theirs = rows.get(key), stored_rows.get(key)
            if mine is None or theirs is None or not _close(theirs, mine):
                different.append(Difference(table, key, theirs, mine))
    return different


def _close(found: tuple[Any, ...], wanted: tuple[Any, ...]) -> bool:
    return len(found) == len(wanted) and all(
        a == b if a is None or b is None else math.isclose(float(a), float(b), rel_tol=1e-7, abs_tol=1e-9)
        for a, b in zip(found, wanted, strict=True))


async def _rows(connection: AsyncConnection, sql: str) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in await connection.execute(text(sql))]


async def recount(connection: AsyncConnection) -> Tables:
    """Every aggregate table as the raw rows say it must be: table → key → values."""
    # Shadow copies (answered to no one) are in no aggregate.
    records = await _rows(connection, f"SELECT {', '.join(_RECORD_COLUMNS)} FROM request_records WHERE mode = 'live'")
    scores = await _rows(connection, "SELECT request_id, source, score FROM quality_scores")
    stages = {row["deployment"]: row for row in await _rows(connection, "SELECT * FROM rollout_stages")}
    by_id = {row["id"]: row for row in records}
    minutes: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0.0, 0, 0.0, 0, 0, 0, 0])
    latency: dict[tuple[Any, ...], int] = defaultdict(int)
    users: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, 0.0])
    for record in records:
        record["created_at"] = moment(record["created_at"])
        key = (record["deployment"], record["version"], record["created_at"].replace(second=0, microsecond=0))
        row = minutes[key]
        if record["status"] != "client_cancelled":
            row[0] += 1
            for index, name in ((2, "quality"), (4, "cost_usd"), (6, "prompt_tokens"), (8, "completion_tokens")):
                if record[name] is not None:
                    row[index] += 1
                    row[index + 1] += record[name]
        row[1] += record["status"] == "error"
        if record["status"] == "ok":
            latency[(*key, "latency", bucket_of(record["latency_ms"]))] += 1
            if record["ttft_ms"] is not None:
                latency[(*key, "ttft", bucket_of(record["ttft_ms"]))] += 1
        stage = stages.get(record["deployment"])
        if stage is None or not _in_stage(record, stage):
            continue
        user = users[(record["deployment"], moment(stage["started_at"]), record["version"], record["user_hash"])]
        user[0] += 1
        user[1] += record["status"] == "error"
        if record["status"] == "ok":
            user[2] += 1
            for index, limit in ((3, stage["gate_ms"]), (4, stage["reference_ms"]), (5, stage["rollback_ms"])):
                user[index] += limit is not None and record["latency_ms"] > limit
        neutral = record["uncached_cost_usd"] if record["uncached_cost_usd"] is not None else record["cost_usd"]
        if neutral is not None:
            user[6] += 1
            user[7] += neutral
            user[8] += record["cost_usd"] if record["cost_usd"] is not None else neutral
        if record["quality"] is not None:
            user[9] += 1
            user[10] += record["quality"]
    minute_sources: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0.0])
    user_sources: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0.0])
    for score in scores:
        scored = by_id.get(score["request_id"])
        if scored is None or scored["status"] == "client_cancelled":
            continue
        record = scored
        minute = record["created_at"].replace(second=0, microsecond=0)
        tally = minute_sources[(record["deployment"], record["version"], minute, score["source"])]
        tally[0] += 1
        tally[1] += score["score"]
        stage = stages.get(record["deployment"])
        if stage is not None and _in_stage(record, stage):
            tally = user_sources[(record["deployment"], moment(stage["started_at"]), record["version"],
                                  record["user_hash"], score["source"])]
            tally[0] += 1
            tally[1] += score["score"]
    versions: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0.0] + [0.0] * 36)
    for key, user in users.items():
        row = versions[key[:3]]
        row[0] += 1
        row[1] += user[0]
        row[2] += user[8]
        for index, (x, y) in enumerate(((0, 1), (9, 10), (2, 3), (2, 4), (2, 5), (6, 7))):
            _add_moments(row, 3 + 6 * index, user[x], user[y])
    version_sources: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0.0] * 6)
    for source_key, tally in user_sources.items():
        _add_moments(version_sources[(*source_key[:3], source_key[4])], 0, tally[0], tally[1])
    judged = {(name, moment(stage["started_at"])): (stage["stable"], stage["canary"]) for name, stage in stages.items()}
    presence = {(*key[:2], key[3]): () for key in users if key[2] in judged[key[:2]]}
    return {
        "stage_version_sums": {key: tuple(value) for key, value in versions.items()},
        "stage_version_sources": {key: tuple(value) for key, value in version_sources.items()},
        "stage_presence": presence,
        "rollout_stages": {key: (sum(1 for user in presence if user[:2] == key),) for key in judged},
        "minute_stats": {key: tuple(value) for key, value in minutes.items()},
        "minute_sources": {key: tuple(value) for key, value in minute_sources.items()},
        "minute_latency": {key: (value,) for key, value in latency.items()},
        "hour_latency": _hours(latency),
        "stage_user_sums": {key: tuple(value) for key, value in users.items()},
        "stage_source_sums": {key: tuple(value) for key, value in user_sources.items()},
    }


async def stored_aggregates(connection: AsyncConnection) -> Tables:
    """Every aggregate table as stored, for the stages still judged: table → key → values."""
    judged = {(row["deployment"], moment(row["started_at"]))
              for row in await _rows(connection, "SELECT deployment, started_at FROM rollout_stages")}
    tables: Tables = {}
    for table, (keys, fields) in _KEYS.items():
        rows = {}
        for row in await _rows(connection, f"SELECT * FROM {table}"):
            key = tuple(moment(row[name]) if name in _TIMES else row[name] for name in keys)
            if table.startswith("stage_") and key[:2] not in judged:
                continue
            if table == "stage_version_sums" and not row["users"]:
                continue  # a version whose users all went: the row stays, with nothing in it
            rows[key] = tuple(row[name] for name in fields)
        tables[table] = rows
    return tables


def _hours(latency: dict[tuple[Any, ...], int]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    summed: dict[tuple[Any, ...], int] = defaultdict(int)
    for (deployment, version, minute, metric, bucket), count in latency.items():
        summed[(deployment, version, minute.replace(minute=0), metric, bucket)] += count
    return {key: (count,) for key, count in summed.items()}


def _add_moments(row: list[Any], at: int, x: float, y: float) -> None:
    """One user's (x > 0, x, y, x², y², x·y) added to row[at:at + 6]."""
    for offset, value in enumerate((x > 0, x, y, x * x, y * y, x * y)):
        row[at + offset] += value


def _in_stage(record: dict[str, Any], stage: dict[str, Any]) -> bool:
    return (record["user_hash"] is not None and record["status"] != "client_cancelled"
            and record["created_at"] >= moment(stage["started_at"]))
