"""The aggregates recomputed from the raw records and scores, to hold the stored ones to; a stage to judge.

Written from the definitions (README, "Aggregates"), independently of
`gateway.store.aggregates`: only the histogram's bucket formula is shared.
`declare` and `start_canary` make deployment `bot` and its judged stage
through the store, as the control plane does.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway import rollout
from gateway.analysis.histogram import bucket_of
from gateway.models import Deployment, RolloutEvent, RolloutState, Version
from gateway.policy import RolloutPolicy
from gateway.store import Store
from tests.conftest import query

POLICY = RolloutPolicy(min_requests=50, latency_baseline=3600, rollback_when={"p95_latency_ratio_above": 1.5})
VERSIONS = {"v1": Version("v1", "p", "m"), "v2": Version("v2", "p", "m"), "v3": Version("v3", "p", "m")}

MINUTE_FIELDS = ("requests", "errors", "scored", "quality_sum", "priced", "cost_sum", "prompt_calls", "prompt_tokens",
                 "completion_calls", "completion_tokens")
USER_FIELDS = ("calls", "errors", "answered", "slow_gate", "slow_reference", "slow_rollback", "priced", "cost",
               "actual_cost", "scored", "quality")


def moment(value: Any) -> datetime:
    """A timestamp as either database returns it from a plain query, as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def expected(url: str) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Every aggregate table as the raw rows say it must be: table → key → values."""
    # Shadow copies (answered to no one) are in no aggregate.
    records = query(url, "SELECT * FROM request_records WHERE mode = 'live'")
    scores = query(url, "SELECT * FROM quality_scores")
    stages = {row["deployment"]: row for row in query(url, "SELECT * FROM rollout_stages")}
    by_id = {row["id"]: row for row in records}
    minutes: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0.0, 0, 0.0, 0, 0, 0, 0])
    latency: dict[tuple[Any, ...], int] = defaultdict(int)
    users: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, 0.0])
    for record in records:
        created = moment(record["created_at"])
        minute = created.replace(second=0, microsecond=0)
        key = (record["deployment"], record["version"], minute)
        row = minutes[key]
        counted = record["status"] != "client_cancelled"
        if counted:
            row[0] += 1
            if record["quality"] is not None:
                row[2] += 1
                row[3] += record["quality"]
            if record["cost_usd"] is not None:
                row[4] += 1
                row[5] += record["cost_usd"]
            if record["prompt_tokens"] is not None:
                row[6] += 1
                row[7] += record["prompt_tokens"]
            if record["completion_tokens"] is not None:
                row[8] += 1
                row[9] += record["completion_tokens"]
        row[1] += record["status"] == "error"
        if record["status"] == "ok":
            latency[(*key, "latency", bucket_of(record["latency_ms"]))] += 1
            if record["ttft_ms"] is not None:
                latency[(*key, "ttft", bucket_of(record["ttft_ms"]))] += 1
        stage = stages.get(record["deployment"])
        if stage is None or not in_stage(record, stage):
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
        minute = moment(record["created_at"]).replace(second=0, microsecond=0)
        tally = minute_sources[(record["deployment"], record["version"], minute, score["source"])]
        tally[0] += 1
        tally[1] += score["score"]
        stage = stages.get(record["deployment"])
        if stage is not None and in_stage(record, stage):
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
            add_moments(row, 3 + 6 * index, user[x], user[y])
    version_sources: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0.0] * 6)
    for source_key, tally in user_sources.items():
        add_moments(version_sources[(*source_key[:3], source_key[4])], 0, tally[0], tally[1])
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
        "hour_latency": hours(latency),
        "stage_user_sums": {key: tuple(value) for key, value in users.items()},
        "stage_source_sums": {key: tuple(value) for key, value in user_sources.items()},
    }


def hours(latency: dict[tuple[Any, ...], int]) -> dict[tuple[Any, ...], tuple[int]]:
    summed: dict[tuple[Any, ...], int] = defaultdict(int)
    for (deployment, version, minute, metric, bucket), count in latency.items():
        summed[(deployment, version, minute.replace(minute=0), metric, bucket)] += count
    return {key: (count,) for key, count in summed.items()}


def add_moments(row: list[Any], at: int, x: float, y: float) -> None:
    """One user's (x > 0, x, y, x², y², x·y) added to row[at:at + 6]."""
    for offset, value in enumerate((x > 0, x, y, x * x, y * y, x * y)):
        row[at + offset] += value


def in_stage(record: dict[str, Any], stage: dict[str, Any]) -> bool:
    return (record["user_hash"] is not None and record["status"] != "client_cancelled"
            and moment(record["created_at"]) >= moment(stage["started_at"]))


_MOMENTS = tuple(f"{metric}_{name}" for metric in ("errors", "quality", "slow", "slow_reference", "slow_rollback",
                                                    "cost") for name in ("units", "x", "y", "xx", "yy", "xy"))
_KEYS = {
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


def stored(url: str) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Every aggregate table as stored, for the stages still judged: table → key → values."""
    judged = {(row["deployment"], moment(row["started_at"])) for row in query(url, "SELECT * FROM rollout_stages")}
    tables: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for table, (keys, fields) in _KEYS.items():
        rows = {}
        for row in query(url, f"SELECT * FROM {table}"):
            key = tuple(moment(row[name]) if name in ("minute", "hour", "started_at") else row[name] for name in keys)
            if table.startswith("stage_") and key[:2] not in judged:
                continue
            if table == "stage_version_sums" and not row["users"]:
                continue  # a version whose users all went (none in these tests)
            rows[key] = tuple(row[name] for name in fields)
        tables[table] = rows
    return tables


def assert_aggregates_match(url: str) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Fail unless every stored aggregate equals its recomputation; returns the recomputation."""
    wanted = expected(url)
    found = stored(url)
    for table, rows in wanted.items():
        assert set(found[table]) == set(rows), table
        for key, values in rows.items():
            # Sums of squares kept by adding differences drift by rounding: far below what a check reads.
            assert found[table][key] == pytest.approx(values, rel=1e-7, abs=1e-9), (table, key)
    return wanted


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
