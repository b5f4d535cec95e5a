"""gateway.analysis.decide rule by rule, on per-user evidence of known truth."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from gateway.analysis import ArmEvidence, Evidence, LatencyThresholds, Sums, decide, evidence_from_records
from gateway.models import QualityScore, RequestRecord, RolloutState
from gateway.policy import RolloutPolicy, next_stage

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
POLICY = RolloutPolicy(min_stage_duration=3600)


def arm(version: str, *, users: int, calls_per_user: float = 20.0, error_rate: float = 0.01,
        quality: float = 0.8, slow: float = 0.02, cost: float = 0.002, seed: int = 1) -> ArmEvidence:
    rng = np.random.default_rng(seed)
    calls = 1 + rng.poisson(calls_per_user - 1, users)
    errors = rng.binomial(calls, error_rate)
    answered = calls - errors
    scored = rng.binomial(answered, 0.3)
    quality_sum = rng.binomial(scored, quality).astype(float)

    def pairs(x: Any, y: Any) -> Sums:
        return Sums.of(zip(x.astype(float).tolist(), y.astype(float).tolist(), strict=True))

    return ArmEvidence(
        version=version, users=users, calls=int(calls.sum()), errors=pairs(calls, errors),
        quality=pairs(scored, quality_sum), slow=pairs(answered, rng.binomial(answered, slow)),
        slow_reference=pairs(answered, rng.binomial(answered, 0.05)),
        cost=pairs(answered, answered * cost * rng.lognormal(0, 0.3, users)), actual_cost=0.0,
    )


def evidence(canary: ArmEvidence, stable: ArmEvidence) -> Evidence:
    return Evidence(stable=stable, canary=canary, since=NOW - timedelta(days=1), until=NOW,
                    latency=LatencyThresholds.of(1800.0, POLICY))


def state(percent: float = 5.0, elapsed: timedelta = timedelta(days=1)) -> RolloutState:
    return RolloutState(stable="v1", canary="v2", canary_percent=percent, status="canary",
                        stage_started_at=NOW - elapsed)


def run(canary: dict[str, Any] | None = None, *, percent: float = 5.0, elapsed: timedelta = timedelta(days=1),
        policy: RolloutPolicy = POLICY, canary_users: int = 2000, stable_users: int = 38000) -> Any:
    stable_arm = arm("v1", users=stable_users, seed=2)
    canary_arm = arm("v2", users=canary_users, seed=3, **(canary or {}))
    return decide(evidence(canary_arm, stable_arm), policy, state(percent, elapsed), NOW)


def test_a_canary_like_stable_with_enough_data_advances_to_the_next_stage() -> None:
    decision = run()
    assert (decision.outcome, decision.next_percent) == ("advance", 25.0)
    assert decision.summary == "every gate passed: 5 % → 25 %"
    gates = {test.metric: test for test in decision.tests if test.role == "gate"}
    assert set(gates) == {"error_rate", "quality", "p95_latency", "cost"}
    assert all(test.verdict == "pass" for test in gates.values())
    assert gates["error_rate"].upper is not None and gates["error_rate"].upper <= 1.3
    assert gates["quality"].lower is not None and gates["quality"].lower >= 0.95


def test_passing_the_last_stage_below_100_promotes_and_100_is_promotion_itself() -> None:
    half = run(percent=50.0, canary_users=5000, stable_users=5000)
    assert (half.outcome, half.summary) == ("promote", "every gate passed at 50 %, the last stage → promote")
    at_full = run(percent=100.0)
    assert at_full.outcome == "promote" and "stable gets no traffic" in at_full.summary
    assert next_stage(50.0, (5.0, 25.0, 50.0, 100.0)) is None
    assert next_stage(5.0, (5.0, 25.0, 50.0)) == 25.0


def test_a_doubled_error_rate_is_rolled_back_with_its_interval_beyond_the_bound() -> None:
    decision = run({"error_rate": 0.02, "calls_per_user": 20.0})
    assert decision.outcome == "rollback" and decision.next_percent == 0.0
    [test] = [t for t in decision.tests if t.verdict == "rollback"]
    assert test.metric == "error_rate" and test.lower is not None and test.lower > 1.5
    assert test.line.startswith("error rate ×") and test.line.endswith("> 1.5 → rollback")
    assert decision.summary == test.line


def test_a_critical_error_rate_rolls_back_at_the_first_check() -> None:
    decision = run({"error_rate": 0.4}, canary_users=30, elapsed=timedelta(minutes=15))
    assert decision.outcome == "rollback"
    assert (
        decision.summary.startswith("critical: canary error rate 4") and "> critical_error_rate 20%" in decision.summary
    )


def test_worse_quality_is_rolled_back_and_slightly_worse_quality_only_holds() -> None:
    assert run({"quality": 0.6, "calls_per_user": 10.0}).outcome == "rollback"
    held = run({"quality": 0.74})  # ratio 0.925: below the 0.95 gate, not shown below 0.90
    assert held.outcome == "hold"
    [gate] = [t for t in held.tests if t.metric == "quality" and t.role == "gate"]
    assert gate.verdict == "undecided" and "quality ×0.9" in gate.line


def test_too_few_calls_hold_and_say_how_many_are_missing() -> None:
    decision = run({"calls_per_user": 2.0}, canary_users=20, stable_users=380)
    assert decision.outcome == "hold"
    assert decision.summary.startswith("not enough data yet (canary has ")
    assert "min_requests 100 each" in decision.summary


def test_an_undecided_gate_says_how_much_more_data_it_needs() -> None:
    decision = run(canary_users=150, stable_users=2850, elapsed=timedelta(hours=3))
    assert decision.outcome == "hold"
    undecided = [t for t in decision.tests if t.role == "gate" and t.verdict == "undecided"]
    assert undecided
    error_gate = next(t for t in undecided if t.metric == "error_rate")
    assert error_gate.needs_calls is not None and error_gate.needs_calls > 0
    assert error_gate.needs_seconds is not None and error_gate.needs_seconds > 0
    assert "more canary calls (~" in error_gate.line and decision.summary.startswith("hold: ")


def test_every_gate_passed_still_waits_for_min_stage_duration() -> None:
    decision = run(elapsed=timedelta(minutes=30))
    assert decision.outcome == "hold"
    assert decision.summary.startswith("every gate passed; the stage has run 30.0m of min_stage_duration 1.0h")


def test_a_sample_ratio_mismatch_holds_with_an_alert_even_when_every_gate_passes() -> None:
    decision = run(canary_users=760)  # 2 % of users at a configured 5 %
    assert decision.outcome == "hold" and "sample_ratio_mismatch" in decision.alerts
    assert decision.srm is not None and decision.srm.p_value < 0.001
    assert decision.summary.startswith("sample ratio mismatch: canary has 1.96% of users, expected 5.00%")


@pytest.mark.parametrize(("on_timeout", "outcome"), [("hold", "hold"), ("rollback", "rollback")])
def test_a_stage_past_max_stage_duration_does_what_on_timeout_says(on_timeout: str, outcome: str) -> None:
    policy = RolloutPolicy(min_stage_duration=3600, max_stage_duration=2 * 86400, on_timeout=on_timeout)
    decision = run({"quality": 0.74}, policy=policy, elapsed=timedelta(days=3))
    assert decision.outcome == outcome
    if outcome == "hold":
        assert "stage_timeout" in decision.alerts
        assert any("past max_stage_duration 2.0d" in line for line in decision.reasons)
    else:
        assert "on_timeout: rollback" in decision.summary


def test_metrics_without_data_pass_their_gate_and_say_why() -> None:
    empty = Sums()
    stable, canary = arm("v1", users=3000, seed=4), arm("v2", users=200, seed=5)
    no_signal = Evidence(
        stable=ArmEvidence(
            "v1",
            stable.users,
            stable.calls,
            errors=Sums(3000, stable.errors.x, 0, stable.errors.xx, 0, 0),
            slow=stable.slow,
            slow_reference=stable.slow_reference,
        ),
        canary=ArmEvidence(
            "v2",
            canary.users,
            canary.calls,
            errors=Sums(200, canary.errors.x, 0, canary.errors.xx, 0, 0),
            slow=canary.slow,
            slow_reference=canary.slow_reference,
        ),
        since=NOW - timedelta(days=1),
        until=NOW,
        latency=LatencyThresholds.of(1800.0, POLICY),
    )
    decision = decide(no_signal, POLICY, state(), NOW)
    lines = {test.metric: test.line for test in decision.tests}
    assert lines["error_rate"].startswith("error rate: no errors on either version (")
    assert lines["quality"] == "quality: no scores on either version: gate passes"
    assert lines["cost"] == "cost: no priced calls on canary and stable: gate skipped"
    assert decision.outcome == "advance" and empty.ratio is None


def test_the_decision_is_explained_per_metric_in_json() -> None:
    decision = run({"error_rate": 0.02, "calls_per_user": 20.0})
    public = json.loads(json.dumps(decision.public()))
    assert public["decision"] == "rollback" and public["summary"] == decision.summary
    error_tests = [m for m in public["metrics"] if m["metric"] == "error_rate"]
    assert {m["role"] for m in error_tests} == {"gate", "rollback"}
    for metric in public["metrics"]:
        assert set(metric) == {"metric", "role", "estimate", "lower", "upper", "threshold", "alpha", "verdict", "line",
                               "needs_calls", "needs_seconds"}
    rollback = next(m for m in error_tests if m["role"] == "rollback")
    assert rollback["lower"] > 1.5 and rollback["threshold"] == 1.5 and rollback["verdict"] == "rollback"
    assert 0 < rollback["alpha"] < public["metrics"][0]["alpha"]  # split across tests and stages


def test_deprecated_policy_keys_are_accepted_and_named() -> None:
    policy = RolloutPolicy.model_validate({"window": "1h", "rollback_when": {"error_rate_floor": 0.01}})
    assert policy.deprecated_keys() == ["window", "rollback_when.error_rate_floor"]
    assert RolloutPolicy().deprecated_keys() == []
    assert RolloutPolicy.model_validate({"min_stage_duration": "0s"}).min_stage_duration == 0


def record(index: int, version: str, user: str | None, *, status: str = "ok", latency: float = 100.0,
           cost: float | None = 0.002, uncached: float | None = 0.003, quality: float | None = None) -> RequestRecord:
    return RequestRecord(id=f"r{index}", created_at=NOW - timedelta(minutes=index), deployment="d", version=version,
                         user_hash=user, provider="p", upstream_model="m", stream=False, status=status,  # type: ignore[arg-type]
                         http_status=200, error_kind=None, latency_ms=latency, ttft_ms=None, prompt_tokens=1,
                         completion_tokens=1, cost_usd=cost, quality=quality, uncached_cost_usd=uncached)


def test_evidence_from_records_sums_per_user_and_leaves_out_anonymous_and_cancelled_calls() -> None:
    records = [
        record(1, "v2", "a", latency=3000.0, quality=1.0),
        record(2, "v2", "a", status="error", cost=None, uncached=None),
        record(3, "v2", "b", quality=0.5),
        record(4, "v2", None),
        record(5, "v2", "b", status="client_cancelled"),
        record(6, "v1", "c"),
        record(7, "v1", "c", latency=2500.0),
        record(8, "v3", "a"),
        record(9000, "v2", "a"),  # before the stage
    ]
    scores = [QualityScore(id="s1", request_id="r1", source="feedback", score=1.0, created_at=NOW),
              QualityScore(id="s2", request_id="r3", source="judge", score=0.5, created_at=NOW),
              QualityScore(id="s3", request_id="r4", source="judge", score=0.0, created_at=NOW)]
    found = evidence_from_records(records, scores, stable="v1", canary="v2", since=NOW - timedelta(days=1), until=NOW,
                                  latency=LatencyThresholds(2000.0, 2400.0, None))
    canary = found.canary
    assert (canary.users, canary.calls) == (2, 3)
    assert canary.errors == Sums(2, 3.0, 1.0, 4.0 + 1.0, 1.0, 2.0)
    assert canary.slow == Sums(2, 2.0, 1.0, 2.0, 1.0, 1.0)
    assert canary.quality == Sums(2, 2.0, 1.5, 2.0, 1.25, 1.5)
    assert canary.cost.y == pytest.approx(0.006) and canary.actual_cost == pytest.approx(0.004)
    assert set(canary.sources) == {"feedback", "judge"} and canary.sources["judge"] == Sums(1, 1.0, 0.5, 1.0, 0.25, 0.5)
    assert (found.stable.users, found.stable.calls, found.stable.slow_reference.y) == (1, 2, 1.0)
    assert found.users_in_both == 0


def test_users_moved_to_the_canary_count_once_in_the_mismatch_test() -> None:
    """Right after a stage grows, moved users still have a stable call or two: not a mismatch."""
    stable, canary = arm("v1", users=3000, seed=6), arm("v2", users=1000, seed=7)  # 25 % of 4,000
    moved = Evidence(stable=ArmEvidence("v1", stable.users + 400, stable.calls, errors=stable.errors,
                                        quality=stable.quality, slow=stable.slow, slow_reference=stable.slow_reference,
                                        cost=stable.cost),
                     canary=canary, since=NOW - timedelta(days=1), until=NOW,
                     latency=LatencyThresholds.of(1800.0, POLICY),
                     users_in_both=400)
    decision = decide(moved, POLICY, state(25.0), NOW)
    assert decision.srm is not None and not decision.srm.mismatch
    uncorrected = decide(replace(moved, users_in_both=0), POLICY, state(25.0), NOW)
    assert uncorrected.srm is not None and uncorrected.srm.mismatch
