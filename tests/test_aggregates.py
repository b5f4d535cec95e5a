"""The aggregates the record writer keeps equal a recomputation from the raw records, on SQLite and PostgreSQL.

Batches are written again (a retry, a replayed spool file), scores arrive
before, with and after their calls, calls arrive late for an earlier stage:
every sum still counts each call and each score once. The checks, compare and
the time series read these sums, and give what the raw records give.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway import rollout
from gateway.analysis import evidence_from_records, percentile_cont
from gateway.analysis.histogram import ALPHA
from gateway.config import DatabaseSettings, RecorderSettings
from gateway.metrics import Metrics
from gateway.models import QualityScore, RequestRecord, RolloutEvent
from gateway.recorder import Recorder, Spool
from gateway.store import Store, create_engine
from gateway.store.recount import audit_aggregates
from tests.conftest import query
from tests.recompute import POLICY, assert_aggregates_match, declare, moment, start_canary

DB = DatabaseSettings(pool_timeout=2.0, statement_timeout=10.0)
STAGE = datetime(2026, 3, 1, 12, tzinfo=UTC)


def make_record(rng: random.Random, index: int, at: datetime, version: str | None = None) -> RequestRecord:
    status = rng.choices(("ok", "error", "client_cancelled"), (0.9, 0.07, 0.03))[0]
    priced = rng.random() < 0.9
    cost = rng.uniform(0.001, 0.01) if priced and status == "ok" else None
    return RequestRecord(
        id=f"r{index}", created_at=at, deployment="bot", version=version or rng.choice(("v1", "v1", "v2", "v3")),
        user_hash=None if rng.random() < 0.05 else f"u{rng.randint(0, 120)}", provider="p", upstream_model="m",
        stream=rng.random() < 0.3, status=status, http_status=200, error_kind=None,  # type: ignore[arg-type]
        latency_ms=rng.lognormvariate(6.5, 0.6), ttft_ms=rng.lognormvariate(5, 0.5) if rng.random() < 0.3 else None,
        prompt_tokens=rng.randint(5, 50), completion_tokens=None if rng.random() < 0.1 else rng.randint(1, 90),
        cost_usd=cost, uncached_cost_usd=None if cost is None or rng.random() < 0.2 else cost * 1.5)


def make_score(rng: random.Random, record: RequestRecord, source: str, index: int) -> QualityScore:
    return QualityScore(id=f"s{index}-{source}", request_id=record.id, source=source, score=round(rng.random(), 2),
                        created_at=record.created_at + timedelta(seconds=rng.uniform(0, 600)))


def raw_records(url: str) -> list[RequestRecord]:
    rows = query(url, "SELECT * FROM request_records")
    return [RequestRecord(**{**row, "created_at": moment(row["created_at"]), "stream": bool(row["stream"])})
            for row in rows]


def raw_scores(url: str) -> list[QualityScore]:
    return [QualityScore(**{**row, "created_at": moment(row["created_at"])})
            for row in query(url, "SELECT * FROM quality_scores")]


async def test_the_sums_count_every_call_and_score_once_however_they_arrive(database_url: str) -> None:
    rng = random.Random(7)
    store = Store(create_engine(database_url, DB))
    try:
        deployment = await declare(store, now=STAGE - timedelta(hours=3))
        # An hour of stable calls before the stage: its p95 sets the stage's latency thresholds.
        baseline = [make_record(rng, index, STAGE - timedelta(seconds=rng.uniform(1, 3599)), "v1")
                    for index in range(400)]
        await store.insert_batch(records=baseline, scores=[])
        await start_canary(store, deployment, at=STAGE)
        made = [make_record(rng, index, STAGE + timedelta(seconds=rng.uniform(-600, 7000)))
                for index in range(400, 1600)]
        scores = [make_score(rng, record, source, index) for index, record in enumerate(made)
                  for source in ("feedback", "judge", "evaluator:json") if rng.random() < 0.25]
        by_record: dict[str, list[QualityScore]] = {}
        for score in scores:
            by_record.setdefault(score.request_id, []).append(score)
        batches: list[tuple[list[RequestRecord], list[QualityScore]]] = []
        held: list[QualityScore] = []
        for start in range(0, len(made), 150):
            records = made[start : start + 150]
            with_batch: list[QualityScore] = []
            for record in records:
                for score in by_record.get(record.id, []):
                    # With its call, in a later batch, or in an earlier one (before the call is stored).
                    place = rng.random()
                    if place < 0.4:
                        with_batch.append(score)
                    elif place < 0.7 or not batches:
                        held.append(score)
                    else:
                        batches[-1][1].append(score)
            batches.append((records, with_batch + held[: len(held) // 2]))
            held = held[len(held) // 2 :]
        batches.append(([], held))
        for records, batch_scores in batches:
            await store.insert_batch(records=records, scores=batch_scores)
        # Written again: a retry after a lost acknowledgement, a spool file replayed after it was written.
        await store.insert_batch(records=batches[2][0], scores=batches[2][1])
        await store.insert_batch(records=made[100:700], scores=scores[:200])
        # More feedback on stored calls, some of them already scored.
        feedback = [QualityScore(id=f"late-{index}", request_id=record.id, source="feedback", score=0.5,
                                 created_at=STAGE + timedelta(hours=3))
                    for index, record in enumerate(rng.sample(made, 80))]
        await store.insert_batch(records=[], scores=feedback)
        await store.insert_batch(records=[], scores=feedback[:40])

        assert_aggregates_match(database_url)
        found = await store.stage_evidence(deployment="bot", stable="v1", canary="v2", since=STAGE,
                                           until=STAGE + timedelta(hours=4), policy=POLICY)
        stable_stats = await store.window_stats(deployment="bot", version="v1", since=STAGE - timedelta(hours=1))
        series = await store.timeseries(deployment="bot", since=STAGE - timedelta(hours=1), step_s=600)
    finally:
        await store.close()

    records, stored_scores = raw_records(database_url), raw_scores(database_url)
    assert len(records) == 1600 and len(stored_scores) == len(scores) + len(feedback)
    # The thresholds come from the baseline's merged histogram: within ALPHA of the exact p95.
    exact = percentile_cont(sorted(r.latency_ms for r in baseline if r.status == "ok"), 0.95)
    assert found.latency is not None and exact is not None
    assert found.latency.reference_ms == pytest.approx(exact, rel=ALPHA)
    wanted = evidence_from_records(records, stored_scores, stable="v1", canary="v2", since=STAGE,
                                   until=STAGE + timedelta(hours=4), latency=found.latency)
    assert found.users_in_both == wanted.users_in_both > 0
    for arm, expected_arm in ((found.stable, wanted.stable), (found.canary, wanted.canary)):
        assert (arm.users, arm.calls) == (expected_arm.users, expected_arm.calls)
        for name in ("errors", "quality", "slow", "slow_reference", "slow_rollback", "cost"):
            assert tuple(getattr(arm, name)) == pytest.approx(tuple(getattr(expected_arm, name))), name
        assert arm.actual_cost == pytest.approx(expected_arm.actual_cost)
        assert set(arm.sources) == set(expected_arm.sources) == {"feedback", "judge", "evaluator:json"}
        for source, sums in arm.sources.items():
            assert tuple(sums) == pytest.approx(tuple(expected_arm.sources[source])), source
    assert found.canary.users > 10 and found.canary.slow.y > 0 and found.stable.slow_rollback.y > 0

    stable = [r for r in records if r.version == "v1" and r.status != "client_cancelled"]
    answered = sorted(r.latency_ms for r in stable if r.status == "ok")
    scored = [r.quality for r in stable if r.quality is not None]
    assert stable_stats.requests == len(stable)
    assert stable_stats.errors == sum(r.status == "error" for r in stable)
    assert stable_stats.scored == len(scored)
    assert stable_stats.avg_quality == pytest.approx(sum(scored) / len(scored))
    assert stable_stats.p95_latency_ms == pytest.approx(percentile_cont(answered, 0.95), rel=ALPHA)
    assert stable_stats.p50_latency_ms == pytest.approx(percentile_cont(answered, 0.5), rel=ALPHA)
    feedback_scores = [s.score for s in stored_scores if s.source == "feedback"
                       and any(r.id == s.request_id and r.quality is not None for r in stable)]
    average, count = stable_stats.quality_by_source["feedback"]
    assert count == len(feedback_scores) and average == pytest.approx(sum(feedback_scores) / count)
    points = {point["t"]: point for point in series["v2"]}
    first = (STAGE - timedelta(minutes=10)).isoformat()
    in_first = [r for r in records if r.version == "v2" and STAGE - timedelta(minutes=10) <= r.created_at < STAGE]
    assert points[first]["requests"] == sum(r.status != "client_cancelled" for r in in_first) > 0
    assert points[first]["errors"] == sum(r.status == "error" for r in in_first)


async def test_a_stage_without_a_baseline_is_judged_from_its_records_until_a_check_fixes_its_thresholds(
    database_url: str,
) -> None:
    rng = random.Random(3)
    store = Store(create_engine(database_url, DB))
    try:
        deployment = await declare(store, now=STAGE)
        await start_canary(store, deployment, at=STAGE)
        [stage] = query(database_url, "SELECT * FROM rollout_stages")
        assert stage["gate_ms"] is None  # no stable call before the stage: nothing to set them from
        early = [make_record(rng, index, STAGE + timedelta(seconds=index)) for index in range(30)]
        await store.insert_batch(records=early, scores=[])
        young = await store.stage_evidence(deployment="bot", stable="v1", canary="v2", since=STAGE,
                                           until=STAGE + timedelta(hours=1), policy=POLICY)
        later = [make_record(rng, index, STAGE + timedelta(seconds=index)) for index in range(30, 400)]
        await store.insert_batch(records=later, scores=[])
        async with store.decision_session("bot") as session:
            assert session is not None
            fixed = await session.evidence(stable="v1", canary="v2", since=STAGE, until=STAGE + timedelta(hours=1),
                                           policy=POLICY)
        more = [make_record(rng, index, STAGE + timedelta(seconds=index)) for index in range(400, 500)]
        await store.insert_batch(records=more, scores=[])
        after = await store.stage_evidence(deployment="bot", stable="v1", canary="v2", since=STAGE,
                                           until=STAGE + timedelta(hours=1), policy=POLICY)
    finally:
        await store.close()
    records = raw_records(database_url)
    # Before the check: stable's p95 in the stage so far, counted from the raw records.
    young_p95 = percentile_cont(sorted(r.latency_ms for r in early if r.version == "v1" and r.status == "ok"), 0.95)
    assert young.latency is not None and young.latency.reference_ms == pytest.approx(young_p95)
    # The check fixed them at the stage's p95 then, for the rest of the stage.
    fixed_p95 = percentile_cont(sorted(r.latency_ms for r in [*early, *later] if r.version == "v1"
                                       and r.status == "ok"), 0.95)
    assert fixed.latency is not None and fixed.latency.reference_ms == pytest.approx(fixed_p95)
    assert after.latency == fixed.latency
    assert_aggregates_match(database_url)
    wanted = evidence_from_records(records, [], stable="v1", canary="v2", since=STAGE,
                                   until=STAGE + timedelta(hours=1), latency=fixed.latency)
    for arm, expected_arm in ((after.stable, wanted.stable), (after.canary, wanted.canary)):
        assert (arm.users, arm.calls) == (expected_arm.users, expected_arm.calls) and arm.calls > 0
        for name in ("errors", "slow", "slow_reference", "slow_rollback", "cost"):
            assert tuple(getattr(arm, name)) == pytest.approx(tuple(getattr(expected_arm, name))), name


async def test_a_new_stage_counts_only_its_own_calls_and_a_replayed_spool_file_counts_once(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(5)
    spool = tmp_path / "spool"
    store = Store(create_engine(database_url, DB))
    metrics = Metrics(CollectorRegistry())
    recorder = Recorder(store, RecorderSettings(flush_interval=0.05, spool_dir=str(spool), batch_size=50), metrics)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        deployment = await declare(store, now=now - timedelta(hours=2))
        deployment = await start_canary(store, deployment, at=now - timedelta(hours=1))
        first = [make_record(rng, index, now - timedelta(minutes=50) + timedelta(seconds=index))
                 for index in range(300)]
        for record in first:
            recorder.submit(record)
        await recorder.flush()
        # The next stage: the calls already stored since it started move into it, older ones stay out.
        advanced = rollout.set_percent(deployment, percent=25, stages=POLICY.stages, now=now - timedelta(minutes=47))
        await store.apply_rollout(expected_revision=deployment.rollout.revision, state=advanced,
                                  event=RolloutEvent(deployment="bot", action="advanced", actor="test", before=None,
                                                     after=None, at=now - timedelta(minutes=47)))
        second = [make_record(rng, index, now - timedelta(minutes=45) + timedelta(seconds=index))
                  for index in range(300, 500)]
        for record in second:
            recorder.submit(record)
        await recorder.flush()
        # After a restart, a spool file holding calls already written (and one new one) is drained: each counts once.
        replayed: list[RequestRecord | QualityScore] = [*first[:120], *second[50:90],
                                                       make_record(rng, 999, now - timedelta(minutes=10))]
        replayed.append(make_score(rng, second[60], "feedback", 1))
        assert Spool(spool, max_bytes=1 << 20).append_items(replayed) == len(replayed)
        recorder = Recorder(store, RecorderSettings(flush_interval=0.05, spool_dir=str(spool)), metrics)  # restarted
        recorder.start()
        recorder.submit(make_record(rng, 1000, now))
        await recorder.stop()
    finally:
        await store.close()
    assert not list(spool.glob("records-*"))
    assert len(query(database_url, "SELECT id FROM request_records")) == 502
    wanted = assert_aggregates_match(database_url)
    started = moment(query(database_url, "SELECT started_at FROM rollout_stages")[0]["started_at"])
    assert started == now - timedelta(minutes=47)
    calls = sum(values[0] for values in wanted["stage_user_sums"].values())
    older = sum(values[0] for values in wanted["minute_stats"].values())
    assert 0 < calls < older  # the calls of the first stage are in the minute sums, not in this stage's


async def test_an_aggregate_that_drifts_from_its_records_is_named_by_the_recount(database_url: str) -> None:
    rng = random.Random(9)
    store = Store(create_engine(database_url, DB))
    try:
        deployment = await declare(store, now=STAGE - timedelta(hours=2))
        await start_canary(store, deployment, at=STAGE)
        made = [make_record(rng, index, STAGE + timedelta(seconds=7 * index), version=("v1", "v2")[index % 2])
                for index in range(200)]
        await store.insert_batch(records=made, scores=[make_score(rng, made[3], "feedback", 3)])
        audit = await audit_aggregates(store.engine)
        assert audit.differences == [] and audit.compared > 200 / 60 * 2
        query(database_url, "UPDATE minute_stats SET requests = requests + 1 WHERE version = 'v2' "
                            "AND minute = (SELECT min(minute) FROM minute_stats WHERE version = 'v2')")
        user = next(r.user_hash for r in made if r.user_hash is not None and r.status != "client_cancelled")
        query(database_url, "DELETE FROM stage_presence WHERE user_hash = :user", user=user)
        audit = await audit_aggregates(store.engine)
    finally:
        await store.close()
    drifted = {(difference.table, difference.key[0]): difference for difference in audit.differences}
    assert set(drifted) == {("minute_stats", "bot"), ("stage_presence", "bot")}
    minute = drifted["minute_stats", "bot"]
    assert minute.key == ("bot", "v2", STAGE)
    assert minute.stored is not None and minute.recounted is not None
    assert minute.stored[0] == minute.recounted[0] + 1 and minute.stored[1:] == minute.recounted[1:]
    assert drifted["stage_presence", "bot"].stored is None and drifted["stage_presence", "bot"].recounted == ()


async def test_a_score_written_while_another_writer_stores_its_call_counts_once(database_url: str) -> None:
    """Two writers (two replicas) at once, each batch carrying scores of calls that the other writer's
    batches in flight are storing: each score counts once, whichever transaction commits first."""
    rng = random.Random(11)
    first, second = Store(create_engine(database_url, DB)), Store(create_engine(database_url, DB))
    try:
        await start_canary(first, await declare(first, now=STAGE - timedelta(hours=2)), at=STAGE)
        made = [make_record(rng, index, STAGE + timedelta(seconds=2 * index)) for index in range(960)]
        scores = [make_score(rng, made[(index * 37) % len(made)], "feedback", index) for index in range(240)]
        await asyncio.gather(*(
            (first, second)[batch % 2].insert_batch(records=made[batch * 40:(batch + 1) * 40],
                                                    scores=scores[batch * 10:(batch + 1) * 10])
            for batch in range(24)))
        audit = await audit_aggregates(first.engine)
    finally:
        await first.close()
        await second.close()
    assert len(query(database_url, "SELECT id FROM quality_scores")) == 240
    assert audit.differences == [] and audit.compared > 100
