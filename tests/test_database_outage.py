"""A real PostgreSQL stopped and restarted under a running gateway (RELIABILITY C2, C3).

The tests make a throwaway cluster of their own (`cluster` in conftest.py:
initdb on a free port), so stopping it disturbs nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import settings_from_dict
from gateway.migrate import head_revision, upgrade
from tests.conftest import Cluster, Gateway, base_config, query, wait_for
from tests.fakes import FakeUpstream
from tests.recompute import assert_aggregates_match

MESSAGES = [{"role": "user", "content": "hello"}]


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
        # Records beyond max_buffer go to the spool.
        wait_for(lambda: list((tmp_path / "spool").glob("records-*.jsonl")), timeout=10, what="the spool files")
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
    # The aggregates count every call once too: the spooled ones and those written before the outage.
    wanted = assert_aggregates_match(cluster.url)
    assert sum(row[0] for row in wanted["minute_stats"].values()) == 75
    assert sum(row[0] for row in wanted["stage_user_sums"].values()) == 75


def test_nothing_is_dropped_while_a_small_buffer_spills_and_the_spool_drains_under_load(
    cluster: Cluster, fake: FakeUpstream, tmp_path: Path
) -> None:
    """RELIABILITY C5 with `max_buffer` far below what an outage produces: the spool takes
    the overflow in large files, and after the outage it drains while new calls keep coming."""
    upgrade(cluster.url)
    spool = tmp_path / "spool"
    config: dict[str, Any] = base_config(cluster.url, fake.url, spool)
    config["database"] = {"pool_timeout": "1s", "statement_timeout": "2s", "refresh_interval": "200ms"}
    config["recorder"].update({"max_buffer": 40, "batch_size": 20, "max_backoff": "500ms"})
    gateway = Gateway(settings_from_dict(config)).start()
    answered: list[str] = []
    failed: list[int] = []
    stop = threading.Event()

    def traffic(worker: int) -> None:
        with gateway.client() as http:
            index = 0
            while not stop.is_set():
                index += 1
                answer = http.post("/v1/chat/completions", json={
                    "model": "support-bot", "messages": MESSAGES, "user": f"w{worker}-{index}",
                    "stream": index % 4 == 0})
                answer.read()
                if answer.status_code == 200:
                    answered.append(answer.headers["x-request-id"])
                else:
                    failed.append(answer.status_code)

    spool_files: dict[str, int] = {}

    def watch_spool(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for path in spool.glob("records-*.jsonl"):
                with contextlib.suppress(OSError):  # drained meanwhile
                    spool_files.setdefault(path.name, len(path.read_text().splitlines()))
            time.sleep(0.05)

    workers = [threading.Thread(target=traffic, args=(index,)) for index in range(6)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        cluster.stop()
        watch_spool(4.0)
        before_restart = len(answered)
        cluster.start()
        time.sleep(5.0)  # the spool drains while calls keep coming
        stop.set()
        for worker in workers:
            worker.join(30)
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            metrics = http.get("/metrics").text
    finally:
        stop.set()
        gateway.stop()
    # More calls than memory holds (max_buffer 40) were answered before the restart, so some had to spill.
    assert failed == [] and len(answered) > before_restart > 40
    assert spool_files, "the outage produced more records than max_buffer: some must have been spooled"
    assert min(spool_files.values()) >= 20  # spilled in large files (half of max_buffer at least)
    dropped = [line for line in metrics.splitlines() if line.startswith("canary_records_dropped_total{")]
    assert all(line.endswith(" 0.0") for line in dropped), dropped
    stored = [row["id"] for row in query(cluster.url, "SELECT id FROM request_records")]
    assert len(stored) == len(set(stored))
    assert set(answered) <= set(stored)  # every answered call recorded once
    assert not list(spool.glob("records-*"))
    assert_aggregates_match(cluster.url)


def test_readiness_tells_the_truth_about_a_hung_database(cluster: Cluster, fake: FakeUpstream, tmp_path: Path) -> None:
    """RELIABILITY C6/C2 with a database that neither answers nor fails (every process SIGSTOPped)."""
    upgrade(cluster.url)
    config: dict[str, Any] = base_config(cluster.url, fake.url, tmp_path / "spool")
    config["database"] = {"pool_timeout": "1s", "statement_timeout": "2s", "refresh_interval": "200ms",
                          "probe_timeout": "500ms"}
    config["recorder"].update({"max_backoff": "500ms"})
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.client() as http:
            assert http.get("/readyz").json() == {
                "status": "ready", "database": "ok", "deployments": 1, "records_held": 0, "records_spooled": False}
            cluster.freeze()
            try:
                started = time.monotonic()
                answers = [http.post("/v1/chat/completions", json={
                    "model": "support-bot", "messages": MESSAGES, "user": f"u{index}"}) for index in range(20)]
                assert [answer.status_code for answer in answers] == [200] * 20  # the hot path does not wait
                assert time.monotonic() - started < 5
                deadline = time.monotonic() + 3
                while True:
                    asked = time.monotonic()
                    ready = http.get("/readyz")
                    assert time.monotonic() - asked < 1.5  # the probe is bounded
                    if ready.json()["database"] == "unavailable" or time.monotonic() > deadline:
                        break
                assert ready.status_code == 200 and ready.json()["status"] == "degraded"
                assert ready.json()["records_held"] == 20
            finally:
                cluster.thaw()
            deadline = time.monotonic() + 15
            while http.get("/readyz").json()["status"] != "ready":
                assert time.monotonic() < deadline, "readiness did not recover after the database did"
                time.sleep(0.2)
        rows = gateway.records(20, timeout=15)
    finally:
        gateway.stop()
    assert {row["id"] for row in rows} == {answer.headers["x-request-id"] for answer in answers}


def test_a_database_never_migrated_and_down_at_start_is_migrated_when_it_comes(
    cluster: Cluster, fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    cluster.stop()  # a fresh cluster: no schema at all, and not running when the gateway starts
    config: dict[str, Any] = base_config(cluster.url, fake.url, tmp_path / "spool")
    config["database"] = {"pool_timeout": "1s", "statement_timeout": "2s", "refresh_interval": "200ms"}
    config["recorder"].update({"max_backoff": "500ms"})
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.client() as http:
            served = [http.post("/v1/chat/completions", json={
                "model": "support-bot", "messages": MESSAGES, "user": f"u{index}"}) for index in range(5)]
            assert [answer.status_code for answer in served] == [200] * 5  # on the declared configuration
            assert http.get("/readyz").json()["status"] == "degraded"
            cluster.start()
            deadline = time.monotonic() + 20
            while http.get("/readyz").json()["status"] != "ready":
                assert time.monotonic() < deadline, "the gateway did not recover once the database came"
                time.sleep(0.2)
            with gateway.admin() as admin:
                deployment = admin.get("/admin/deployments/support-bot")
            assert deployment.status_code == 200 and deployment.json()["canary"] == "v2"  # synced, then stored
        rows = gateway.records(5, timeout=15)
    finally:
        gateway.stop()
    [version] = query(cluster.url, "SELECT version_num FROM alembic_version")
    assert version["version_num"] == head_revision()
    assert {row["id"] for row in rows} == {answer.headers["x-request-id"] for answer in served}
    assert any("empty (never migrated): migrating to revision" in record.getMessage() for record in caplog.records)


def test_a_gateway_told_not_to_migrate_says_the_schema_is_missing(
    cluster: Cluster, fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config: dict[str, Any] = base_config(cluster.url, fake.url, tmp_path / "spool")
    config["database"] = {"pool_timeout": "1s", "refresh_interval": "200ms", "migrate": False}
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.client() as http:
            assert http.get("/readyz").json()["status"] == "degraded"
            assert any("run `canary-gateway migrate`" in record.getMessage() for record in caplog.records)
            assert query(cluster.url, "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'") == [{"n": 0}]
            upgrade(cluster.url)  # the operator's migration job
            deadline = time.monotonic() + 10
            while http.get("/readyz").json()["status"] != "ready":
                assert time.monotonic() < deadline, "the gateway did not notice the migrated schema"
                time.sleep(0.2)
    finally:
        gateway.stop()


def test_feedback_for_a_call_still_in_the_spool_is_accepted_and_lands(
    cluster: Cluster, fake: FakeUpstream, tmp_path: Path
) -> None:
    """The database is back but the writer has not drained the spool yet: the call exists, only not in
    the database. Its feedback is accepted (202), not refused as unknown, and ends on the call."""
    upgrade(cluster.url)
    spool = tmp_path / "spool"
    config: dict[str, Any] = base_config(cluster.url, fake.url, spool)
    config["database"] = {"pool_timeout": "1s", "statement_timeout": "2s", "refresh_interval": "200ms"}
    config["recorder"].update({"max_buffer": 10, "max_backoff": "8s"})
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.client() as http:
            cluster.stop()
            answers = [http.post("/v1/chat/completions", json={
                "model": "support-bot", "messages": MESSAGES, "user": f"u{index}"}) for index in range(40)]
            assert [answer.status_code for answer in answers] == [200] * 40
            time.sleep(9)  # the writer's backoff grows to its 8 s maximum
            assert list(spool.glob("records-*.jsonl")), "the oldest calls wait in the spool"
            cluster.start()
            first = answers[0].headers["x-request-id"]  # the oldest: spilled first
            ready = time.monotonic() + 10
            while http.get("/readyz").json()["database"] != "ok":
                assert time.monotonic() < ready
                time.sleep(0.1)
            assert not query(cluster.url, "SELECT id FROM request_records WHERE id = :id", id=first)
            feedback = http.post("/v1/feedback", json={"request_id": first, "score": 0.25})
            assert feedback.status_code == 202 and feedback.json()["status"] == "accepted"
            deadline = time.monotonic() + 20
            while not (row := query(cluster.url, "SELECT quality FROM request_records WHERE id = :id", id=first)) \
                    or row[0]["quality"] is None:
                assert time.monotonic() < deadline, "the spooled call never got its feedback's quality"
                time.sleep(0.2)
    finally:
        gateway.stop()
    assert row[0]["quality"] == 0.25
