"""The store's evidence, salt and decision session, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.alerts import Alerts
from gateway.analysis import LatencyThresholds, evidence_from_records, latency_reference
from gateway.analysis.shadow import ShadowPair, shadow_evidence_from_pairs
from gateway.config import DatabaseSettings, settings_from_dict
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.models import QualityScore, RequestRecord
from gateway.scheduler import RolloutChecker
from gateway.snapshot import Snapshot
from gateway.store import Store, create_engine
from tests.conftest import Gateway, query
from tests.fakes import FakeUpstream
from tests.recompute import POLICY, assert_aggregates_match, declare, start_canary

DB = DatabaseSettings(pool_timeout=2.0, statement_timeout=10.0)
STAGE = datetime(2026, 3, 1, 12, tzinfo=UTC)


def records(rng: random.Random) -> tuple[list[RequestRecord], list[QualityScore]]:
    made: list[RequestRecord] = []
    scores: list[QualityScore] = []
    for index in range(1500):
        version = rng.choice(("v1", "v1", "v1", "v2", "v3"))
        before_stage = rng.random() < 0.3
        at = STAGE + timedelta(seconds=rng.uniform(-3000, -1) if before_stage else rng.uniform(0, 7000))
        status = rng.choices(("ok", "error", "client_cancelled"), (0.9, 0.07, 0.03))[0]
        user = None if rng.random() < 0.05 else f"u{rng.randint(0, 120)}"
        priced = rng.random() < 0.9
        cost = rng.uniform(0.001, 0.01) if priced and status == "ok" else None
        made.append(RequestRecord(
            id=f"r{index}", created_at=at, deployment="bot", version=version, user_hash=user, provider="p",
            upstream_model="m", stream=False, status=status, http_status=200, error_kind=None,  # type: ignore[arg-type]
            latency_ms=rng.lognormvariate(6.5, 0.6), ttft_ms=None, prompt_tokens=10, completion_tokens=5,
            cost_usd=cost, uncached_cost_usd=None if cost is None or rng.random() < 0.2 else cost * 1.5))
        for source in ("feedback", "judge", "evaluator:json"):
            if status == "ok" and rng.random() < 0.25:
                scores.append(QualityScore(id=f"s{index}{source}", request_id=f"r{index}", source=source,
                                           score=round(rng.random(), 2), created_at=at))
    return made, scores


async def test_a_stage_without_thresholds_yet_is_summed_from_its_records_as_the_pure_function_does(
    database_url: str,
) -> None:
    """The stage opened before its baseline was stored: until a check fixes its thresholds, the evidence is
    summed per user in SQL from the raw records (the per-user sums' path is in test_aggregates.py)."""
    made, scores = records(random.Random(11))
    store = Store(create_engine(database_url, DB))
    try:
        await start_canary(store, await declare(store, now=STAGE - timedelta(hours=2)), at=STAGE)
        await store.insert_batch(records=made, scores=scores)
        policy = POLICY
        until = STAGE + timedelta(hours=2)
        found = await store.stage_evidence(deployment="bot", stable="v1", canary="v2", since=STAGE, until=until,
                                           policy=policy)
        stored = {row["id"]: row["quality"] for row in query(database_url, "SELECT id, quality FROM request_records")}
    finally:
        await store.close()
    with_quality = [RequestRecord(**{**vars_of(r), "quality": stored[r.id]}) for r in made]
    answered_v1 = sorted(r.latency_ms for r in made if r.version == "v1" and r.status == "ok")
    baseline = sorted(r.latency_ms for r in made
                      if r.version == "v1" and r.status == "ok" and STAGE - timedelta(hours=1) <= r.created_at < STAGE)
    stage = sorted(r.latency_ms for r in made if r.version == "v1" and r.status == "ok" and r.created_at >= STAGE)
    reference = latency_reference(baseline, stage, min_requests=50)
    assert reference is not None and answered_v1
    expected = evidence_from_records(with_quality, scores, stable="v1", canary="v2", since=STAGE, until=until,
                                     latency=LatencyThresholds.of(reference, policy))
    assert found.latency == pytest.approx(expected.latency)
    assert found.users_in_both == expected.users_in_both > 0
    for arm, wanted in ((found.stable, expected.stable), (found.canary, expected.canary)):
        assert (arm.users, arm.calls) == (wanted.users, wanted.calls)
        for name in ("errors", "quality", "slow", "slow_reference", "slow_rollback", "cost"):
            assert tuple(getattr(arm, name)) == pytest.approx(tuple(getattr(wanted, name))), name
        assert arm.actual_cost == pytest.approx(wanted.actual_cost)
        assert set(arm.sources) == set(wanted.sources) == {"feedback", "judge", "evaluator:json"}
        for source, sums in arm.sources.items():
            assert tuple(sums) == pytest.approx(tuple(wanted.sources[source])), source
    assert found.canary.users > 10 and found.canary.errors.y > 0 and found.canary.slow.y > 0


def vars_of(record: RequestRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


async def test_replicas_starting_together_agree_on_one_salt(database_url: str) -> None:
    stores = [Store(create_engine(database_url, DB)) for _ in range(3)]
    try:
        salts = await asyncio.gather(*(store.user_id_salt(f"candidate-{i}") for i, store in enumerate(stores)))
        again = await stores[0].user_id_salt("another")
    finally:
        for store in stores:
            await store.close()
    assert len(set(salts)) == 1 and salts[0].startswith("candidate-") and again == salts[0]


def test_a_gateway_without_a_configured_salt_uses_the_stored_one(make_gateway: Any, database_url: str) -> None:
    first = make_gateway({"user_id_salt": ""})
    second = make_gateway({"user_id_salt": ""})
    for gateway in (first, second):
        with gateway.client() as http:
            assert http.post("/v1/chat/completions", json={"model": "support-bot", "user": "same-user",
                                                           "messages": [{"role": "user", "content": "hi"}]}
                             ).status_code == 200
    rows = first.records(2)
    assert len(rows) == 2 and rows[0]["user_hash"] == rows[1]["user_hash"]
    [salt] = query(database_url, "SELECT value FROM gateway_settings WHERE key = 'user_id_salt'")
    assert len(salt["value"]) == 64


async def test_a_check_whose_lock_session_is_killed_applies_nothing(
    make_gateway: Any, postgres_url: str, fake: FakeUpstream
) -> None:
    """Kill the backend that holds the decision lock in the middle of a check: no decision lands."""
    gateway: Gateway = make_gateway({
        "database_url": postgres_url, "providers": {"fake": {"retries": 0}},
        "deployments": {"support-bot": {"policy": {"check_interval": "1h", "min_requests": 5}}}})
    fake.behaviour.fail_models = frozenset({"model-b"})  # the canary fails every call: a critical breach
    with gateway.client() as http:
        for index in range(400):
            http.post("/v1/chat/completions", json={"model": "support-bot", "user": f"user-{index}",
                                                    "messages": [{"role": "user", "content": "hi"}]})
    gateway.records(400)
    settings = settings_from_dict({"database_url": postgres_url})
    store = Store(create_engine(postgres_url, settings.database))
    metrics = Metrics(CollectorRegistry())
    snapshot = Snapshot(store, declared={}, sync=_nothing, refresh_interval=60)
    checker = RolloutChecker(store, snapshot, alerts=Alerts([], metrics), metrics=metrics)
    blocker = Store(create_engine(postgres_url, settings.database))
    namespace, key = store.lock_key("support-bot")
    try:
        async with blocker.engine.connect() as holding, holding.begin():
            # The check takes its lock, reads the deployment, then waits on the evidence query.
            await holding.exec_driver_sql("LOCK TABLE request_records IN ACCESS EXCLUSIVE MODE")
            check = asyncio.create_task(checker.check("support-bot"))
            pid = None
            for _ in range(200):
                rows = (await holding.exec_driver_sql(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    f"AND classid = {namespace & 0xFFFFFFFF} AND objid = {key & 0xFFFFFFFF}")).all()
                if rows:
                    pid = rows[0][0]
                    break
                await asyncio.sleep(0.05)
            assert pid is not None, "the check never took its lock"
            await holding.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(StoreUnavailable):
            await check
        state = query(postgres_url, "SELECT status, canary_percent FROM deployments")
        actions = [row["action"] for row in query(postgres_url, "SELECT action FROM rollout_events")]
        assert state == [{"status": "canary", "canary_percent": 5.0}]
        assert "rolled_back" not in actions and "hold" not in actions
        # The lock died with its session: the next check decides, once.
        result = await checker.check("support-bot")
        assert result is not None and (result.decision, result.applied) == ("rollback", True)
        assert query(postgres_url, "SELECT status FROM deployments") == [{"status": "rolled_back"}]
    finally:
        await blocker.close()
        await store.close()


async def _nothing() -> None:
    return None


async def test_shadow_copies_are_read_as_pairs_and_never_as_the_canarys_traffic(database_url: str) -> None:
    rng = random.Random(5)
    made, scores = records(rng)
    pairs: list[ShadowPair] = []
    copies: list[RequestRecord] = []
    for user_call in [r for r in made if r.version == "v1" and r.status != "client_cancelled"][:400]:
        status = "error" if rng.random() < 0.05 else "ok"
        copy = RequestRecord(
            id=f"shadow-{user_call.id}", created_at=user_call.created_at + timedelta(seconds=2), deployment="bot",
            version="v2", user_hash=user_call.user_hash, provider="p", upstream_model="m", stream=False,
            status=status, http_status=200 if status == "ok" else 502,  # type: ignore[arg-type]
            error_kind=None if status == "ok" else "status", latency_ms=rng.lognormvariate(6.6, 0.6), ttft_ms=None,
            prompt_tokens=10, completion_tokens=5, cost_usd=rng.uniform(0.001, 0.01) if status == "ok" else None,
            mode="shadow", shadow_of=user_call.id)
        copies.append(copy)
        stable_scores: dict[str, float] = {}
        canary_scores: dict[str, float] = {}
        win = None
        if user_call.status == "ok" and status == "ok":
            stable_scores["evaluator:refusal"] = float(rng.random() < 0.8)
            canary_scores["evaluator:refusal"] = float(rng.random() < 0.7)
            # The quality sampler scored this call too: the same id, stored once.
            for _ in range(2):
                scores.append(QualityScore(id=f"e-{user_call.id}", request_id=user_call.id, source="evaluator:refusal",
                                           score=stable_scores["evaluator:refusal"], created_at=copy.created_at))
            scores.append(QualityScore(id=f"e-{copy.id}", request_id=copy.id, source="evaluator:refusal",
                                       score=canary_scores["evaluator:refusal"], created_at=copy.created_at))
            win = rng.choice((0.0, 0.25, 0.5, 0.75, 1.0))
            scores.append(QualityScore(id=f"w-{copy.id}", request_id=copy.id, source="pairwise", score=win,
                                       created_at=copy.created_at, cost_usd=0.0004))
        pairs.append(ShadowPair(user_call, copy, stable_scores, canary_scores, win))
    policy = POLICY
    until = STAGE + timedelta(hours=2)
    store = Store(create_engine(database_url, DB))
    try:
        await start_canary(store, await declare(store, now=STAGE - timedelta(hours=2)), at=STAGE)
        await store.insert_batch(records=made + copies, scores=scores)
        live = await store.stage_evidence(deployment="bot", stable="v1", canary="v2", since=STAGE, until=until,
                                          policy=policy)
        shadow = await store.shadow_evidence(deployment="bot", stable="v1", canary="v2", since=STAGE, until=until,
                                             policy=policy)
        window = await store.window_stats(deployment="bot", version="v2", since=STAGE - timedelta(hours=1))
        copied = await store.shadow_window_stats(deployment="bot", version="v2", since=STAGE - timedelta(hours=1))
    finally:
        await store.close()
    # The canary's production evidence and numbers are its live calls only.
    canary_live = [r for r in made if r.version == "v2" and r.user_hash is not None and r.status != "client_cancelled"
                   and STAGE <= r.created_at < until]
    assert live.canary.calls == len(canary_live)
    assert window.requests == sum(1 for r in made if r.version == "v2" and r.status != "client_cancelled")
    assert copied.requests == len(copies) and copied.errors == sum(r.status == "error" for r in copies)
    assert copied.total_cost_usd == pytest.approx(sum(r.cost_usd or 0.0 for r in copies))
    # No aggregate (minute sums, the stage's per-user sums) holds a shadow copy.
    assert_aggregates_match(database_url)
    expected = shadow_evidence_from_pairs(pairs, since=STAGE, until=until, policy=policy)
    assert (shadow.pairs, shadow.users) == (expected.pairs, expected.users) and shadow.pairs > 100
    assert tuple(shadow.win) == pytest.approx(tuple(expected.win)) and shadow.win.x > 50
    assert set(shadow.sources) == {"evaluator:refusal"}
    assert shadow.sources["evaluator:refusal"].pairs == expected.sources["evaluator:refusal"].pairs
    assert tuple(shadow.sources["evaluator:refusal"].sums) == pytest.approx(
        tuple(expected.sources["evaluator:refusal"].sums))
    assert tuple(shadow.cost.sums) == pytest.approx(tuple(expected.cost.sums))
    assert shadow.latency == pytest.approx(expected.latency)
    for side, wanted in ((shadow.stable, expected.stable), (shadow.canary, expected.canary)):
        for name in ("errors", "slow", "cost"):
            assert tuple(getattr(side, name)) == pytest.approx(tuple(getattr(wanted, name))), name
