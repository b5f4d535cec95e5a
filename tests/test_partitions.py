"""Daily partitions on PostgreSQL, retention on both databases.

The partition migration converts a table that holds rows without losing
one; partitions are made ahead of their day, and a row of a day without one
waits in the default partition until its partition is made; retention drops
whole partitions on PostgreSQL and deletes in batches on SQLite, the
aggregates of the records going with them, counted in /metrics.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.config import DatabaseSettings, RetentionSettings
from gateway.maintenance import DAYS_AHEAD, Maintenance
from gateway.metrics import Metrics
from gateway.migrate import upgrade
from gateway.models import QualityScore, RequestRecord, RolloutEvent
from gateway.store import Store, create_engine
from gateway.store.partitions import partition_name
from tests.conftest import query
from tests.recompute import assert_aggregates_match, declare, start_canary

DB = DatabaseSettings(pool_timeout=2.0, statement_timeout=10.0)


def record(index: int, at: datetime, **changes: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "id": f"r{index}", "created_at": at, "deployment": "bot", "version": "v1" if index % 3 else "v2",
        "user_hash": f"u{index % 17}", "provider": "p", "upstream_model": "m", "stream": False,
        "status": "ok" if index % 9 else "error", "http_status": 200, "error_kind": None,
        "latency_ms": 50.0 + (index * 37) % 900, "ttft_ms": None, "prompt_tokens": 10, "completion_tokens": 5,
        "cost_usd": 0.001, **changes}
    return RequestRecord(**values)


def partitions(url: str, table: str) -> dict[str, int]:
    """Partition → its rows."""
    names = [row["relname"] for row in query(
        url, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
             "WHERE i.inhparent = CAST(:table AS regclass)", table=table)]
    return {name: query(url, f"SELECT count(*) AS n FROM {name}")[0]["n"] for name in names}


def test_the_partition_migration_converts_a_populated_table_without_losing_a_row(
    unmigrated_database_url: str,
) -> None:
    url = unmigrated_database_url
    upgrade(url, "0006")
    now = datetime.now(UTC)
    rng = random.Random(1)
    rows: list[dict[str, Any]] = []
    for index in range(300):
        at = now - timedelta(days=rng.uniform(0, 20)) if index % 10 else now + timedelta(days=rng.uniform(0, 4))
        rows.append({"id": f"old-{index}", "at": at, "version": ("v1", "v2")[index % 2], "latency": 10.0 + index})
        query(url, "INSERT INTO request_records (id, created_at, deployment, version, user_hash, provider, "
                   "upstream_model, stream, status, http_status, latency_ms, api) VALUES (:id, :at, 'bot', :version, "
                   "'u', 'p', 'm', false, 'ok', 200, :latency, 'chat')", **rows[-1])
        query(url, "INSERT INTO quality_scores (id, request_id, source, score, created_at) "
                   "VALUES (:id, :request, 'judge', 0.5, :at)", id=f"s{index}", request=f"old-{index}", at=at)
    before = {row["id"]: row for row in query(url, "SELECT * FROM request_records")}
    upgrade(url)  # through the partition migration and every later one
    after = {row["id"]: row for row in query(url, "SELECT * FROM request_records")}
    assert {key: {column: row[column] for column in before[key]} for key, row in after.items()} == before
    assert {(row["mode"], row["shadow_of"]) for row in after.values()} == {("live", None)}  # added by 0010
    assert len(query(url, "SELECT id FROM quality_scores")) == 300
    if url.startswith("sqlite"):
        return
    assert {row["relname"] for row in query(url, "SELECT c.relname FROM pg_partitioned_table p "
                                                 "JOIN pg_class c ON c.oid = p.partrelid")} == {
        "request_records", "quality_scores"}
    held = partitions(url, "request_records")
    today = now.date()
    assert set(held) == {"request_records_legacy", "request_records_default", partition_name("request_records", today),
                         partition_name("request_records", today + timedelta(days=1))}
    assert held["request_records_legacy"] == sum(row["at"].date() < today for row in rows)
    assert held[partition_name("request_records", today)] == sum(row["at"].date() == today for row in rows)
    assert sum(held.values()) == 300
    key = query(url, "SELECT pg_get_constraintdef(oid) AS key FROM pg_constraint "
                     "WHERE conrelid = CAST('request_records' AS regclass) AND contype = 'p'")
    assert key == [{"key": "PRIMARY KEY (id, created_at)"}]


async def test_partitions_are_made_ahead_and_a_day_without_one_waits_in_the_default_partition(
    postgres_url: str,
) -> None:
    url = postgres_url
    query(url, "TRUNCATE request_records, quality_scores, minute_stats, minute_latency, minute_sources")
    store = Store(create_engine(url, DB))
    metrics = Metrics(CollectorRegistry())
    far = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=60)
    try:
        # A clock far ahead: no partition of that day yet, the row waits in the default partition.
        early = record(1, far)
        await store.insert_batch(records=[early], scores=[])
        assert partitions(url, "request_records")["request_records_default"] == 1
        await Maintenance(store, RetentionSettings(records=None, scores=None), metrics, clock=lambda: far).run()
        await store.insert_batch(records=[early, record(2, far + timedelta(days=1))], scores=[])  # early: once
    finally:
        await store.close()
    held = partitions(url, "request_records")
    made = [partition_name("request_records", (far + timedelta(days=offset)).date())
            for offset in range(DAYS_AHEAD + 1)]
    assert set(made) <= set(held)
    assert held[made[0]] == 1 and held[made[1]] == 1 and held["request_records_default"] == 0
    assert metrics.registry.get_sample_value("canary_partitions_created_total", {"table": "request_records"}) == 3
    for name in made:
        query(url, f"ALTER TABLE request_records DETACH PARTITION {name}")
        query(url, f"DROP TABLE {name}")
    for offset in range(DAYS_AHEAD + 1):
        name = partition_name("quality_scores", (far + timedelta(days=offset)).date())
        query(url, f"ALTER TABLE quality_scores DETACH PARTITION {name}")
        query(url, f"DROP TABLE {name}")


async def test_retention_removes_what_is_older_than_its_period_and_counts_it(database_url: str) -> None:
    url = database_url
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=40)).date()
    store = Store(create_engine(url, DB))
    metrics = Metrics(CollectorRegistry())
    try:
        if store.dialect.postgresql:
            await store.ensure_partitions(today=old_day, days_ahead=0)
        deployment = await declare(store, now=now - timedelta(days=50))
        old = [record(index, datetime(old_day.year, old_day.month, old_day.day, 1, tzinfo=UTC)
                      + timedelta(minutes=index)) for index in range(120)]
        older = [record(index, now - timedelta(days=90, minutes=index)) for index in range(200, 230)]  # default
        new = [record(index, now - timedelta(days=2, minutes=index)) for index in range(300, 400)]
        scores = [QualityScore(id=f"s{r.id}", request_id=r.id, source="judge", score=0.5, created_at=r.created_at)
                  for r in [*old, *older, *new]]
        await store.insert_batch(records=[*old, *older, *new], scores=scores)
        # A finished stage: its per-user sums go; the judged one's stay.
        deployment = await start_canary(store, deployment, at=now - timedelta(days=3))
        await store.insert_batch(records=[record(500, now - timedelta(hours=1))], scores=[])
        event = RolloutEvent(deployment="bot", action="paused", actor="t", before=None, after=None,
                             at=now - timedelta(days=400))
        await store.record_event(event)
        await store.apply_rollout(expected_revision=deployment.rollout.revision,
                                  state=replace(deployment.rollout, stage_started_at=now - timedelta(days=2, hours=12)),
                                  event=RolloutEvent(deployment="bot", action="advanced", actor="t", before=None,
                                                     after=None))
        stages_before = query(url, "SELECT DISTINCT started_at FROM stage_user_sums")
        expired = await Maintenance(store, RetentionSettings(events=365 * 86400.0, batch_size=7), metrics,
                                    clock=lambda: now).run()
    finally:
        await store.close()
    kept = {row["id"] for row in query(url, "SELECT id FROM request_records")}
    assert kept == {r.id for r in new} | {"r500"}
    assert {row["request_id"] for row in query(url, "SELECT request_id FROM quality_scores")} == {r.id for r in new}
    assert [row["action"] for row in query(url, "SELECT action FROM rollout_events")].count("paused") == 0
    assert len(stages_before) == 2 and len(query(url, "SELECT DISTINCT started_at FROM stage_user_sums")) == 1
    assert_aggregates_match(url)  # the minute sums of the removed records went with them
    sample = metrics.registry.get_sample_value
    if store.dialect.postgresql:
        assert expired.partitions == {"request_records": 1, "quality_scores": 1}
        assert partition_name("request_records", old_day) not in partitions(url, "request_records")
        assert sample("canary_retention_partitions_dropped_total", {"table": "request_records"}) == 1
        assert sample("canary_retention_rows_deleted_total", {"table": "request_records"}) == 30  # the default's
    else:
        assert sample("canary_retention_rows_deleted_total", {"table": "request_records"}) == 150
    assert sample("canary_retention_rows_deleted_total", {"table": "rollout_events"}) == 1
    assert (sample("canary_retention_rows_deleted_total", {"table": "minute_stats"}) or 0) > 0
