"""Migrations keep what was stored: calls recorded before the `api` column are chat calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.migrate import upgrade
from tests.conftest import ADMIN_URL, _autocommit, query


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"canary_migrate_{uuid.uuid4().hex[:10]}"
    _autocommit(ADMIN_URL, f'CREATE DATABASE "{name}"')
    yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    _autocommit(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_records_written_before_the_api_column_are_chat_calls(fresh_url: str) -> None:
    upgrade(fresh_url, "0003")
    query(fresh_url, "INSERT INTO request_records (id, created_at, deployment, version, provider, upstream_model, "
                     "stream, status, http_status, latency_ms) VALUES ('old-1', CURRENT_TIMESTAMP, 'bot', 'v1', "
                     "'fake', 'm', false, 'ok', 200, 1.5)")
    upgrade(fresh_url)
    assert query(fresh_url, "SELECT id, api FROM request_records") == [{"id": "old-1", "api": "chat"}]
