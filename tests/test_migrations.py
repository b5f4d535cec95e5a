"""Migrations keep what was stored: calls recorded before the `api` column are chat calls; the aggregates
are built from the records and scores already stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.migrate import upgrade
from tests.conftest import query
from tests.recompute import assert_aggregates_match


def test_records_written_before_the_api_column_are_chat_calls(unmigrated_database_url: str) -> None:
    upgrade(unmigrated_database_url, "0003")
    query(unmigrated_database_url,
          "INSERT INTO request_records (id, created_at, deployment, version, provider, upstream_model, "
          "stream, status, http_status, latency_ms) VALUES ('old-1', CURRENT_TIMESTAMP, 'bot', 'v1', "
          "'fake', 'm', false, 'ok', 200, 1.5)")
    upgrade(unmigrated_database_url)
    assert query(unmigrated_database_url, "SELECT id, api FROM request_records") == [{"id": "old-1", "api": "chat"}]


def test_the_aggregates_are_built_from_what_was_stored_before_them(unmigrated_database_url: str) -> None:
    url = unmigrated_database_url
    upgrade(url, "0005")
    now = datetime.now(UTC).replace(microsecond=0)
    stage = now - timedelta(hours=1)
    query(url, "INSERT INTO deployments (name, stable_version, canary_version, canary_percent, stage, status, paused, "
               "revision, anonymous, policy, stage_started_at, updated_at) VALUES ('bot', 'v1', 'v2', 5, 0, 'canary', "
               "false, 3, 'stable', '{}', :stage, :stage)", stage=stage)
    for index in range(60):
        status = ("ok", "ok", "ok", "error", "client_cancelled")[index % 5]
        query(url, "INSERT INTO request_records (id, created_at, deployment, version, user_hash, provider, "
                   "upstream_model, stream, status, http_status, latency_ms, ttft_ms, prompt_tokens, cost_usd, "
                   "quality, api) VALUES (:id, :at, 'bot', :version, :user, 'p', 'm', false, :status, 200, :latency, "
                   ":ttft, 10, :cost, :quality, 'chat')",
              id=f"old-{index}", at=now - timedelta(minutes=100 - index * 1.5), version=("v1", "v2")[index % 2],
              user=f"u{index % 7}" if index % 11 else None, status=status, latency=100.0 + index * 13.7,
              ttft=20.0 + index if index % 3 == 0 else None, cost=0.001 * index if index % 4 else None,
              quality=0.5 if index % 6 == 0 else None)
        if index % 6 == 0:
            query(url, "INSERT INTO quality_scores (id, request_id, source, score, created_at) "
                       "VALUES (:id, :request, 'feedback', 0.5, :at)", id=f"s{index}", request=f"old-{index}", at=now)
    upgrade(url)
    wanted = assert_aggregates_match(url)
    assert sum(row[0] for row in wanted["minute_stats"].values()) == 48  # every call but the cancelled ones
    assert 0 < sum(row[0] for row in wanted["stage_user_sums"].values()) < 48  # the stage's, with a user id
    assert wanted["minute_latency"] and wanted["minute_sources"] and wanted["stage_source_sums"]
