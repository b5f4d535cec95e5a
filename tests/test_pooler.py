"""PostgreSQL behind PgBouncer in transaction mode (`database.pooler: transaction`): a real pgbouncer process.

The store, the migrations and a running gateway go through a pgbouncer
started here on a free port (`pool_mode = transaction`, two server
connections), in front of the test server: records and scores written by two
stores at once, every aggregate equal to its recomputation, the rollout
decision lock held by one store's transaction while the other is refused
it, the statement timeout in force, and no prepared statement left on a
server connection. Skipped, saying why, when pgbouncer is not installed;
under CI (`CI` set) that is a failure instead, since .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy.exc import DBAPIError

from gateway.config import DatabaseSettings, settings_from_dict
from gateway.migrate import upgrade
from gateway.models import QualityScore, RequestRecord
from gateway.store import Store, create_engine
from tests.conftest import MESSAGES, Gateway, _autocommit, base_config, merge, query, wait_for
from tests.fakes import FakeUpstream, free_port
from tests.recompute import assert_aggregates_match, declare, start_canary

POOLED = DatabaseSettings(pooler="transaction", pool_size=3, max_overflow=0, statement_timeout=0.5)


class PgBouncer:
    """pgbouncer in transaction mode on 127.0.0.1:`port`, in front of `server` (a postgresql:// URL's host)."""

    def __init__(self, server: str) -> None:
        target = urlsplit(server.replace("+asyncpg", ""))
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="canary-pgbouncer-"))
        (self.directory / "users.txt").write_text(f'"{target.username or "postgres"}" ""\n')
        (self.directory / "pgbouncer.ini").write_text("\n".join([
            "[databases]",
            f"* = host={target.hostname} port={target.port or 5432}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
            "auth_type = trust", f"auth_file = {self.directory / 'users.txt'}",
            "pool_mode = transaction", "default_pool_size = 2", "max_client_conn = 200",
            f"logfile = {self.directory / 'pgbouncer.log'}", "",
        ]))
        command = ["pgbouncer", str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer will not run as root
            shutil.chown(self.directory, "postgres")
            command[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("pgbouncer did not start") from None
                time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def bouncer(postgres_server: str) -> Iterator[tuple[str, str]]:
    """(the URL through pgbouncer, the same database directly) for a fresh, empty database."""
    if shutil.which("pgbouncer") is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed (.ci/run installs Debian's pgbouncer)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer) to run these tests")
    name = f"canary_pooled_{uuid.uuid4().hex[:10]}"
    _autocommit(postgres_server, f'CREATE DATABASE "{name}"')
    pgbouncer = PgBouncer(postgres_server)
    try:
        yield pgbouncer.url(name), f"{postgres_server.rpartition('/')[0]}/{name}"
    finally:
        pgbouncer.stop()
        _autocommit(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def record(rng: random.Random, index: int, at: datetime) -> RequestRecord:
    return RequestRecord(
        id=f"r{index}", created_at=at, deployment="bot", version=rng.choice(("v1", "v2")),
        user_hash=f"u{rng.randint(0, 60)}", provider="p", upstream_model="m", stream=False,
        status=rng.choice(("ok", "ok", "ok", "error")), http_status=200, error_kind=None,
        latency_ms=rng.lognormvariate(6, 0.5), ttft_ms=None, prompt_tokens=10, completion_tokens=20,
        cost_usd=0.002, uncached_cost_usd=None)


async def test_the_store_writes_decides_and_times_out_through_pgbouncer_in_transaction_mode(
    bouncer: tuple[str, str]
) -> None:
    pooled, direct = bouncer
    await asyncio.to_thread(upgrade, pooled, pooler="transaction")
    first = Store(create_engine(pooled, POOLED), check_engine=create_engine(pooled, POOLED, checks=True))
    second = Store(create_engine(pooled, POOLED), check_engine=create_engine(pooled, POOLED, checks=True))
    rng = random.Random(3)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        await start_canary(first, await declare(first, now=now - timedelta(hours=2)), at=now - timedelta(hours=1))
        made = [record(rng, index, now - timedelta(minutes=50) + timedelta(seconds=3 * index)) for index in range(800)]
        scores = [QualityScore(id=f"s{index}", request_id=made[index * 7].id, source="feedback", score=0.5,
                               created_at=now) for index in range(100)]
        # Two writers at once, 16 batches in flight over 2 server connections: each transaction on one of
        # them, the scores' calls stored by the other writer's batches in flight (the writers' advisory locks
        # are transaction-level, so they hold through the pooler).
        await asyncio.gather(*((first if index % 2 else second).insert_batch(
            records=made[index * 50:(index + 1) * 50], scores=scores[index * 6:(index + 1) * 6])
            for index in range(17)))
        # The decision lock is a transaction's: held through the pooler for as long as that transaction lasts.
        async with first.decision_session("bot") as holding:
            assert holding is not None
            async with second.decision_session("bot") as refused:
                assert refused is None
        async with second.decision_session("bot") as session:
            assert session is not None
        # statement_timeout (0.5 s) is set in each transaction, since pgbouncer refuses it at connect.
        with pytest.raises(DBAPIError, match="statement timeout"):
            async with first.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT pg_sleep(3)")
        # No named prepared statement is left on the server connections pgbouncer shares.
        async with first.engine.connect() as one, second.engine.connect() as other:
            left = [await connection.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
                    for connection in (one, other)]
            assert [result.scalar() for result in left] == [0, 0]
    finally:
        await first.close()
        await second.close()
    assert query(direct, "SELECT count(*) AS n FROM request_records") == [{"n": 800}]
    assert query(direct, "SELECT count(*) AS n FROM quality_scores") == [{"n": 100}]
    assert_aggregates_match(direct)


def test_a_gateway_behind_pgbouncer_migrates_serves_records_and_changes_the_rollout(
    bouncer: tuple[str, str], fake: FakeUpstream, tmp_path: Path
) -> None:
    pooled, direct = bouncer
    config: dict[str, Any] = merge(base_config(pooled, fake.url, tmp_path / "spool"),
                                   {"database": {"pooler": "transaction"}})
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.client() as http:
            answers = [http.post("/v1/chat/completions", json={"model": "support-bot", "messages": MESSAGES,
                                                               "user": f"user-{index}"}) for index in range(40)]
        assert [answer.status_code for answer in answers] == [200] * 40
        with gateway.admin() as http:
            changed = http.put("/admin/deployments/support-bot/canary-percent",
                               json={"percent": 40, "reason": "through the pooler"})
        assert changed.status_code == 200, changed.text
        wait_for(lambda: len(query(direct, "SELECT id FROM request_records")) == 40, timeout=10,
                 what="the 40 records")
    finally:
        gateway.stop()
    stored = {row["id"] for row in query(direct, "SELECT id FROM request_records")}
    assert stored == {answer.headers["x-request-id"] for answer in answers}
    assert query(direct, "SELECT canary_percent FROM deployments") == [{"canary_percent": 40.0}]
    assert_aggregates_match(direct)
