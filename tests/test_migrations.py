"""Migrations keep what was stored: calls recorded before the `api` column are chat calls."""

from __future__ import annotations

from gateway.migrate import upgrade
from tests.conftest import query


def test_records_written_before_the_api_column_are_chat_calls(unmigrated_database_url: str) -> None:
    upgrade(unmigrated_database_url, "0003")
    query(unmigrated_database_url,
          "INSERT INTO request_records (id, created_at, deployment, version, provider, upstream_model, "
          "stream, status, http_status, latency_ms) VALUES ('old-1', CURRENT_TIMESTAMP, 'bot', 'v1', "
          "'fake', 'm', false, 'ok', 200, 1.5)")
    upgrade(unmigrated_database_url)
    assert query(unmigrated_database_url, "SELECT id, api FROM request_records") == [{"id": "old-1", "api": "chat"}]
