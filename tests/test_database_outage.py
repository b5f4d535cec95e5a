"""A real PostgreSQL stopped and restarted under a running gateway (RELIABILITY C2, C3).

The test makes a throwaway cluster of its own (initdb on a free port, as the
`postgres` user when run as root), so stopping it disturbs nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import settings_from_dict
from gateway.migrate import upgrade
from tests.conftest import Gateway, base_config, query
from tests.fakes import FakeUpstream, free_port

BIN = Path("/usr/lib/postgresql/15/bin")
MESSAGES = [{"role": "user", "content": "hello"}]


class Cluster:
    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="canary-pg-"))
        self.data = self.directory / "data"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.directory / "log"),
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists() or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL 15 server binaries are not installed here")
    made = Cluster()
    made.init()
    made.start()
    yield made
    try:
        made.stop()
    except subprocess.CalledProcessError:
        pass
    made.remove()


def test_records_survive_a_postgresql_restart_exactly_once(
    cluster: Cluster, fake: FakeUpstream, tmp_path: Path
) -> None:
    upgrade(cluster.url)
    config: dict[str, Any] = base_config(cluster.url, fake.url, tmp_path / "spool")
    config["database"] = {"pool_timeout": "1s", "statement_timeout": "2s", "refresh_interval": "200ms"}
    config["recorder"].update({"max_buffer": 20, "max_backoff": "500ms"})
    gateway = Gateway(settings_from_dict(config)).start()
    ids: list[str] = []

    def call(count: int) -> list[int]:
        codes = []
        with gateway.client() as http:
            for index in range(count):
                answer = http.post("/v1/chat/completions", json={
                    "model": "support-bot", "messages": MESSAGES, "user": f"u{len(ids)}-{index}"})
                codes.append(answer.status_code)
                ids.append(answer.headers["x-request-id"])
        return codes

    try:
        assert call(10) == [200] * 10
        gateway.records(10)
        cluster.stop()
        started = time.monotonic()
        assert call(60) == [200] * 60  # served while the database is down
        assert time.monotonic() - started < 10
        with gateway.client() as http:
            ready = http.get("/readyz").json()
            metrics = http.get("/metrics").text
        assert ready["status"] == "degraded"
        assert "canary_records_spooled_total" in metrics
        time.sleep(1.0)
        assert list((tmp_path / "spool").glob("records-*.jsonl")), "records beyond max_buffer go to the spool"
        cluster.start()
        deadline = time.monotonic() + 20
        while True:
            rows = query(cluster.url, "SELECT id FROM request_records")
            if len(rows) >= 70 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert call(5) == [200] * 5
    finally:
        gateway.stop()
    stored = [row["id"] for row in query(cluster.url, "SELECT id FROM request_records")]
    assert len(stored) == len(set(stored)) == 75  # every call once: none lost, none doubled
    assert set(stored) == set(ids)
    assert not list((tmp_path / "spool").glob("records-*"))
