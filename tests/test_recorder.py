"""The batch writer: nothing the gateway accepted is lost, nothing is written twice."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event

from gateway.config import DatabaseSettings, RecorderSettings, settings_from_dict
from gateway.metrics import Metrics
from gateway.migrate import upgrade
from gateway.models import QualityScore, RequestRecord
from gateway.recorder import SPILL_HEADROOM, Recorder, Spool
from gateway.store import Store, create_engine
from tests.conftest import Gateway, base_config, query
from tests.fakes import FakeUpstream, free_port

UNREACHABLE = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
FAST_DB = DatabaseSettings(pool_timeout=1.0, statement_timeout=2.0)


def record(**changes: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC),
        "deployment": "support-bot",
        "version": "v1",
        "user_hash": "ab" * 16,
        "provider": "fake",
        "upstream_model": "model-a",
        "stream": False,
        "status": "ok",
        "http_status": 200,
        "error_kind": None,
        "latency_ms": 12.5,
        "ttft_ms": None,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost_usd": 0.0001,
    }
    values.update(changes)
    return RequestRecord(**values)


def recorder_for(url: str, spool: Path, **settings: Any) -> tuple[Recorder, Store, Metrics]:
    store = Store(create_engine(url, FAST_DB))
    metrics = Metrics(CollectorRegistry())
    options = {"flush_interval": 0.05, "spool_dir": str(spool), "max_backoff": 0.2, **settings}
    return Recorder(store, RecorderSettings(**options), metrics), store, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


async def test_records_are_written_in_batches(database_url: str, tmp_path: Path) -> None:
    recorder, store, metrics = recorder_for(database_url, tmp_path / "spool", batch_size=7)
    recorder.start()
    records = [record() for _ in range(30)]
    for item in records:
        recorder.submit(item)
    await recorder.stop()
    await store.close()
    rows = query(database_url, "SELECT id, latency_ms, created_at FROM request_records")
    assert {row["id"] for row in rows} == {item.id for item in records}
    assert sample(metrics, "canary_records_written_total") == 30


async def test_writing_the_same_records_again_stores_them_once(database_url: str, tmp_path: Path) -> None:
    store = Store(create_engine(database_url, FAST_DB))
    batch = [record() for _ in range(5)]
    await store.insert_batch(records=batch, scores=[])
    await store.insert_batch(records=[*batch, record()], scores=[])
    await store.close()
    assert query(database_url, "SELECT count(*) AS n FROM request_records")[0]["n"] == 6


async def test_batches_of_every_size_land_through_few_distinct_sqlite_statements(tmp_path: Path) -> None:
    # SQLite's driver keeps each distinct statement prepared (128 per connection): one multi-row
    # INSERT or IN list per batch size held tens of MB at high call rates.
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await asyncio.to_thread(upgrade, url)
    store = Store(create_engine(url, FAST_DB))
    statements: set[str] = set()
    event.listen(store.engine.sync_engine, "before_cursor_execute",
                 lambda _conn, _cursor, statement, *_: statements.add(statement))
    made: list[RequestRecord] = []
    for size in range(1, 70):
        batch = [record(user_hash=uuid.uuid4().hex) for _ in range(size)]
        made += batch
        scores = [score(item.id, "feedback", 0.5) for item in batch[: size % 5]]
        await store.insert_batch(records=batch, scores=scores)
    await store.close()
    rows = query(url, "SELECT id, quality FROM request_records")
    assert {row["id"] for row in rows} == {item.id for item in made}
    assert sum(row["quality"] == 0.5 for row in rows) == sum(size % 5 for size in range(1, 70))
    assert len(statements) <= 40, len(statements)


async def test_one_bad_record_does_not_sink_its_batch(postgres_url: str, tmp_path: Path) -> None:
    query(postgres_url, "TRUNCATE request_records")
    recorder, store, metrics = recorder_for(postgres_url, tmp_path / "spool")
    good = [record() for _ in range(4)]
    bad = record(upstream_model="nul\x00byte")  # PostgreSQL text refuses NUL
    for item in [good[0], good[1], bad, good[2], good[3]]:
        recorder.submit(item)
    await recorder.flush()
    await store.close()
    stored = {row["id"] for row in query(postgres_url, "SELECT id FROM request_records")}
    assert stored == {item.id for item in good}
    assert sample(metrics, "canary_records_dropped_total", reason="rejected") == 1


async def test_database_down_records_are_spooled_then_written_once_back(
    database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    down, down_store, down_metrics = recorder_for(UNREACHABLE, spool)
    down.start()
    records = [record() for _ in range(25)]
    for item in records:
        down.submit(item)
    await down.stop(timeout=3)
    await down_store.close()
    lines = [json.loads(line) for path in spool.glob("records-*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(item.id for item in records)
    assert sample(down_metrics, "canary_records_spooled_total") == 25

    back, back_store, _ = recorder_for(database_url, spool)
    back.start()
    back.submit(record())  # wakes the writer; the spool is drained first
    await back.stop()
    await back_store.close()
    stored = [row["id"] for row in query(database_url, "SELECT id FROM request_records")]
    assert len(stored) == 26 and len(set(stored)) == 26
    assert {item.id for item in records} <= set(stored)
    assert not list(spool.glob("records-*"))


async def test_memory_stays_bounded_while_the_database_is_down(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    recorder, store, metrics = recorder_for(UNREACHABLE, spool, max_buffer=10, batch_size=5)
    recorder.start()
    for _ in range(12):
        for _ in range(5):
            recorder.submit(record())
        await asyncio.sleep(0.02)
    for _ in range(100):
        if recorder.depth <= 10:
            break
        await asyncio.sleep(0.05)
    assert recorder.depth <= 10
    # Whatever memory does not hold (max_buffer, plus the one batch the writer is trying) is on disk.
    assert sample(metrics, "canary_records_spooled_total") >= 60 - 10 - 5
    await recorder.stop(timeout=1)
    await store.close()
    assert sample(metrics, "canary_records_spooled_total") == 60
    assert sample(metrics, "canary_records_dropped_total", reason="buffer_full") == 0


async def test_a_full_spool_counts_the_loss(tmp_path: Path) -> None:
    recorder, store, metrics = recorder_for(UNREACHABLE, tmp_path / "spool", spool_max_bytes=1000)
    for _ in range(20):
        recorder.submit(record())
    await recorder.stop(timeout=1)
    await store.close()
    spooled = sample(metrics, "canary_records_spooled_total")
    assert 0 < spooled < 20
    assert sample(metrics, "canary_records_dropped_total", reason="spool_full") == 20 - spooled


async def test_new_records_are_written_while_a_large_spool_drains(database_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    backlog: list[RequestRecord | QualityScore] = [record() for _ in range(20_000)]
    writer = Spool(spool, max_bytes=1 << 30)
    for start in range(0, len(backlog), 1000):
        assert writer.append_items(backlog[start : start + 1000]) == 1000
    recorder, store, metrics = recorder_for(database_url, spool, batch_size=100)
    recorder.start()
    fresh = record()
    recorder.submit(fresh)
    for _ in range(200):
        if query(database_url, "SELECT id FROM request_records WHERE id = :id", id=fresh.id):
            break
        await asyncio.sleep(0.05)
    # The new record did not wait for the backlog: most of the spool is still there.
    assert len(list(spool.glob("records-*"))) >= 10
    await recorder.stop(timeout=60)
    await store.close()
    stored = [row["id"] for row in query(database_url, "SELECT id FROM request_records")]
    assert len(stored) == len(set(stored)) == 20_001
    assert not list(spool.glob("records-*"))
    assert sample(metrics, "canary_records_written_total") == 20_001


async def test_large_spills_make_few_files(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    recorder, store, metrics = recorder_for(UNREACHABLE, spool, max_buffer=100, batch_size=10)
    recorder.start()
    for _ in range(1000):
        recorder.submit(record())
        await asyncio.sleep(0)
    for _ in range(100):
        if recorder.depth <= 100:
            break
        await asyncio.sleep(0.05)
    files = {path: len(path.read_text().splitlines()) for path in spool.glob("records-*.jsonl")}
    assert files and min(files.values()) >= 50  # at least half of max_buffer per file, never one record
    await recorder.stop(timeout=1)
    await store.close()
    assert sample(metrics, "canary_records_spooled_total") == 1000
    assert sample(metrics, "canary_records_dropped_total", reason="buffer_full") == 0


async def test_a_spill_held_up_by_a_slow_disk_loses_nothing_while_the_spool_has_room(tmp_path: Path) -> None:
    """A busy disk can hold one fsync for a second: with a small max_buffer, the records arriving
    meanwhile wait in memory (up to the ceiling) instead of being dropped."""
    recorder, store, metrics = recorder_for(UNREACHABLE, tmp_path / "spool", max_buffer=10, batch_size=5)
    append = recorder._spool.append_items

    def slow_append(items: list[RequestRecord | QualityScore]) -> int:
        time.sleep(0.5)
        return append(items)

    recorder._spool.append_items = slow_append  # type: ignore[method-assign]
    recorder.start()
    for _ in range(300):
        recorder.submit(record())
        await asyncio.sleep(0.001)
    await recorder.stop(timeout=1)
    await store.close()
    assert sample(metrics, "canary_records_dropped_total", reason="buffer_full") == 0
    spooled = [line for path in (tmp_path / "spool").glob("records-*.jsonl") for line in path.read_text().splitlines()]
    assert len(spooled) == sample(metrics, "canary_records_spooled_total") == 300


async def test_past_the_ceiling_records_are_dropped_and_counted(tmp_path: Path) -> None:
    recorder, store, metrics = recorder_for(UNREACHABLE, tmp_path / "spool", max_buffer=10, batch_size=5)
    recorder.start()
    for _ in range(SPILL_HEADROOM + 100):  # no await: the spiller gets no turn meanwhile
        recorder.submit(record())
    # Memory stops at the ceiling, max(2 × max_buffer, max_buffer + SPILL_HEADROOM); the rest is counted lost.
    assert recorder.depth == 10 + SPILL_HEADROOM
    assert sample(metrics, "canary_records_dropped_total", reason="buffer_full") == 90
    await recorder.stop(timeout=1)
    await store.close()
    assert sample(metrics, "canary_records_spooled_total") == 10 + SPILL_HEADROOM


async def test_a_spooled_record_gets_the_quality_of_scores_written_before_it(
    database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    call = record()
    down, down_store, _ = recorder_for(UNREACHABLE, spool)
    down.submit(call)
    await down.stop(timeout=1)
    await down_store.close()
    assert list(spool.glob("records-*.jsonl"))

    back, back_store, _ = recorder_for(database_url, spool)
    back.submit_score(score(call.id, "feedback", 0.6))  # in memory: written before the spooled record
    back.start()
    await back.stop()
    await back_store.close()
    [row] = query(database_url, "SELECT quality FROM request_records WHERE id = :id", id=call.id)
    assert row["quality"] == pytest.approx(0.6)


def score(request_id: str, source: str, value: float) -> QualityScore:
    return QualityScore(id=uuid.uuid4().hex, request_id=request_id, source=source, score=value,
                        created_at=datetime.now(UTC))


async def test_quality_follows_its_scores_whatever_arrives_first(database_url: str, tmp_path: Path) -> None:
    recorder, store, _ = recorder_for(database_url, tmp_path / "spool")
    early, late = record(), record()
    recorder.submit_score(score(early.id, "judge", 0.4))  # before its record
    recorder.submit(early)
    recorder.submit_score(score(early.id, "evaluator:non_empty", 1.0))
    assert recorder.held(early.id) is early and recorder.held("unknown") is None
    recorder.submit(late)
    await recorder.flush()
    assert recorder.held(early.id) is None
    recorder.submit_score(score(late.id, "judge", 0.2))  # after its record was written
    recorder.submit_score(score(late.id, "feedback", 0.9))
    recorder.submit_score(score(late.id, "feedback", 0.7))
    await recorder.flush()
    await store.close()
    quality = {row["id"]: row["quality"] for row in query(database_url, "SELECT id, quality FROM request_records")}
    assert quality[early.id] == pytest.approx(0.7)  # automatic scores only: their average
    assert quality[late.id] == pytest.approx(0.8)  # feedback wins over the judge


def test_database_down_at_start_the_proxy_serves_and_keeps_the_records(
    fake: FakeUpstream, tmp_path: Path, database_url: str
) -> None:
    spool = tmp_path / "spool"
    config = base_config(UNREACHABLE, fake.url, spool)
    config["database"] = {"pool_timeout": "1s", "refresh_interval": "200ms"}
    gateway = Gateway(settings_from_dict(config)).start()
    try:
        with gateway.client() as http:
            ready = http.get("/readyz").json()
            answers = [
                http.post("/v1/chat/completions",
                          json={"model": "support-bot", "messages": [{"role": "user", "content": "hi"}],
                                "user": f"u{i}"})
                for i in range(5)
            ]
    finally:
        gateway.stop()
    assert ready["status"] == "degraded" and ready["database"] == "unavailable"
    assert [answer.status_code for answer in answers] == [200] * 5
    ids = {answer.headers["x-request-id"] for answer in answers}
    spooled = {json.loads(line)["id"] for path in spool.glob("records-*.jsonl")
               for line in path.read_text().splitlines()}
    assert spooled == ids

    config["database_url"] = database_url
    restarted = Gateway(settings_from_dict(config)).start()
    try:
        rows = restarted.records(5)
    finally:
        restarted.stop()
    assert {row["id"] for row in rows} == ids


@pytest.mark.parametrize("user", ["emoji 🚀", "nul\x00inside", "x" * 1024, "crlf\r\nin"])
def test_hostile_user_ids_are_hashed_and_stored(make_gateway: Any, user: str) -> None:
    gateway = make_gateway()
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", json={
            "model": "support-bot", "messages": [{"role": "user", "content": "hi"}], "user": user,
        })
    assert answer.status_code == 200
    [row] = gateway.records(1)
    assert len(row["user_hash"]) == 32 and user not in json.dumps(row, default=str)


def test_a_lone_surrogate_user_id_is_served(make_gateway: Any) -> None:
    gateway = make_gateway()
    body = b'{"model": "support-bot", "messages": [{"role": "user", "content": "hi"}], "user": "a\\ud800b"}'
    with gateway.client() as http:
        answer = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert len(gateway.records(1)[0]["user_hash"]) == 32
